"""docs/plugins/writing-a-modality.md runs whole, the blocks marked not-run for the core suite included.

The core suite (tests/test_docs_blocks.py) runs the page too, but skips the blocks that need this
plugin installed; here every ```python block runs, in order, as one script in a temporary folder.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import torch

import chameleon_sdk

PAGE = Path(__file__).resolve().parents[3] / "docs" / "plugins" / "writing-a-modality.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", flags=re.S | re.M)


def test_the_page_runs_with_the_plugin_installed(tmp_path, monkeypatch):
    text = PAGE.read_text(encoding="utf-8")
    blocks = [(text.count("\n", 0, m.start(1)), m.group(1)) for m in BLOCK.finditer(text)]
    assert len(blocks) >= 8
    skipped_by_core = text.count("<!-- not-run: needs the chameleon-audio plugin")
    assert skipped_by_core >= 2  # the blocks only this test runs
    module = types.ModuleType("docs_writing_a_modality")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    with chameleon_sdk.use_registry():
        for line, code in blocks:  # padded so that tracebacks show the page's own line numbers
            exec(compile("\n" * line + code, str(PAGE), "exec"), module.__dict__)
    assert (tmp_path / "generated.wav").is_file()
