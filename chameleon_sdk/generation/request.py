"""What a decode is asked to do, checked once where a call enters the SDK.

:func:`~chameleon_sdk.generate_tokens` and ``Pipeline.generate``/``stream`` build one
:class:`DecodeRequest` from their arguments (its validators raise :class:`GenerationError` naming
the argument) and hand it to the :class:`~chameleon_sdk.TokenDecoder`, which checks only what needs
the model or the prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import torch

from chameleon_sdk.config import one_of, typed
from chameleon_sdk.errors import GenerationError
from chameleon_sdk.validation import check_int64, check_number
from chameleon_sdk.vocabulary import Vocabulary

if TYPE_CHECKING:
    from chameleon_sdk.contracts.modality import BlockConstraint

__all__ = ["DEFAULT_MAX_BATCH", "DecodeRequest", "Guidance", "check_batch_size", "expand_modes", "is_int"]

#: prompts decoded together at most, unless ``max_batch`` says otherwise: every row holds a KV cache
#: of ``prompt + max_new_tokens`` slots per layer, so an unbounded batch is an unbounded allocation
DEFAULT_MAX_BATCH = 256


def is_int(value: Any) -> bool:
    """An ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    check_number(value, f"Guidance.{attribute.name}", low=0, error=GenerationError)


@attrs.frozen(kw_only=True)
class Guidance:
    """Classifier-free guidance inside blocks of a modality, for any vocabulary.

    ``rows=3`` is the reference's formula over the full prompt (f), the prompt with its text removed
    (i) and the unconditional prompt ``[bos, begin]`` (u)::

        logits = u + scale_image * (i - u) + scale_text * (f - i)

    ``rows=2`` is plain CFG, ``logits = u + scale_text * (f - u)``. ``modality=None`` (the default)
    guides blocks of whichever modality is being generated (``mode="sketch"`` guides sketch codes;
    in ``interleaved`` mode every block); ``modality="image"`` guides only image blocks. Outside
    the guided blocks the full prompt's logits are used unchanged, so in ``text`` mode guidance is
    a no-op and costs nothing (no extra rows are run).
    """

    scale_text: float = attrs.field(default=3.0, validator=_non_negative)
    scale_image: float = attrs.field(default=1.2, validator=_non_negative)
    rows: int = attrs.field(default=3, validator=one_of(2, 3))
    modality: str | None = attrs.field(default=None, validator=typed)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """``[R, rows, V]`` -> ``[R, V]``."""
        full, uncond = logits[:, 0], logits[:, -1]
        if self.rows == 2:
            return uncond + self.scale_text * (full - uncond)
        image_only = logits[:, 1]
        return uncond + self.scale_image * (image_only - uncond) + self.scale_text * (full - image_only)


def expand_modes(mode: Any, rows: int) -> tuple[str, ...]:
    """One mode per row from ``mode`` (one string for all rows, or one per row)."""
    return (mode,) * rows if isinstance(mode, str) else _modes(mode)


def _max_new_tokens(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if not is_int(value) or value <= 0:
        raise GenerationError(f"max_new_tokens must be > 0 (an integer), got {value!r}")


def _modes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(m, str) for m in value):
        raise GenerationError(f"mode must be a string or one string per prompt, got {value!r}")
    return tuple(value)


def _vocabulary(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, Vocabulary):
        raise GenerationError(f"vocabulary must be a Vocabulary or None, got {type(value).__name__}")


def _stop_ids(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(map(is_int, value)):
        raise GenerationError(f"stop_ids must be a list of integer token ids, got {value!r}")
    for i, stop in enumerate(value):
        check_int64(stop, f"stop_ids[{i}]", error=GenerationError)
    return tuple(value)


def _guidance(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, Guidance):
        raise GenerationError(f"guidance must be a Guidance(...) or None, got {value!r}")


def _max_time(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None:
        check_number(value, "max_time (seconds)", low=0, error=GenerationError)


def _constraints(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise GenerationError(f"constraints must map modality names to BlockConstraints, got {value!r}")


def _check_max_batch(value: Any) -> None:
    if value is not None and (not is_int(value) or value <= 0):
        raise GenerationError(f"max_batch must be a positive integer or None, got {value!r}")


def _max_batch(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    _check_max_batch(value)


def check_batch_size(count: int, max_batch: Any) -> None:
    """Refuse ``count`` prompts over ``max_batch`` (None: no limit), or a malformed ``max_batch``."""
    _check_max_batch(max_batch)
    if max_batch is not None and count > max_batch:
        raise GenerationError(
            f"{count} prompts exceed max_batch={max_batch}: generate in smaller batches, "
            "or pass a larger max_batch (None: no limit) if the memory allows"
        )


@attrs.frozen(kw_only=True)
class DecodeRequest:
    """The decoding options of one call, each checked by its validator.

    :param max_new_tokens: new tokens per row at most.
    :param modes: one mode per row (:func:`expand_modes`): ``"text"``, ``"interleaved"`` or a modality.
    :param vocabulary: the token space (None: text only, no modality masks).
    :param stop_ids: tokens that end a row.
    :param guidance: classifier-free guidance inside blocks, or None.
    :param max_time: seconds after which every row stops, or None.
    :param constraints: per-modality block constraints (modality name -> ``BlockConstraint``).
    :param max_batch: refuse more prompts than this (None: no limit).
    """

    max_new_tokens: int = attrs.field(validator=_max_new_tokens)
    modes: tuple[str, ...] = attrs.field(converter=_modes)
    vocabulary: Vocabulary | None = attrs.field(default=None, validator=_vocabulary)
    stop_ids: tuple[int, ...] = attrs.field(default=(), converter=_stop_ids)
    guidance: Guidance | None = attrs.field(default=None, validator=_guidance)
    max_time: float | None = attrs.field(default=None, validator=_max_time)
    constraints: Mapping[str, BlockConstraint] | None = attrs.field(default=None, validator=_constraints)
    max_batch: int | None = attrs.field(default=DEFAULT_MAX_BATCH, validator=_max_batch)
