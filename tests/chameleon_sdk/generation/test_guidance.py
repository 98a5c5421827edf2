"""Guidance for any modality (the one being generated, or a named one) and stream() validating up front."""

from __future__ import annotations

import pytest

import chameleon_sdk as cs
from chameleon_sdk.generation.events import BlockDone, BlockProgress, Finished


@pytest.fixture
def pipe(sketch_pipe):
    return sketch_pipe


def _decoder(pipe, mode, guidance):
    ids = pipe.tokenize_batch(["a red"])
    samplers = {"text": lambda logits, **_: logits.argmax(-1)}
    return cs.TokenDecoder(
        pipe.model,
        ids,
        max_new_tokens=8,
        modes=[mode],
        vocabulary=pipe.vocabulary,
        samplers=samplers,
        guidance=guidance,
    )


def test_default_guidance_follows_the_generated_modality(pipe):
    guided = pipe.generate("a red", mode="sketch", max_new_tokens=10, guidance=cs.Guidance())
    plain = pipe.generate("a red", mode="sketch", max_new_tokens=10)
    assert isinstance(guided.segments[-1], cs.Segment) and guided.segments[-1].modality == "sketch"
    assert guided != plain  # guidance changed the codes: it acted inside the sketch block
    assert _decoder(pipe, "sketch", cs.Guidance()).k == 3
    assert _decoder(pipe, "sketch", cs.Guidance(rows=2)).k == 2


def test_guidance_is_a_no_op_in_text_mode(pipe):
    assert _decoder(pipe, "text", cs.Guidance()).k == 1  # no extra rows are run
    guided = pipe.generate("a red", max_new_tokens=8, guidance=cs.Guidance(scale_text=5.0))
    assert guided == pipe.generate("a red", max_new_tokens=8)


def test_named_guidance_acts_only_on_that_modality(pipe):
    named = pipe.generate("a red", mode="sketch", max_new_tokens=10, guidance=cs.Guidance(modality="sketch"))
    assert named == pipe.generate("a red", mode="sketch", max_new_tokens=10, guidance=cs.Guidance())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"guidance": cs.Guidance(modality="image")}, r"Guidance\(modality='image'\).*\['sketch'\]"),
        ({"mode": "image"}, "image"),
        ({"max_new_tokens": 0}, "max_new_tokens must be > 0"),
        ({"sampler": "nope"}, "nope"),
        ({"sampler": {"name": "sample", "options": {"temperature": -1}}}, "temperature"),
        ({"guidance": 3}, "guidance must be a Guidance"),
        ({"max_time": -1}, "max_time"),
        ({"progress_every": 0}, "progress_every"),
        ({"previews": "no"}, "previews"),
        ({"stop": "x"}, "stop must be a list"),
    ],
)
def test_stream_validates_every_option_when_called(pipe, options, message):
    """Before the first event: a server can answer 400 before it sends any headers."""
    with pytest.raises(cs.ChameleonError, match=message):
        pipe.stream("a red", **options)  # not iterated


def test_progress_without_previews_counts_codes_without_decoding(pipe, monkeypatch):
    calls = []
    modality = pipe.modalities["sketch"]
    monkeypatch.setattr(modality, "decode_partial", lambda codes: calls.append(codes) or None)
    events = list(pipe.stream("a", mode="sketch", max_new_tokens=6, progress_every=1, previews=False))
    progress = [e for e in events if isinstance(e, BlockProgress)]
    assert [e.num_codes for e in progress] == list(range(1, len(progress) + 1)) and progress
    assert all(e.preview is None for e in progress)
    assert isinstance(events[-1], Finished) and events[-1].reason == "max_tokens"
    assert not any(isinstance(e, BlockDone) for e in events)
    assert [len(c) for c in calls] == [len(progress)]  # decoded once: the cut block, for the document
