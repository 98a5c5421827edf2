"""The ``audio`` modality: mono 16 kHz clips <-> variable-length blocks of mu-law codes.

Why this codec (see :mod:`chameleon_audio.codec` for the maths): it needs no training, so the
plugin works the moment it is installed; it is deterministic and idempotent
(``encode(decode(codes)) == codes``), so documents round-trip through token ids; its error is
bounded and known (about 38 dB SNR for 8 bits below the new Nyquist frequency); and any sound below
that frequency (speech, music, tones) is representable, not only what a learned codebook saw. The
price is length: one code per ``downsample`` samples, 4,000 codes a second by default. That suits
short clips and small models; long audio wants a learned codec with fewer codes per second, which
would be a different plugin behind the same protocol (and would add ``fit``/``save``/``load``).
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch

from chameleon_audio.codec import downsample, mulaw_decode, mulaw_encode, upsample
from chameleon_audio.waveform import SAMPLE_RATE, Waveform
from chameleon_sdk import ConfigError, TokenizationError, Vocabulary
from chameleon_sdk.plugin_api import ModalityBlock

__all__ = ["AudioBlock", "AudioModality", "AudioOptions"]


def _at_least(low: float) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: float) -> None:
        if value < low:
            raise ConfigError(f"audio option {attribute.name} must be >= {low}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class AudioOptions:
    """Options of the ``audio`` modality.

    :param downsample: input samples per code: codes come at ``16000 / downsample`` per second and
        the audio keeps frequencies below half that rate (4: 4,000 codes/s, up to 2 kHz).
    :param bits: mu-law bits per code; the codebook has ``2 ** bits`` codes.
    :param max_seconds: the longest clip generation may produce: the block constraint ends a block
        after ``max_seconds`` worth of codes.
    :param min_seconds: the shortest clip generation may produce (at least one code).
    """

    downsample: int = attrs.field(default=4, validator=_at_least(1))
    bits: int = attrs.field(default=8, validator=[_at_least(2), attrs.validators.le(16)])
    max_seconds: float = attrs.field(default=10.0, validator=_at_least(0.0))
    min_seconds: float = attrs.field(default=0.0, validator=_at_least(0.0))

    def __attrs_post_init__(self) -> None:
        if self.max_seconds < self.min_seconds:
            raise ConfigError(
                f"audio options: max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})"
            )


class AudioBlock:
    """Inside an audio block: codes until ``max_codes``, the end token once ``min_codes`` were emitted.

    The ``audio`` modality's own generation constraint (``block_constraint``): the engine asks it for
    the allowed tokens of every row inside an audio block, so clips have a bounded length and a
    block always closes.
    """

    def __init__(self, vocabulary: Vocabulary, block: ModalityBlock, *, min_codes: int, max_codes: int) -> None:
        if not 1 <= min_codes <= max_codes:
            raise ConfigError(f"AudioBlock: need 1 <= min_codes <= max_codes, got {min_codes}, {max_codes}")
        self.min_codes, self.max_codes = min_codes, max_codes
        self.tokens_needed: int | None = min_codes + 2  # the shortest whole block
        self._codes = vocabulary.code_mask(block.modality)
        self._end = torch.zeros(vocabulary.size, dtype=torch.bool)
        self._end[block.end_id] = True

    def allowed(self, codes_emitted: torch.Tensor) -> torch.Tensor:
        may_end = (codes_emitted >= self.min_codes).unsqueeze(1)
        may_continue = (codes_emitted < self.max_codes).unsqueeze(1)
        codes, end = self._codes.to(may_end.device), self._end.to(may_end.device)
        return (codes.unsqueeze(0) & may_continue) | (end.unsqueeze(0) & may_end)


class AudioModality:
    """Mono 16 kHz audio as mu-law codes in variable-length blocks (16000 / downsample codes a second)."""

    name: str  #: its registry name, set by the registry when it builds the modality
    payload_types: tuple[type, ...] = (Waveform,)
    block_length: int | None = None  # clips have any length

    def __init__(self, options: AudioOptions | None = None) -> None:
        self.options = options or AudioOptions()
        self.sample_rate = SAMPLE_RATE
        self.codebook_size = 2**self.options.bits

    @property
    def codes_per_second(self) -> float:
        return self.sample_rate / self.options.downsample

    def codes_for(self, seconds: float) -> int:
        """Codes in a clip of ``seconds``."""
        return -(-round(seconds * self.sample_rate) // self.options.downsample)

    # -- payloads ------------------------------------------------------------------------------------

    def waveform(self, payload: Any) -> Waveform:
        """The clip for any accepted payload.

        Accepted: a :class:`Waveform` at 16 kHz; its JSON form ``{"wav_base64": ...}``; WAV bytes; a
        path (``pathlib.Path``) to a WAV file; a 1-D numpy array or tensor of samples at 16 kHz.
        """
        if isinstance(payload, Waveform):
            clip = payload
        elif isinstance(payload, Mapping):
            clip = Waveform.from_json(payload)
        elif isinstance(payload, (bytes, os.PathLike)):
            clip = Waveform.from_wav(payload)
        elif isinstance(payload, (np.ndarray, torch.Tensor)):
            clip = Waveform(payload, self.sample_rate)
        else:
            raise TokenizationError(
                f"audio: cannot encode a {type(payload).__name__}; expected a Waveform, "
                '{"wav_base64": ...}, WAV bytes, a pathlib.Path to a WAV file or a 1-D array of samples'
            )
        if clip.sample_rate != self.sample_rate:
            raise TokenizationError(
                f"audio: the clip is sampled at {clip.sample_rate} Hz; the audio modality expects "
                f"{self.sample_rate} Hz (convert with waveform.resampled({self.sample_rate}))"
            )
        return clip

    # -- documents: JSON and rendering (static: read from the registered class) ---------------------

    @staticmethod
    def payload_to_json(payload: Any) -> Any:
        """``{"wav_base64": ...}`` (16-bit PCM: a clip comes back rounded to multiples of 1/32768)."""
        return payload.to_json() if isinstance(payload, Waveform) else payload

    @staticmethod
    def payload_from_json(data: Any) -> Waveform:
        return Waveform.from_json(data)

    @staticmethod
    def render_text(payload: Any) -> str:
        return f"[audio {payload.seconds:.2f} s]" if isinstance(payload, Waveform) else f"[audio: {payload!r:.60}]"

    @staticmethod
    def render_html(payload: Any) -> str:
        if not isinstance(payload, Waveform):
            return f"<code>[audio: {html.escape(repr(payload)[:60])}]</code>"
        return f'<audio controls src="data:audio/wav;base64,{payload.to_json()["wav_base64"]}"></audio>'

    # -- the Modality protocol -----------------------------------------------------------------------

    def encode(self, payload: Any) -> torch.Tensor:
        """A 1-D LongTensor of ``ceil(samples / downsample)`` codes in ``[0, codebook_size)``."""
        samples = torch.from_numpy(self.waveform(payload).samples.astype(np.float64))
        return mulaw_encode(downsample(samples, self.options.downsample), self.codebook_size)

    def decode(self, codes: torch.Tensor) -> Waveform:
        """The 16 kHz clip for a 1-D tensor of codes: ``len(codes) * downsample`` samples."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 1 or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TokenizationError(
                f"audio: decode expects a 1-D integer tensor of codes, got {codes.dtype} {list(codes.shape)}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            bad = int(codes[(codes < 0) | (codes >= self.codebook_size)][0])
            raise TokenizationError(f"audio: code {bad} is outside the codebook [0, {self.codebook_size})")
        samples = upsample(mulaw_decode(codes, self.codebook_size), self.options.downsample)
        return Waveform(samples.numpy(), self.sample_rate)

    def decode_partial(self, codes: torch.Tensor) -> Waveform:
        """A clip for the codes of an unfinished block (any prefix of codes is a valid, shorter clip)."""
        return self.decode(codes)

    # -- generation ----------------------------------------------------------------------------------

    def block_constraint(self, vocabulary: Vocabulary) -> AudioBlock:
        """The generation rule inside audio blocks (see :class:`AudioBlock`)."""
        return AudioBlock(
            vocabulary,
            vocabulary.block(self.name),
            min_codes=max(1, self.codes_for(self.options.min_seconds)),
            max_codes=max(1, self.codes_for(self.options.max_seconds)),
        )

    def __repr__(self) -> str:
        o = self.options
        return f"AudioModality({self.codes_per_second:g} codes/s, {o.bits}-bit mu-law)"
