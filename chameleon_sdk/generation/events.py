"""Typed events yielded by ``Pipeline.stream``. Every event names the batch row it belongs to."""

from __future__ import annotations

from typing import Any

import attrs

from chameleon_sdk.document import Document

__all__ = [
    "BlockDone",
    "BlockProgress",
    "BlockStarted",
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


@attrs.frozen
class Finished:
    """``row`` stopped; ``reason`` is one of ``stop`` (a stop token), ``stop_string``, ``done`` (the one
    block of a modality mode is complete), ``max_tokens``, ``max_time``; ``document`` is what it made."""

    row: int
    reason: str
    document: Document


GenerationEvent = TextDelta | BlockStarted | BlockProgress | BlockDone | Finished
