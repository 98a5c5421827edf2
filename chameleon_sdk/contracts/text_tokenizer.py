"""Kind ``text_tokenizer``: strings <-> text ids."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from chameleon_sdk.contracts.stateful import Stateful

__all__ = ["NamedTokenizer", "TextTokenizer"]


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
