"""Typed events yielded by ``Pipeline.stream``. Every event names the batch row it belongs to."""

from __future__ import annotations

import enum
from typing import Any

import attrs

from chameleon_sdk.document import Document

__all__ = [
    "BlockDone",
    "BlockProgress",
    "BlockStarted",
    "FinishReason",
    "Finished",
    "GenerationEvent",
    "ImageDone",
    "ImageProgress",
    "ImageStarted",
    "TextDelta",
]


@attrs.frozen
class TextDelta:
    """New text for ``row`` (concatenate the deltas to get the row's text)."""

    row: int
    text: str


@attrs.frozen
class BlockStarted:
    """``row`` began a block of ``modality`` (its begin token was sampled or forced)."""

    row: int
    modality: str


@attrs.frozen
class BlockProgress:
    """A preview of a block being generated: ``preview`` is ``decode_partial`` of the codes so far."""

    row: int
    modality: str
    num_codes: int
    preview: Any


@attrs.frozen
class BlockDone:
    """``row`` finished a block; ``payload`` is the decoded item (a PIL image for images)."""

    row: int
    modality: str
    payload: Any


@attrs.frozen
class ImageStarted(BlockStarted):
    """An image block began."""


@attrs.frozen
class ImageProgress(BlockProgress):
    """A partial preview of the image being generated."""


@attrs.frozen
class ImageDone(BlockDone):
    """An image was generated and decoded."""


class FinishReason(enum.StrEnum):
    """Why a row stopped. A ``str`` enum: each member equals (and serialises as) its value."""

    STOP = "stop"  #: a stop token
    STOP_STRING = "stop_string"  #: a stop string appeared in the text
    DONE = "done"  #: the one block of a modality mode is complete
    MAX_TOKENS = "max_tokens"  #: ``max_new_tokens`` were generated
    MAX_TIME = "max_time"  #: ``max_time`` seconds passed


@attrs.frozen
class Finished:
    """``row`` stopped for ``reason`` (a :class:`FinishReason`); ``document`` is what it made."""

    row: int
    reason: FinishReason
    document: Document


GenerationEvent = TextDelta | BlockStarted | BlockProgress | BlockDone | Finished
