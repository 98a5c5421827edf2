"""Plugin payloads are first-class: routing in Document.of, JSON hooks, rendering, registry names, provenance."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.render import document_to_text, write_document

points = st.tuples(st.integers(0, 15), st.integers(0, 15))
strokes = st.lists(st.lists(points, min_size=1, max_size=5), min_size=1, max_size=4)


def test_of_routes_a_registered_payload_type_to_its_modality(sketch_plugin):
    sketch = sketch_plugin.Sketch([[(0, 0), (3, 4)]])
    doc = cs.Document.of("a house", sketch)
    assert doc.segments == (cs.Text("a house"), cs.Segment("sketch", sketch))
    with pytest.raises(cs.DocumentError, match=r"item 0 is a complex.*payload_types"):
        cs.Document.of(1j)


def test_a_payload_type_claimed_twice_must_be_named(sketch_plugin, sketch_module, registered_plugin):
    class Twin:
        @plugin_api.hookimpl
        def register_modalities(self, register):
            register("twin", sketch_module.SketchModality, options=sketch_module.SketchOptions)

    registered_plugin(Twin(), name="twin")
    with pytest.raises(cs.DocumentError, match=r"several modalities \(sketch, twin\).*Segment"):
        cs.Document.of(sketch_module.Sketch([[(1, 1)]]))


@given(drawings=st.lists(strokes, max_size=3), images=st.sampled_from(["base64", "files"]))
def test_jsonl_round_trips_plugin_payloads(sketch_plugin, tmp_path, drawings, images):
    docs = [cs.Document.of("drawing", sketch_plugin.Sketch(d)) for d in drawings]
    path = tmp_path / "docs.jsonl"
    cs.write_jsonl(docs, path, images=images)
    assert list(cs.read_jsonl(path)) == docs
    for line, drawing in zip(path.read_text().splitlines(), drawings, strict=True):  # through payload_to_json
        assert json.loads(line)["segments"][1]["payload"] == {"strokes": [[list(p) for p in s] for s in drawing]}


def test_a_bad_json_payload_names_the_line_and_the_modality(sketch_plugin, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"segments": [{"modality": "sketch", "payload": {"lines": []}}]}) + "\n")
    with pytest.raises(cs.DocumentError, match=r"bad.jsonl:1, segment 0: modality 'sketch' payload_from_json failed"):
        list(cs.read_jsonl(path))


def test_payloads_render_through_the_plugin_or_a_fallback(sketch_plugin, registered_plugin, digits_plugin, tmp_path):
    registered_plugin(digits_plugin, name="digits-plugin")
    sketch = sketch_plugin.Sketch([[(0, 0), (3, 4)], [(5, 5)]])
    doc = cs.Document.of("a ", sketch, " and ", cs.Segment("digits", [1, 2]), cs.Segment("unknown", {"x": 1}))
    assert document_to_text(doc) == "a [sketch: 2 strokes] and [digits: [1, 2]][unknown: {'x': 1}]"
    html = write_document(tmp_path / "o.html", [("out", doc)]).read_text()
    assert '<svg class="sketch"' in html and "[digits: [1, 2]]" in html
    markdown = write_document(tmp_path / "o.md", [("out", doc)]).read_text()
    assert "a [sketch: 2 strokes] and [digits: [1, 2]]" in markdown
    saved = json.loads(write_document(tmp_path / "o.json", [("out", doc)]).read_text())
    assert saved[0]["segments"][1]["payload"] == {"strokes": [[[0, 0], [3, 4]], [[5, 5]]]}


def test_a_payload_that_is_not_json_and_has_no_hooks_is_a_document_error(tmp_path):
    doc = cs.Document([cs.Segment("nohooks", object())])
    with pytest.raises(cs.DocumentError, match="not JSON-serialisable"):
        cs.write_jsonl([doc], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_a_modality_learns_its_name_from_the_registry(sketch_plugin, trained_sentencepiece):
    pipe = cs.Pipeline.from_config(
        {
            "text_tokenizer": {"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
            "modalities": ["sketch"],
        }
    )
    assert pipe.modalities["sketch"].name == "sketch"
    ids = pipe.tokenize(cs.Document.of("a", sketch_plugin.Sketch([[(1, 2)]])))
    assert pipe.detokenize(ids) == cs.Document.of("a", sketch_plugin.Sketch([[(1, 2)]]))


def test_pipeline_json_records_providers_and_a_missing_plugin_names_its_package(
    sketch_install, trained_sentencepiece, tmp_path, monkeypatch
):
    monkeypatch.syspath_prepend(str(sketch_install))  # chameleon-sketch 0.1, installed through an entry point
    with cs.use_registry() as registry:
        assert registry.get("modality", "sketch").provider == "chameleon-sketch"
        pipe = cs.Pipeline.from_config(
            {
                "text_tokenizer": {"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
                "modalities": ["sketch"],
                "model": {"dim": 16, "num_layers": 1, "num_heads": 2, "max_seq_len": 32},
            }
        )
        torch.manual_seed(0)
        pipe.model = pipe.build_model()
        saved = pipe.save_pretrained(tmp_path / "pipe")
    plugins = json.loads((saved / "pipeline.json").read_text())["plugins"]
    assert plugins["modality/sketch"] == {"distribution": "chameleon-sketch", "version": "0.1"}
    assert plugins["text_tokenizer/sentencepiece"]["distribution"] == "chameleon-sdk"
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(sketch_install)])
    with cs.use_registry(), pytest.raises(cs.PluginNotFoundError) as info:
        cs.Pipeline.from_pretrained(saved)
    assert "no modality plugin named 'sketch'" in str(info.value)
    assert "from distribution 'chameleon-sketch': install it (pip install 'chameleon-sketch==0.1')" in str(info.value)
