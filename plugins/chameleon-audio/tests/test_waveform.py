"""The payload: WAV input/output with the standard library, the JSON form, errors that name the input."""

from __future__ import annotations

import io
import wave

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from chameleon_audio import AudioError, Waveform
from hypothesis import given
from hypothesis.extra.numpy import arrays

pcm16 = arrays(np.int16, st.integers(0, 400), elements=st.integers(-32768, 32767))


def _wav(samples: np.ndarray, *, channels: int = 1, width: int = 2, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(samples.tobytes())
    return buffer.getvalue()


@given(pcm16)
def test_wav_bytes_round_trip_exactly(values):
    clip = Waveform.from_wav(_wav(values.astype("<i2")))
    assert clip.sample_rate == 16000 and len(clip) == len(values)
    assert np.array_equal(clip.pcm16(), values)
    assert Waveform.from_wav(clip.to_wav_bytes()) == clip


@given(pcm16)
def test_json_form_round_trips(values):
    clip = Waveform(values / 32768.0)
    data = clip.to_json()
    assert set(data) == {"wav_base64"}
    assert Waveform.from_json(data) == clip


def test_write_wav_is_atomic_and_readable(tmp_path):
    clip = Waveform.tone(440, 0.01)
    path = clip.write_wav(tmp_path / "sub" / "tone.wav")
    assert [p.name for p in path.parent.iterdir()] == ["tone.wav"]  # no temporary file left
    again = Waveform.from_wav(path)
    assert np.abs(again.samples - clip.samples).max() <= 1 / 32768


def test_other_pcm_widths_are_read():
    eight = Waveform.from_wav(_wav(np.array([0, 128, 255], dtype=np.uint8), width=1))
    assert eight.samples.tolist() == [-1.0, 0.0, 127 / 128]
    thirty_two = Waveform.from_wav(_wav(np.array([-(2**31), 2**30], dtype="<i4"), width=4))
    assert thirty_two.samples.tolist() == [-1.0, 0.5]


def test_values_outside_the_range_are_clipped_when_written():
    assert Waveform(np.array([-2.0, 2.0, 0.5])).pcm16().tolist() == [-32768, 32767, 16384]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a wav file", "not a readable PCM WAV"),
        (_wav(np.zeros(8, dtype="<i2"), channels=2), "2 channels; the audio modality expects mono"),
        (_wav(np.zeros(9, dtype=np.uint8), width=3), "24-bit samples; expected 8, 16 or 32-bit PCM"),
    ],
)
def test_bad_wav_input_raises_a_typed_error(data, message):
    with pytest.raises(AudioError, match=message):
        Waveform.from_wav(data)


def test_missing_file_and_bad_json_name_the_input(tmp_path):
    with pytest.raises(AudioError, match=r"cannot read .*missing\.wav"):
        Waveform.from_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match=r"expected .*wav_base64"):
        Waveform.from_json({"samples": [0.0]})
    with pytest.raises(AudioError, match="not valid base64"):
        Waveform.from_json({"wav_base64": "%%%"})


@pytest.mark.parametrize(
    ("samples", "message"),
    [(np.zeros((2, 3)), "1-D \\(mono\\)"), ([0.0, float("nan")], "finite"), (["a"], "must be numbers")],
)
def test_bad_samples_raise(samples, message):
    with pytest.raises(AudioError, match=message):
        Waveform(samples)
    with pytest.raises(AudioError, match="sample_rate"):
        Waveform([0.0], 0)


def test_equality_tone_and_resampling():
    tone = Waveform.tone(440, 0.1, amplitude=0.25)
    assert tone == Waveform(tone.samples.copy()) and tone != Waveform(tone.samples, 8000)
    assert tone != tone.samples.tolist()
    assert len(tone) == 1600 and tone.seconds == pytest.approx(0.1)
    assert float(np.abs(tone.samples).max()) == pytest.approx(0.25, abs=1e-3)
    assert repr(tone) == "Waveform(0.100 s at 16000 Hz, 1600 samples)"
    half = tone.resampled(8000)
    assert half.sample_rate == 8000 and len(half) == 800
    assert tone.resampled(16000) is tone
    assert Waveform(torch.ones(3)).samples.dtype == np.float32
    assert not tone.samples.flags.writeable  # a payload is a value: it cannot be changed in place
