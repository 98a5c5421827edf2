"""The contracts plugins implement, as ``typing.Protocol`` classes.

A plugin never subclasses these; it only has to provide the listed members (structural typing).
They document what the core calls and let type checkers verify a plugin.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "BatchEncodingModality",
    "Modality",
    "NamedTokenizer",
    "Quantization",
    "Stateful",
    "TextTokenizer",
    "TrainableModality",
]


@runtime_checkable
class Stateful(Protocol):
    """A component with learned state that the pipeline saves next to its config."""

    def save(self, directory: Path) -> None:
        """Write the component's state files into ``directory`` (which exists and is empty)."""

    def load(self, directory: Path) -> None:
        """Restore state written by :meth:`save`."""


@runtime_checkable
class TextTokenizer(Stateful, Protocol):
    """Strings <-> text ids. Built by a ``register_text_tokenizers`` plugin.

    Text ids are ``[0, vocab_size)`` and include the tokenizer's own bos/eos/pad ids; the
    :class:`~chameleon_sdk.Vocabulary` places modality blocks around them.
    """

    @property
    def vocab_size(self) -> int: ...

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def is_trained(self) -> bool: ...

    def train(self, texts: Iterable[str]) -> None:
        """Fit the tokenizer on an iterator of strings."""

    def encode(self, text: str) -> list[int]:
        """Text ids for ``text``, without bos/eos."""

    def decode(self, ids: Sequence[int]) -> str:
        """The string for text ids (control ids decode to nothing)."""


@runtime_checkable
class NamedTokenizer(Protocol):
    """Optional for a text tokenizer whose file names every id of the model's vocabulary (the released
    ``tokenizer.json``: text, image codes ``IMGIMG...`` and special names alike). A pipeline with
    ``vocabulary="tokenizer"`` builds its :class:`~chameleon_sdk.Vocabulary` from these names
    (:meth:`~chameleon_sdk.Vocabulary.from_token_names`)."""

    def token_ids(self) -> dict[str, int]:
        """Every token name and its id."""


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
class Quantization(Protocol):
    """A weight format for inference (kind ``quantization``), applied to a loaded model.

    :func:`chameleon_sdk.quantize_model` (and ``load_model(..., quantize=...)``) calls it once per
    model, on the device the model will run on, in eval mode.
    """

    def quantize(self, model: torch.nn.Module) -> torch.nn.Module:
        """Rewrite ``model``'s weights (in place or not) and return the model to use. The result
        takes the same inputs and returns logits of the same shape and dtype as before."""
