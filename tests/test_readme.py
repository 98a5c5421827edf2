"""Every Python block in README.md runs (as one script, see ``run_markdown`` in conftest), so the tour cannot rot."""

from __future__ import annotations

import types
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_runs(run_markdown, registry):
    namespace = run_markdown(README)
    # the plugin example must work once registered
    from chameleon_sdk import Document, Pipeline, Segment

    plugin = types.SimpleNamespace(register_modalities=namespace["register_modalities"])
    registry.register(plugin, name="readme-digits")
    pipe = Pipeline.from_config({"modalities": [{"name": "digits", "options": {"base": 3}}]})
    pipe.train_text_tokenizer(["one two three"] * 10)
    doc = Document.of("n=", Segment("digits", [2, 0, 1]))
    assert pipe.detokenize(pipe.tokenize(doc)) == doc
