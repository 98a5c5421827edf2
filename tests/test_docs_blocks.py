"""Every ```python block in docs/**/*.md runs, so the documentation cannot rot.

The blocks of one page run in order as one script (``run_markdown`` in conftest.py): one module
namespace, a temporary working directory, a fresh plugin registry. A block preceded by
``<!-- not-run: reason -->`` on the line directly above its fence is skipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))


def _name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def test_there_are_pages_with_python():
    assert len(PAGES) >= 10
    assert sum("```python" in page.read_text(encoding="utf-8") for page in PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_page_runs(page, run_markdown):
    run_markdown(page)


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return [f for item in node for f in _nav_files(item)]


def test_every_page_is_in_the_site_navigation():
    nav = _nav_files(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    missing = sorted({_name(page) for page in PAGES} - set(nav))
    assert not missing, f"add these pages to the nav in mkdocs.yml: {missing}"


# -- the harness itself ---------------------------------------------------------------------------


def _page(tmp_path_factory, text: str) -> Path:
    page = tmp_path_factory.mktemp("page") / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_blocks_share_one_namespace_in_order_and_not_run_blocks_are_skipped(run_markdown, tmp_path_factory):
    page = _page(
        tmp_path_factory,
        "# Page\n\n```python\nx = 1\n```\n\n<!-- not-run: needs a GPU -->\n```python\nx = 100\n```\n\n"
        "```bash\nx = 1000\n```\n\n````markdown\n<!-- not-run: shown -->\n```python\nx = 10000\n```\n````\n\n"
        "- in a list:\n\n  ```python\n  x += 1\n  from pathlib import Path\n  Path('made.txt').write_text('')\n  ```\n",
    )
    namespace = run_markdown(page)
    assert namespace["x"] == 2
    assert (Path.cwd() / "made.txt").is_file() and Path.cwd() != page.parent  # a temporary working directory


def test_a_failing_block_is_reported_at_its_markdown_line(run_markdown, tmp_path_factory):
    page = _page(tmp_path_factory, "text\n\n```python\nok = True\n\nassert not ok, 'boom'\n```\n")
    with pytest.raises(AssertionError, match="boom") as info:
        run_markdown(page)
    assert any(entry.lineno + 1 == 6 and str(entry.path) == str(page) for entry in info.traceback)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- not-run: GPU -->\n\n```python\nx = 1\n```\n", "directly above"),
        ("<!-- not-run: -->\n```python\nx = 1\n```\n", "needs a reason"),
        ("<!-- not-run: GPU -->\n```bash\nls\n```\n", "directly above"),
        ("```py\nx = 1\n```\n", "fence Python as"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_malformed_pages_are_refused(run_markdown, tmp_path_factory, text, message):
    with pytest.raises(AssertionError, match=message):
        run_markdown(_page(tmp_path_factory, text))
