"""Pipeline.stream / generate: typed events, documents, stop strings, batching, cancellation, threads."""

from __future__ import annotations

import threading

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.generation.events import (
    BlockDone,
    BlockProgress,
    BlockStarted,
    Finished,
    TextDelta,
)


@pytest.fixture
def pipe(registry, registered_plugin, trained_sentencepiece, digits_plugin):
    registered_plugin(digits_plugin, name="digits-plugin")
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "digits", "options": {"block": 3}},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=256),
        attention="eager",
    )
    pipe = cs.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe


def _events(pipe, prompt, **kw):
    return list(pipe.stream(prompt, **kw))


def test_text_stream_deltas_concatenate_to_the_document(pipe):
    events = _events(
        pipe, "a red", max_new_tokens=12, sampler={"name": "sample", "options": {"temperature": 1.0}}, seed=3
    )
    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    (finished,) = [e for e in events if isinstance(e, Finished)]
    assert finished.document.text == deltas
    assert finished.reason in ("stop", "max_tokens")
    assert isinstance(events[-1], Finished)


def test_block_mode_yields_started_progress_done(pipe):
    events = _events(pipe, "digits:", mode="digits", max_new_tokens=8, progress_every=1)
    kinds = [type(e) for e in events]
    assert kinds[0] is BlockStarted and kinds[-2:] == [BlockDone, Finished]
    progress = [e for e in events if isinstance(e, BlockProgress)]
    assert [p.num_codes for p in progress] == [1, 2, 3]
    assert progress[-1].preview[:3] == events[-2].payload
    done = events[-1]
    assert done.reason == "done" and done.document == cs.Document.of(cs.Segment("digits", events[-2].payload))


def test_generate_batch_with_mixed_modes(pipe):
    docs = pipe.generate(["one", "two and three"], mode=["text", "digits"], max_new_tokens=6)
    assert len(docs) == 2
    assert all(isinstance(s, cs.Text) for s in docs[0])
    assert len(docs[1].segments) == 1 and docs[1].segments[0].modality == "digits"
    assert len(docs[1].segments[0].payload) == 3


def test_generate_matches_token_level_api(pipe):
    doc = pipe.generate("a blue square", max_new_tokens=10)
    ids = cs.generate_tokens(pipe.model, pipe.tokenize("a blue square"), max_new_tokens=10, vocabulary=pipe.vocabulary)
    specials = set(pipe.vocabulary.specials.values())
    assert doc == pipe.detokenize([i for i in ids.tolist() if i not in specials])


def test_stop_strings_cut_the_text(pipe):
    full = pipe.generate("a", max_new_tokens=20, sampler={"name": "sample", "options": {"temperature": 1.0}}, seed=1)
    text = full.text
    assert len(text) > 4
    stop = text[2:4]
    events = _events(
        pipe, "a", max_new_tokens=20, sampler={"name": "sample", "options": {"temperature": 1.0}}, seed=1, stop=[stop]
    )
    finished = events[-1]
    assert finished.reason == "stop_string"
    assert finished.document.text == text[: text.find(stop)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == finished.document.text


def test_closing_the_stream_cancels_and_restores_the_model(pipe):
    pipe.model.train()
    stream = pipe.stream("a", max_new_tokens=200)
    next(stream)
    stream.close()
    assert pipe.model.training
    pipe.model.eval()


def test_threads_on_separate_pipelines(pipe):
    pipes = [pipe]
    for _ in range(2):
        other = cs.Pipeline.from_config(pipe.config, registry=pipe.registry)
        other.model = other.build_model()
        other.model.load_state_dict(pipe.model.state_dict())
        pipes.append(other)
    expected = pipe.generate("a red circle", max_new_tokens=8)
    results: dict[int, cs.Document] = {}

    def work(i):
        results[i] = pipes[i].generate("a red circle", max_new_tokens=8)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: expected, 1: expected, 2: expected}


def test_no_model_is_a_clear_error(pipe):
    pipe.model = None
    with pytest.raises(cs.GenerationError, match="has no model"):
        pipe.generate("x")


def test_saved_pipeline_generates_the_same(pipe, tmp_path):
    expected = pipe.generate("a red", max_new_tokens=6)
    loaded = cs.Pipeline.from_pretrained(pipe.save_pretrained(tmp_path / "p"))
    assert loaded.model is not None and not loaded.model.training
    assert loaded.generate("a red", max_new_tokens=6) == expected


@pytest.mark.parametrize("suffix", [".html", ".md", ".json"])
def test_cli_generate_writes_the_output(pipe, tmp_path, suffix, capsys):
    from chameleon_sdk.cli import main

    directory = pipe.save_pretrained(tmp_path / "p")
    out = tmp_path / f"out{suffix}"
    code = main(
        [
            "generate",
            "--model",
            str(directory),
            "--prompt",
            "a red",
            "--max-new-tokens",
            "5",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and out.is_file()
    assert "a red" in out.read_text(encoding="utf-8")
    assert f"wrote {out}" in capsys.readouterr().out


@given(text=st.text(max_size=60), cut=st.integers(0, 60), width=st.integers(1, 4), use_stop=st.booleans())
def test_incremental_text_equals_decoding_the_whole_run(pipe, text, cut, width, use_stop):
    """Deltas built token by token (short decodes) equal one decode of the run, stop strings included."""
    from chameleon_sdk.generation.stream import _RowBuilder

    ids = pipe.text_tokenizer.encode(text)
    stop = text[cut : cut + width] if use_stop and text[cut : cut + width] else None
    row = _RowBuilder(pipe, 0, [stop] if stop else [], progress_every=None)
    events = [e for token in ids for e in row.feed(token)]
    events += row.finish("max_tokens")
    expected = text[: text.find(stop)] if stop else text
    deltas = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert deltas == expected == events[-1].document.text
    assert "\ufffd" not in deltas or "\ufffd" in text
    assert row.hit_stop_string == bool(stop)


def test_the_configured_sampler_is_the_default(pipe):
    spec = {"name": "sample", "options": {"temperature": 2.0}}
    explicit = pipe.generate("a red", max_new_tokens=12, sampler=spec, seed=5)
    assert explicit != pipe.generate("a red", max_new_tokens=12, seed=5)  # the default config says greedy
    pipe.config = attrs.evolve(pipe.config, sampler=cs.ComponentSpec(**spec))
    assert pipe.generate("a red", max_new_tokens=12, seed=5) == explicit
    assert pipe.generate("a red", max_new_tokens=12, seed=5, sampler="greedy") != explicit
