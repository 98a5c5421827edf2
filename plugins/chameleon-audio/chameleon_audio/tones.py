"""Synthetic tones and the measurements of the audio plugin: SNR, FFT pitch and caption parsing.

The tone task pairs a caption (``"a 440 Hz tone lasting 80 ms"``) with the tone it names, at a few
pitches and durations, random amplitude and phase. Pairs of one text and one audio segment are
rotated by the training data pipeline, so a model learns both directions: caption -> tone
(generation) and tone -> caption (recognition).
"""

from __future__ import annotations

import math
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chameleon_audio.modality import AudioModality
from chameleon_audio.waveform import Waveform
from chameleon_sdk import (
    ComponentSpec,
    DataConfig,
    Document,
    ModelConfig,
    Pipeline,
    PipelineConfig,
    Segment,
    SourceConfig,
    TrainResult,
    write_jsonl,
)

__all__ = [
    "DURATIONS_MS",
    "PITCHES",
    "PITCH_TOLERANCE",
    "caption",
    "evaluate_tones",
    "parse_caption",
    "peak_frequency",
    "snr_db",
    "tone_pipeline",
    "tone_samples",
    "train_tones",
    "write_tone_data",
]

PITCHES = (220, 330, 440, 550, 660)  #: Hz
DURATIONS_MS = (40, 80, 120)
PITCH_TOLERANCE = 0.03  #: a generated tone is right when its FFT peak is this close (relative): half a semitone
_CAPTION = re.compile(r"(\d+)\s*Hz tone lasting (\d+)\s*ms")


def caption(pitch: int, duration_ms: int) -> str:
    return f"a {pitch} Hz tone lasting {duration_ms} ms"


def parse_caption(text: str) -> tuple[int, int] | None:
    """``(pitch, duration_ms)`` named by a caption, or None when the text names none."""
    match = _CAPTION.search(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def tone_samples(
    count: int,
    *,
    seed: int,
    pitches: tuple[int, ...] = PITCHES,
    durations_ms: tuple[int, ...] = DURATIONS_MS,
    amplitudes: tuple[float, float] = (0.3, 0.8),
    random_phase: bool = True,
) -> list[tuple[int, int, Waveform]]:
    """``count`` seeded ``(pitch, duration_ms, clip)`` samples: amplitude uniform in ``amplitudes``,
    phase uniform in ``[0, 2 pi)`` (or 0 without ``random_phase``)."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        pitch, ms = rng.choice(pitches), rng.choice(durations_ms)
        amplitude = rng.uniform(*amplitudes)
        phase = rng.uniform(0, 2 * np.pi) if random_phase else 0.0
        clip = Waveform.tone(pitch, ms / 1000, amplitude=amplitude, phase=phase)
        samples.append((pitch, ms, clip))
    return samples


def snr_db(reference: Waveform, estimate: Waveform) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB, over their common length."""
    n = min(len(reference), len(estimate))
    ref = reference.samples[:n].astype(np.float64)
    noise = ref - estimate.samples[:n].astype(np.float64)
    signal_power, noise_power = float(np.sum(ref**2)), float(np.sum(noise**2))
    if noise_power == 0.0:
        return float("inf")
    return 10.0 * math.log10(signal_power / noise_power) if signal_power > 0 else float("-inf")


def peak_frequency(clip: Waveform) -> float:
    """The frequency (Hz) of the strongest FFT bin of a Hann-windowed clip, refined by fitting a parabola
    through the log magnitudes around the peak; 0.0 for a clip shorter than 4 samples or silence."""
    samples = clip.samples.astype(np.float64)
    if len(samples) < 4 or not np.any(samples):
        return 0.0
    n_fft = 1 << max(14, int(np.ceil(np.log2(len(samples)))) + 2)  # zero-padded: fine bins for short clips
    spectrum = np.abs(np.fft.rfft((samples - samples.mean()) * np.hanning(len(samples)), n_fft))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) < 0 else 0.0
    return float((k + offset) * clip.sample_rate / n_fft)


# -- the end-to-end task -------------------------------------------------------------------------------


def tone_pipeline(
    *,
    downsample: int = 8,
    bits: int = 8,
    dim: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    lr: float = 3e-3,
    warmup_steps: int = 20,
    text_vocab_size: int = 300,
    max_seconds: float = 0.2,
    max_seq_len: int = 512,
) -> Pipeline:
    """A pipeline for the tone task (text tokenizer trained on the captions, model not built yet)."""
    config = PipelineConfig(
        text_tokenizer=ComponentSpec(name="sentencepiece", options={"vocab_size": text_vocab_size}),
        modalities=(
            ComponentSpec(name="audio", options={"downsample": downsample, "bits": bits, "max_seconds": max_seconds}),
        ),
        model=ModelConfig(dim=dim, num_layers=num_layers, num_heads=num_heads, max_seq_len=max_seq_len),
        stability=(ComponentSpec(name="qk-norm"), ComponentSpec(name="z-loss")),
        trainer=ComponentSpec(
            name="local", options={"lr": lr, "warmup_steps": warmup_steps, "progress": False, "precision": "fp32"}
        ),
    )
    pipe = Pipeline.from_config(config)
    pipe.train_text_tokenizer([caption(p, d) for p in PITCHES for d in DURATIONS_MS] * 20)
    return pipe


def write_tone_data(samples: Sequence[tuple[int, int, Waveform]], path: str | os.PathLike[str]) -> Path:
    """The samples as JSONL documents ``[caption, audio]`` (audio as ``{"wav_base64": ...}``)."""
    docs = [Document.of(caption(p, ms), Segment("audio", clip.to_json())) for p, ms, clip in samples]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(docs, path)
    return Path(path)


def train_tones(
    pipe: Pipeline,
    samples: Sequence[tuple[int, int, Waveform]],
    out_dir: str | os.PathLike[str],
    *,
    steps: int,
    batch_size: int = 8,
) -> TrainResult:
    """Train ``pipe`` on the samples with its configured trainer (``pipe.train``), fresh, in ``out_dir``."""
    out = Path(out_dir)
    data_file = write_tone_data(samples, out / "data" / "train.jsonl")
    audio = pipe.modalities["audio"]
    assert isinstance(audio, AudioModality)
    # rows as long as the longest document: [bos] caption [begin] codes [end] [eos]
    seq_len = max(len(pipe.text_tokenizer.encode(caption(p, ms))) + audio.codes_for(ms / 1000) for p, ms, _ in samples)
    data = DataConfig(sources=(SourceConfig(path=str(data_file)),), seq_len=seq_len + 4, batch_size=batch_size)
    return pipe.train(data, steps=steps, out_dir=out / "run", resume=False)


def evaluate_tones(
    pipe: Pipeline,
    samples: Sequence[tuple[int, int, Waveform]],
    *,
    seed: int = 0,
    audio_temperature: float = 0.0,
) -> dict[str, Any]:
    """Score a trained pipeline on held-out ``(pitch, duration_ms, clip)`` samples.

    Text is decoded greedily; audio too unless ``audio_temperature`` > 0, which samples audio codes
    (the ``sample`` sampler at that temperature): greedy decoding gives one tone per caption, sampling
    a different tone for every prompt.

    - ``pitch_accuracy``: share of tones generated from the captions (``audio`` mode) whose FFT peak is
      within 3 % of the asked pitch; ``mean_duration_error_ms`` of those tones;
    - ``caption_pitch_accuracy`` / ``caption_exact_accuracy``: share of captions generated from the
      clips (``text`` mode) that name the right pitch / the right pitch and duration;
    - ``examples`` (JSON: asked, peak_hz, seconds, heard) and ``clips`` (the generated Waveforms).
    """
    audio = pipe.modalities["audio"]
    assert isinstance(audio, AudioModality)
    longest = audio.codes_for(audio.options.max_seconds)
    prompts = [Document.of(caption(p, ms)) for p, ms, _ in samples]
    samplers = {"audio": {"name": "sample", "options": {"temperature": audio_temperature}}} if audio_temperature else {}
    drawn = pipe.generate(prompts, mode="audio", max_new_tokens=longest + 1, seed=seed, samplers=samplers)
    clips = [next((s.payload for s in doc if isinstance(s, Segment) and s.modality == "audio"), None) for doc in drawn]
    peaks = [peak_frequency(c) if c is not None else 0.0 for c in clips]
    pitch_hits = [bool(abs(peak - p) <= PITCH_TOLERANCE * p) for peak, (p, _, _) in zip(peaks, samples)]
    durations = [c.seconds * 1000 if c is not None else 0.0 for c in clips]
    heard = pipe.generate([Document([Segment("audio", clip)]) for _, _, clip in samples], max_new_tokens=16, seed=seed)
    named = [parse_caption(doc.text) for doc in heard]
    caption_hits = [n is not None and n[0] == p for n, (p, _, _) in zip(named, samples)]
    exact_hits = [n == (p, ms) for n, (p, ms, _) in zip(named, samples)]
    return {
        "pitch_accuracy": sum(pitch_hits) / len(samples),
        "mean_duration_error_ms": float(np.mean([abs(d - ms) for d, (_, ms, _) in zip(durations, samples)])),
        "caption_pitch_accuracy": sum(caption_hits) / len(samples),
        "caption_exact_accuracy": sum(exact_hits) / len(samples),
        "examples": [
            {"asked": caption(p, ms), "peak_hz": round(float(peak), 1), "ms": round(d, 1), "heard": doc.text.strip()}
            for (p, ms, _), peak, d, doc in zip(samples, peaks, durations, heard)
        ],
        "clips": clips,
    }
