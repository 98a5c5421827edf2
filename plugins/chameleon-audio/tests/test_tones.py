"""The measuring tools of the tone task: the FFT pitch estimate, SNR, captions, seeded samples."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from chameleon_audio import Waveform
from chameleon_audio.tones import PITCHES, caption, parse_caption, peak_frequency, snr_db, tone_samples
from hypothesis import given


@given(st.floats(100, 4000), st.floats(0.02, 0.3), st.floats(0.05, 0.9), st.floats(0, 6.3))
def test_peak_frequency_finds_a_tones_pitch(frequency, seconds, amplitude, phase):
    tone = Waveform.tone(frequency, seconds, amplitude=amplitude, phase=phase)
    assert peak_frequency(tone) == pytest.approx(frequency, rel=0.01)


def test_peak_frequency_picks_the_loudest_partial_and_survives_silence():
    t = np.arange(1600) / 16000
    assert peak_frequency(Waveform(0.2 * np.sin(2 * np.pi * 300 * t) + 0.6 * np.sin(2 * np.pi * 700 * t))) == (
        pytest.approx(700, rel=0.01)
    )
    assert peak_frequency(Waveform(np.zeros(100))) == 0.0 and peak_frequency(Waveform([0.5])) == 0.0


def test_snr_of_known_noise():
    clean = Waveform.tone(440, 0.1)
    assert snr_db(clean, clean) == float("inf")
    noisy = Waveform(clean.samples * 1.1)  # noise power = 1 % of the signal's: 20 dB
    assert snr_db(clean, noisy) == pytest.approx(20.0, abs=1e-3)
    assert isinstance(snr_db(clean, noisy), float)


@given(st.sampled_from(PITCHES), st.integers(1, 999))
def test_captions_parse_back(pitch, ms):
    assert parse_caption(caption(pitch, ms)) == (pitch, ms)
    assert parse_caption("  " + caption(pitch, ms) + " and more") == (pitch, ms)


def test_parse_caption_refuses_other_text():
    assert parse_caption("a tone") is None and parse_caption("") is None


def test_tone_samples_are_seeded():
    first, again, other = (tone_samples(5, seed=s) for s in (3, 3, 4))
    assert first == again and first != other
    assert all(p in PITCHES and abs(len(clip) - ms * 16) <= 1 for p, ms, clip in first)
    fixed = tone_samples(4, seed=0, amplitudes=(0.5, 0.5), random_phase=False)
    assert all(clip == Waveform.tone(p, ms / 1000) for p, ms, clip in fixed)
