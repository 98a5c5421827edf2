"""The released checkpoints' text tokenizer: a Hugging Face ``tokenizers`` JSON file, as it is.

``tokenizer.json`` in the Hugging Face folder and ``tokenizer/text_tokenizer.json`` in Meta's
download are the same kind of file: a byte-level BPE whose pre-tokenizer splits digits,
punctuation and whitespace runs, with special tokens (``<s>``, ``<racm3:break>``, ``<reserved…>``)
that text never splits. The ``tokenizers`` library runs it, so ids equal ``transformers``' tokenizer
for the same file. The plugin adds no bos or eos of its own (the pipeline places them) and cannot be
trained: the ids are the checkpoint's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs

from chameleon_sdk import TokenizationError
from chameleon_sdk.plugin_api import read_bounded

FILE_NAME = "tokenizer.json"
#: larger than any released tokenizer file (the Chameleon one is about 2 MB), small enough to refuse junk
MAX_FILE_BYTES = 256 * 2**20


@attrs.frozen(kw_only=True)
class BPEOptions:
    """Options of the ``bpe`` text tokenizer.

    :param path: the ``tokenizers`` JSON file to read (``tokenizer.json``, ``text_tokenizer.json``);
        a pipeline saved with this tokenizer keeps a copy, so loading it needs no path.
    :param bos_token: the name of the begin-of-sequence token in that file.
    :param eos_token: the name of the end-of-sequence token.
    :param pad_token: the name of the padding token.
    """

    path: str | None = None
    bos_token: str = "<s>"
    eos_token: str = "</s>"
    pad_token: str = "<pad>"


def _read_tokenizer(path: Path):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer

    raw = read_bounded(path, limit=MAX_FILE_BYTES, what="text tokenizer file", error=TokenizationError)
    try:
        return Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as exc:  # OSError, UnicodeDecodeError, and tokenizers' plain Exception for bad JSON
        raise TokenizationError(
            f"text tokenizer file {str(path)!r} is not a readable tokenizers JSON file: {str(exc)[:200]}"
        ) from exc


class BPETokenizer:
    """A ``tokenizers`` JSON file (the released byte-level BPE) as a text tokenizer."""

    def __init__(self, options: BPEOptions | None = None) -> None:
        self.options = options or BPEOptions()
        self._tok = None
        self._ids: dict[str, int] = {}
        if self.options.path is not None:
            self._use(Path(self.options.path))

    def _use(self, path: Path) -> None:
        tok = _read_tokenizer(path)
        ids = tok.get_vocab(with_added_tokens=True)
        for role in ("bos_token", "eos_token", "pad_token"):
            name = getattr(self.options, role)
            if name not in ids:
                raise TokenizationError(
                    f"text tokenizer file {str(path)!r} has no token {name!r} (option {role}); "
                    "set the option to the name the file uses"
                )
        self._tok, self._ids = tok, ids

    def _ready(self):  # -> tokenizers.Tokenizer
        if self._tok is None:
            raise TokenizationError("bpe text tokenizer: no tokenizer file loaded (option path, or load a pipeline)")
        return self._tok

    # -- TextTokenizer ----------------------------------------------------------------------------

    @property
    def is_trained(self) -> bool:
        return self._tok is not None

    @property
    def vocab_size(self) -> int:
        return int(self._ready().get_vocab_size(with_added_tokens=True))

    @property
    def bos_id(self) -> int:
        self._ready()
        return self._ids[self.options.bos_token]

    @property
    def eos_id(self) -> int:
        self._ready()
        return self._ids[self.options.eos_token]

    @property
    def pad_id(self) -> int:
        self._ready()
        return self._ids[self.options.pad_token]

    def train(self, texts: Iterable[str]) -> None:
        raise TokenizationError(
            "the bpe text tokenizer reads a released tokenizer file and cannot be trained: its ids are the "
            "checkpoint's. Train a 'sentencepiece' tokenizer for a model of your own"
        )

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TokenizationError(f"bpe text tokenizer: expected a str, got {type(text).__name__}")
        return list(self._ready().encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._ready().decode(list(ids), skip_special_tokens=False))

    def token_ids(self) -> dict[str, int]:
        """Every token name in the file and its id (the ``NamedTokenizer`` contract)."""
        self._ready()
        return dict(self._ids)

    # -- Stateful ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str]) -> None:
        self._ready().save(str(Path(directory) / FILE_NAME))

    def load(self, directory: str | os.PathLike[str]) -> None:
        self._use(Path(directory) / FILE_NAME)

    def __repr__(self) -> str:
        size = self.vocab_size if self._tok is not None else "not loaded"
        return f"BPETokenizer(vocab_size={size})"
