"""Every Python block in README.md runs, so the tour cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, registry):
    namespace = {"__name__": "readme"}
    exec(compile(BLOCKS[index], f"README.md block {index}", "exec"), namespace)
    if "register_modalities" in namespace:  # the plugin example must work when registered
        import types

        from chameleon_sdk import Document, Pipeline, Segment

        plugin = types.SimpleNamespace(register_modalities=namespace["register_modalities"])
        registry.register(plugin, name="readme-digits")
        pipe = Pipeline.from_config({"modalities": [{"name": "digits", "options": {"base": 3}}]})
        pipe.train_text_tokenizer(["one two three"] * 10)
        doc = Document.of("n=", Segment("digits", [2, 0, 1]))
        assert pipe.detokenize(pipe.tokenize(doc)) == doc
