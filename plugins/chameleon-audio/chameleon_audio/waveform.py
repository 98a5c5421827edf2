"""The audio payload: a mono clip of float samples, read from and written to WAV files.

WAV input and output use the standard library's :mod:`wave` (PCM only). A :class:`Waveform` is what
``Segment("audio", ...)`` holds and what the ``audio`` modality decodes to; for JSONL documents its
JSON form is ``{"wav_base64": "<base64 of a 16-bit PCM WAV file>"}`` (:meth:`Waveform.to_json`).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from chameleon_audio.codec import resample
from chameleon_sdk import ChameleonError

__all__ = ["SAMPLE_RATE", "AudioError", "Waveform"]

SAMPLE_RATE = 16_000
#: PCM sample width in bytes -> little-endian dtype (8-bit WAV is unsigned, the others signed)
_PCM_DTYPES: dict[int, np.dtype[Any]] = {1: np.dtype(np.uint8), 2: np.dtype("<i2"), 4: np.dtype("<i4")}


class AudioError(ChameleonError, ValueError):
    """A WAV file, WAV bytes or sample array cannot be read as a mono audio clip."""


def _samples(value: Any) -> np.ndarray:
    """A read-only, 1-D float32 copy of ``value`` (numpy array, torch tensor or sequence of numbers)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.array(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AudioError(f"Waveform samples must be numbers, got {type(value).__name__}: {exc}") from exc
    if array.ndim != 1:
        raise AudioError(f"Waveform samples must be 1-D (mono), got shape {list(array.shape)}; mix channels down first")
    if not np.isfinite(array).all():
        raise AudioError("Waveform samples must be finite (no NaN or infinity)")
    array.flags.writeable = False
    return array


def _positive_rate(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise AudioError(f"Waveform.sample_rate must be a positive integer, got {value!r}")


@attrs.frozen(eq=False, repr=False)
class Waveform:
    """A mono clip: float32 ``samples`` (nominally in ``[-1, 1]``) at ``sample_rate`` Hz.

    Equality compares the rate and every sample exactly.
    """

    samples: np.ndarray = attrs.field(converter=_samples)
    sample_rate: int = attrs.field(default=SAMPLE_RATE, validator=_positive_rate)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def tone(
        cls,
        frequency: float,
        seconds: float,
        *,
        amplitude: float = 0.5,
        phase: float = 0.0,
        sample_rate: int = SAMPLE_RATE,
    ) -> Waveform:
        """A sine tone of ``frequency`` Hz lasting ``seconds`` (rounded to whole samples)."""
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        return cls(amplitude * np.sin(2 * np.pi * frequency * t + phase), sample_rate)

    @classmethod
    def from_wav(cls, source: str | os.PathLike[str] | bytes) -> Waveform:
        """Read a PCM WAV file (a path) or WAV bytes: 8, 16 or 32-bit, mono.

        :raises AudioError: for an unreadable file, a compressed or 24-bit format, or several channels.
        """
        name = "WAV bytes" if isinstance(source, bytes) else repr(str(source))
        try:
            with wave.open(io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source), "rb") as handle:
                channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
                frames = handle.readframes(handle.getnframes())
        except OSError as exc:
            raise AudioError(f"cannot read {name}: {exc.strerror or exc}") from exc
        except (wave.Error, EOFError) as exc:
            raise AudioError(f"{name} is not a readable PCM WAV file: {exc or 'truncated'}") from exc
        if channels != 1:
            raise AudioError(f"{name} has {channels} channels; the audio modality expects mono")
        if width not in _PCM_DTYPES:
            raise AudioError(f"{name} has {8 * width}-bit samples; expected 8, 16 or 32-bit PCM")
        raw = np.frombuffer(frames[: len(frames) - len(frames) % width], dtype=_PCM_DTYPES[width])
        if width == 1:
            samples = (raw.astype(np.float32) - 128.0) / 128.0
        else:
            samples = raw.astype(np.float64) / float(2 ** (8 * width - 1))
        return cls(samples, rate)

    @classmethod
    def from_json(cls, data: Any, *, where: str = "audio payload") -> Waveform:
        """Parse :meth:`to_json` data: ``{"wav_base64": "..."}``."""
        if not isinstance(data, Mapping) or set(data) != {"wav_base64"} or not isinstance(data["wav_base64"], str):
            raise AudioError(f'{where}: expected {{"wav_base64": "<base64 WAV>"}}, got {data!r:.80}')
        try:
            wav = base64.b64decode(data["wav_base64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AudioError(f"{where}: wav_base64 is not valid base64: {exc}") from exc
        return cls.from_wav(wav)

    # -- views -------------------------------------------------------------------------------------

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def __len__(self) -> int:
        return len(self.samples)

    def resampled(self, sample_rate: int) -> Waveform:
        """The clip band-limited and resampled to ``sample_rate`` (same duration)."""
        if sample_rate == self.sample_rate:
            return self
        length = round(len(self.samples) * sample_rate / self.sample_rate)
        return Waveform(resample(torch.from_numpy(self.samples.astype(np.float64)), length).numpy(), sample_rate)

    # -- output ------------------------------------------------------------------------------------

    def pcm16(self) -> np.ndarray:
        """The samples as 16-bit integers (``round(x * 32768)``, clipped to the int16 range): the inverse
        of how :meth:`from_wav` reads them, so a clip read from a 16-bit WAV file writes back unchanged."""
        return np.clip(np.round(self.samples.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")

    def to_wav_bytes(self) -> bytes:
        """A 16-bit PCM mono WAV file."""
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(self.sample_rate)
            handle.writeframes(self.pcm16().tobytes())
        return buffer.getvalue()

    def write_wav(self, path: str | os.PathLike[str]) -> Path:
        """Write a 16-bit PCM WAV file atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(self.to_wav_bytes())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def to_json(self) -> dict[str, str]:
        """The JSONL form: ``{"wav_base64": ...}`` (16-bit PCM, so samples are rounded to multiples of 1/32768)."""
        return {"wav_base64": base64.b64encode(self.to_wav_bytes()).decode("ascii")}

    # -- comparison --------------------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Waveform)
            and self.sample_rate == other.sample_rate
            and np.array_equal(self.samples, other.samples)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Waveform({self.seconds:.3f} s at {self.sample_rate} Hz, {len(self.samples)} samples)"
