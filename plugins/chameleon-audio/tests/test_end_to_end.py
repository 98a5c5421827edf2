"""A tiny model learns the tone task through pipe.train (the ``local`` trainer), then generates in
text, audio and interleaved modes. Small by design (about 30 s on one thread): a memorisable version of
the task (fixed amplitude and phase, 3 pitches, 2 durations); examples/tones_demo.py measures the full one."""

from __future__ import annotations

import json

import pytest
import torch
from chameleon_audio import Waveform
from chameleon_audio.tones import (
    caption,
    evaluate_tones,
    parse_caption,
    peak_frequency,
    tone_pipeline,
    tone_samples,
    train_tones,
)

import chameleon_sdk as cs

PITCHES, DURATIONS = (220, 440, 660), (20, 40)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tones")
    with cs.use_registry():
        torch.manual_seed(0)
        pipe = tone_pipeline(downsample=8, bits=6, dim=64, num_layers=2, lr=5e-3, max_seconds=0.05, max_seq_len=128)
        kw = {"pitches": PITCHES, "durations_ms": DURATIONS, "amplitudes": (0.5, 0.5), "random_phase": False}
        samples = tone_samples(120, seed=0, **kw)
        result = train_tones(pipe, samples, out, steps=150, batch_size=8)
        yield pipe, result, out, tone_samples(12, seed=1, **kw)


def test_training_runs_through_the_pipeline_and_learns(trained):
    _, result, out, _ = trained
    losses = [json.loads(line)["loss"] for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.steps == 150 and len(losses) == 150
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert (out / "run" / "pipeline" / "pipeline.json").is_file()


def test_audio_mode_draws_the_asked_pitch_and_text_mode_names_the_heard_one(trained):
    pipe, _, _, held_out = trained
    metrics = evaluate_tones(pipe, held_out)
    assert metrics["pitch_accuracy"] >= 0.75, metrics["examples"]
    assert metrics["caption_pitch_accuracy"] >= 0.75, metrics["examples"]


def test_interleaved_mode_writes_a_caption_and_its_tone(trained):
    pipe, _, _, _ = trained
    doc = pipe.generate("a 440", mode="interleaved", max_new_tokens=120, seed=0)  # the model goes on from here
    clips = [s.payload for s in doc if isinstance(s, cs.Segment)]
    named = parse_caption("a 440" + doc.text)
    assert named is not None and named[0] == 440 and len(clips) == 1, doc
    assert isinstance(clips[0], Waveform) and abs(peak_frequency(clips[0]) - 440) < 0.03 * 440


def test_the_trained_pipeline_reloads_and_captions_a_wav_file(trained, tmp_path):
    _, _, out, _ = trained
    path = Waveform.tone(660, 0.04, amplitude=0.5).write_wav(tmp_path / "tone.wav")
    with cs.use_registry():
        loaded = cs.Pipeline.from_pretrained(out / "run" / "pipeline")
    heard = loaded.generate(cs.Document([cs.Segment("audio", path)]), max_new_tokens=16)
    assert heard.text.strip().startswith(caption(660, 40)[:8])  # "a 660 Hz"
