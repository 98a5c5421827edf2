"""The codec's pure functions: DCT pair, resampling, mu-law, and the SNR it reaches on test signals."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from chameleon_audio import AudioModality, AudioOptions, Waveform
from chameleon_audio.codec import dct, downsample, idct, mulaw_decode, mulaw_encode, resample, upsample
from chameleon_audio.tones import peak_frequency, snr_db
from hypothesis import given
from hypothesis.extra.numpy import arrays

signals = st.integers(1, 300).flatmap(
    lambda n: arrays(np.float64, n, elements=st.floats(-1, 1, allow_nan=False, allow_infinity=False))
)


def _dct_matrix(n: int) -> torch.Tensor:
    k, i = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    scale = torch.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return scale * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))


@given(signals)
def test_dct_matches_its_definition_and_inverts(x):
    x = torch.from_numpy(x)
    assert torch.allclose(dct(x), _dct_matrix(len(x)) @ x, atol=1e-10)
    assert torch.allclose(idct(dct(x)), x, atol=1e-10)


@given(signals, st.integers(1, 16))
def test_downsample_is_an_exact_left_inverse_of_upsample(y, factor):
    y = torch.from_numpy(y)
    up = upsample(y, factor)
    assert up.shape[-1] == len(y) * factor
    assert torch.allclose(downsample(up, factor), y, atol=1e-10)


@given(st.integers(2, 12), st.data())
def test_mulaw_decode_then_encode_gives_the_codes_back(bits, data):
    levels = 2**bits
    codes = torch.tensor(data.draw(st.lists(st.integers(0, levels - 1), min_size=1, max_size=64)))
    values = mulaw_decode(codes, levels)
    assert float(values.abs().max()) <= 1.0
    assert torch.equal(mulaw_encode(values, levels), codes)


def test_mulaw_is_monotonic_and_clips():
    x = torch.linspace(-1.5, 1.5, 2001, dtype=torch.float64)
    codes = mulaw_encode(x, 256)
    assert int(codes.min()) == 0 and int(codes.max()) == 255
    assert bool((codes[1:] >= codes[:-1]).all())


def test_downsampling_keeps_the_pitch_of_clips_of_any_length():
    for n in (1601, 1603, 1607):  # not multiples of the factor: the end is mirrored, the time grid kept
        tone = Waveform.tone(440, n / 16000)
        y = downsample(torch.from_numpy(tone.samples.astype(np.float64)), 8)
        assert len(y) == -(-n // 8)
        assert abs(peak_frequency(Waveform(y.numpy(), 2000)) - 440) < 2


def test_resample_removes_what_the_new_rate_cannot_hold():
    t = np.arange(16000) / 16000
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)
    filtered = resample(resample(torch.from_numpy(low + high), 4000), 16000).numpy()
    assert snr_db(Waveform(low), Waveform(filtered)) > 35  # the 3 kHz part is gone, nothing aliased onto 300 Hz


# Round-trip quality: just under the figures examples/snr_report.py prints (docs/plugins/writing-a-modality.md).
@pytest.mark.parametrize(
    ("downsample_by", "pitch", "at_least"),
    [(4, 220, 37), (4, 440, 37), (4, 1500, 30.5), (8, 440, 34), (8, 880, 25)],
)
def test_round_trip_snr_on_tones_below_the_new_nyquist(downsample_by, pitch, at_least):
    audio = AudioModality(AudioOptions(downsample=downsample_by))
    tone = Waveform.tone(pitch, 0.25, amplitude=0.6, phase=0.4)
    assert snr_db(tone, audio.decode(audio.encode(tone))) > at_least


def test_round_trip_snr_is_level_independent():
    audio = AudioModality(AudioOptions(downsample=4))
    loud, quiet = Waveform.tone(440, 0.25, amplitude=0.9), Waveform.tone(440, 0.25, amplitude=0.02)
    snrs = [snr_db(w, audio.decode(audio.encode(w))) for w in (loud, quiet)]
    assert min(snrs) > 30 and abs(snrs[0] - snrs[1]) < 8  # mu-law: about the same SNR, loud or quiet
