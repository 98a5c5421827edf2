"""A byte-fallback BPE tokenizer on sentencepiece that round-trips every Unicode string.

Choices, and why:

- ``normalization_rule_name="identity"``, ``add_dummy_prefix=False``,
  ``remove_extra_whitespaces=False``: no NFKC, no added or collapsed spaces, so
  ``decode(encode(s)) == s`` for every string, and text segments concatenate exactly.
- ``byte_fallback=True``: a character never seen in training becomes its UTF-8 bytes, never ``<unk>``.
- Ids 0/1/2/3 are ``<s>``/``<pad>``/``</s>``/``<unk>``, as in Chameleon's released vocabulary.
- Special tokens are *control* symbols: they have fixed ids but are never produced from input text,
  so user text can never forge one (the structural tokens bos/eos/eot/begin/end live in the
  :class:`Vocabulary`, outside the text range). Strings that must always be
  one piece (tags, emoji you care about) go in ``user_defined_symbols``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import sentencepiece as spm

from chameleon_sdk import ConfigError, TokenizationError
from chameleon_sdk.plugin_api import foreign_errors

MODEL_FILE = "sentencepiece.model"


@attrs.frozen(kw_only=True)
class SentencePieceOptions:
    """Options of the ``sentencepiece`` text tokenizer.

    :param vocab_size: target number of text ids (an upper bound when the corpus is small).
    :param model_file: a trained ``.model`` file to load instead of training.
    :param character_coverage: share of characters given their own pieces (the rest use bytes).
    :param control_symbols: extra special tokens with fixed ids that text never produces.
    :param user_defined_symbols: strings always kept as one piece when they occur in text.
    :param max_sentence_length: longest training string in bytes (longer ones are skipped).
    :param input_sentence_size: train on a random sample of this many strings (0: all of them).
    :param num_threads: trainer threads.
    """

    vocab_size: int = attrs.field(default=8000)
    model_file: str | None = None
    character_coverage: float = attrs.field(default=0.9995)
    control_symbols: tuple[str, ...] = ()
    user_defined_symbols: tuple[str, ...] = ()
    max_sentence_length: int = 16384
    input_sentence_size: int = 0
    num_threads: int = 2

    @character_coverage.validator
    def _check_coverage(self, attribute: attrs.Attribute, value: float) -> None:
        if not 0.98 <= value <= 1.0:  # sentencepiece's own bounds
            raise ConfigError(f"sentencepiece option character_coverage must be in [0.98, 1.0], got {value}")

    @vocab_size.validator
    def _check_vocab(self, attribute: attrs.Attribute, value: int) -> None:
        # 4 specials + 256 byte pieces are always present.
        if value < 261 + len(self.control_symbols) + len(self.user_defined_symbols):
            raise ConfigError(
                f"sentencepiece option vocab_size must be at least 261 plus the special symbols "
                f"(256 byte pieces + 4 specials + 1), got {value}"
            )


_REQUIRED_CHARS = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _training_error(message: str, options: SentencePieceOptions) -> str:
    """sentencepiece's message, restated in this plugin's option names where it names its own flags."""
    found = _REQUIRED_CHARS.search(message)
    if found is None:
        return f"sentencepiece training failed: {message}"
    needed = int(found[2])
    return (
        f"sentencepiece option vocab_size={options.vocab_size} is too small for this corpus: it needs {needed} pieces "
        f"(each character that character_coverage={options.character_coverage} keeps, 256 byte pieces and the special "
        f"symbols). Set vocab_size to at least {needed + 1}, or lower character_coverage (down to 0.98; rarer "
        f"characters then fall back to UTF-8 bytes)"
    )


class SentencePieceTokenizer:
    """Byte-fallback BPE text tokenizer (sentencepiece); every string round-trips."""

    def __init__(self, options: SentencePieceOptions | None = None) -> None:
        self.options = options or SentencePieceOptions()
        self._proto: bytes | None = None
        self._sp: spm.SentencePieceProcessor | None = None
        if self.options.model_file is not None:
            self._load_model_file(Path(self.options.model_file))

    # -- training and persistence ---------------------------------------------------------------

    def train(self, texts: Iterable[str]) -> None:
        """Train a BPE model on ``texts`` (an iterator of strings; each is one training sentence)."""
        options = self.options

        def sentences() -> Iterable[str]:
            for i, text in enumerate(texts):
                if not isinstance(text, str):
                    raise TokenizationError(f"training text {i} is a {type(text).__name__}, expected str")
                if text:
                    yield text

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences()),
                model_writer=buffer,
                model_type="bpe",
                vocab_size=options.vocab_size,
                hard_vocab_limit=False,
                byte_fallback=True,
                character_coverage=options.character_coverage,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                split_digits=True,
                bos_id=0,
                pad_id=1,
                eos_id=2,
                unk_id=3,
                control_symbols=list(options.control_symbols),
                user_defined_symbols=list(options.user_defined_symbols),
                max_sentence_length=options.max_sentence_length,
                input_sentence_size=options.input_sentence_size,
                shuffle_input_sentence=True,
                num_threads=options.num_threads,
                minloglevel=2,
            )
        except RuntimeError as exc:
            raise TokenizationError(_training_error(str(exc), options)) from exc
        self._set_proto(buffer.getvalue())

    def _set_proto(self, proto: bytes) -> None:
        processor = spm.SentencePieceProcessor()
        try:
            processor.LoadFromSerializedProto(proto)
        except (RuntimeError, OSError) as exc:
            raise TokenizationError(f"not a sentencepiece model: {exc}") from exc
        self._proto, self._sp = proto, processor

    def _load_model_file(self, path: Path) -> None:
        try:
            proto = path.read_bytes()
        except OSError as exc:
            raise TokenizationError(f"cannot read sentencepiece model {str(path)!r}: {exc.strerror}") from exc
        try:
            self._set_proto(proto)
        except TokenizationError as exc:
            raise TokenizationError(f"{str(path)!r}: {exc}") from exc

    def save(self, directory: Path) -> None:
        """Write ``sentencepiece.model`` into ``directory`` (atomically)."""
        proto = self._require()[1]
        target = Path(directory) / MODEL_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(proto)
        os.replace(tmp, target)

    def load(self, directory: Path) -> None:
        """Load ``sentencepiece.model`` from ``directory``."""
        self._load_model_file(Path(directory) / MODEL_FILE)

    # -- the TextTokenizer contract -------------------------------------------------------------

    def _require(self) -> tuple[spm.SentencePieceProcessor, bytes]:
        if self._sp is None or self._proto is None:
            raise TokenizationError("the sentencepiece tokenizer is not trained: call train(texts) or set model_file")
        return self._sp, self._proto

    @property
    def is_trained(self) -> bool:
        return self._sp is not None

    @property
    def vocab_size(self) -> int:
        return self._require()[0].get_piece_size()

    @property
    def bos_id(self) -> int:
        return self._require()[0].bos_id()

    @property
    def eos_id(self) -> int:
        return self._require()[0].eos_id()

    @property
    def pad_id(self) -> int:
        return self._require()[0].pad_id()

    def piece_id(self, piece: str) -> int:
        """The id of a piece such as a control symbol; :class:`TokenizationError` if absent."""
        sp = self._require()[0]
        i = sp.piece_to_id(piece)
        if i == sp.unk_id() and piece != sp.id_to_piece(sp.unk_id()):
            raise TokenizationError(f"piece {piece!r} is not in the sentencepiece vocabulary")
        return i

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TokenizationError(f"encode: expected str, got {type(text).__name__}")
        with foreign_errors("text to encode", TokenizationError):
            text.encode("utf-8")  # a lone surrogate: sentencepiece would raise a bare RuntimeError
        return self._require()[0].encode(text, out_type=int)

    def decode(self, ids: Sequence[int]) -> str:
        sp = self._require()[0]
        ids = list(ids)
        size = sp.get_piece_size()
        try:
            if ids and (min(ids) < 0 or max(ids) >= size):
                bad = next(i for i in ids if not 0 <= i < size)
                raise TokenizationError(f"decode: text id {bad!r} is outside [0, {size})")
            return sp.decode(ids)
        except TypeError as exc:
            raise TokenizationError(f"decode: text ids must be integers: {exc}") from exc
