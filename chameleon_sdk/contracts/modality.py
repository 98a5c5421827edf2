"""Kind ``modality``: one payload (an image, a clip) <-> a block of discrete codes.

The members a modality may leave out are declared here as protocols of their own
(:class:`BatchEncodingModality`, :class:`PartialDecodingModality`, :class:`ConstrainingModality`,
:class:`TrainableModality`); the core checks them with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from chameleon_sdk.contracts.stateful import Stateful

if TYPE_CHECKING:
    from chameleon_sdk.vocabulary import Vocabulary

__all__ = [
    "BatchEncodingModality",
    "BlockConstraint",
    "ConstrainingModality",
    "Modality",
    "PartialDecodingModality",
    "TrainableModality",
]


@runtime_checkable
class Modality(Protocol):
    """One payload (an image, a clip) <-> a 1-D block of discrete codes.

    Built by a ``register_modalities`` plugin; the registry name is the modality's name, which is
    what :class:`~chameleon_sdk.Segment` ``.modality`` refers to, the name of its vocabulary block
    and a generation mode (``pipe.generate(prompt, mode=name)``).

    - ``name``: set by the registry when it builds the modality (a modality never sets it).
    - ``codebook_size``: codes are ``[0, codebook_size)``.
    - ``payload_types``: Python types that :meth:`Document.of` routes to this modality (a class attribute).
    - ``block_length``: codes per payload when fixed (an image: 1024), ``None`` when variable.

    Optional, as static methods on the class (documents are written, read and rendered without
    building the modality; see :mod:`chameleon_sdk.payloads`): ``payload_to_json(payload)`` and
    ``payload_from_json(data)`` (JSON data and back, so ``read_jsonl(write_jsonl(docs)) == docs``),
    ``render_html(payload)`` and ``render_text(payload)``. Optional on the instance:
    ``decode_partial(codes)`` (previews, cut blocks) and ``block_constraint(vocabulary)``.
    """

    codebook_size: int
    payload_types: tuple[type, ...]
    block_length: int | None

    def encode(self, payload: Any) -> torch.Tensor:
        """A 1-D LongTensor of codes in ``[0, codebook_size)``."""

    def decode(self, codes: torch.Tensor) -> Any:
        """The payload for a 1-D LongTensor of codes."""


@runtime_checkable
class BatchEncodingModality(Protocol):
    """Optional for a fixed-length modality: encode many payloads in one call (one forward pass of
    an image tokenizer instead of one per picture). :meth:`Pipeline.tokenize_batch` and the training
    data pipeline use it when a modality has it; the result must equal ``encode`` row by row."""

    def encode_batch(self, payloads: Sequence[Any]) -> torch.Tensor:
        """Codes ``[len(payloads), block_length]``."""


@runtime_checkable
class TrainableModality(Modality, Stateful, Protocol):
    """A modality whose codec can be trained from data (an image tokenizer, for example).

    Commands such as ``chameleon train-image-tokenizer`` build the modality from the registry and
    call :meth:`fit`, then :meth:`save`; they know nothing else about it.
    """

    def fit(self, data: Any, options: Any = None, *, progress: bool = True) -> dict[str, float]:
        """Train on ``data`` (a path, or a plugin-specific collection) with plugin-specific ``options``
        (a mapping of its training options, or ``None`` for the defaults); returns held-out metrics."""


@runtime_checkable
class BlockConstraint(Protocol):
    """What may follow inside an open block of one modality."""

    #: tokens a whole block takes, begin and end included (None: unknown, at least 2)
    tokens_needed: int | None

    def allowed(self, codes_emitted: torch.Tensor) -> torch.Tensor:
        """``[R, V]`` bool: allowed next tokens for ``R`` rows that emitted ``codes_emitted[r]`` codes."""


@runtime_checkable
class PartialDecodingModality(Protocol):
    """Optional for a modality: decode a block cut short (a preview while generating, a block that
    ran out of budget). Without it a cut block decodes to nothing."""

    def decode_partial(self, codes: torch.Tensor) -> Any:
        """The payload for the first ``len(codes)`` codes of a block (fewer than ``block_length``)."""


@runtime_checkable
class ConstrainingModality(Protocol):
    """Optional for a modality: its own rule for what may follow inside its open block. Without it a
    fixed-length block takes exactly ``block_length`` codes and a variable-length one codes or its end."""

    def block_constraint(self, vocabulary: Vocabulary) -> BlockConstraint:
        """The constraint for this modality's block of ``vocabulary``."""
