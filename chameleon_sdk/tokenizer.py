"""Documents <-> token ids: the text tokenizer, the modalities and the vocabulary, as one object.

:class:`MixedModalTokenizer` is what the generation stream and the training data pipeline use;
:class:`~chameleon_sdk.Pipeline` holds one and delegates to it.

Special tokens: ``tokenize`` puts ``bos`` first (``bos=True``), end-of-turn after the document only
when asked (``end_of_turn=True``, the chat form the released models were tuned on) and ``eos`` last
only when asked (``eos=True``); each text segment is encoded on its own, without special tokens;
each non-text segment becomes ``[begin] codes... [end]``. ``detokenize`` treats bos, eos, pad,
end-of-turn and other special names as structure, not content, and drops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from chameleon_sdk.config import PipelineConfig, to_dict
from chameleon_sdk.contracts.modality import BatchEncodingModality, Modality, PartialDecodingModality
from chameleon_sdk.contracts.stateful import Stateful
from chameleon_sdk.contracts.text_tokenizer import NamedTokenizer, TextTokenizer
from chameleon_sdk.document import Document, Image, Segment, Text, segment_of
from chameleon_sdk.errors import TokenizationError
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.token_names import vocabulary_from_names
from chameleon_sdk.vocabulary import SPECIAL, Vocabulary

__all__ = ["DocumentTokenizer", "MixedModalTokenizer"]

#: payloads per ``encode_batch`` call in :meth:`MixedModalTokenizer.tokenize_batch`
ENCODE_BATCH = 256


class DocumentTokenizer(Protocol):
    """What the training data pipeline needs from a tokenizer (a :class:`MixedModalTokenizer` or a
    :class:`~chameleon_sdk.Pipeline`, which delegates to its own)."""

    @property
    def vocabulary(self) -> Vocabulary: ...

    def tokenize_batch(
        self, documents: Sequence[Document | str], *, bos: bool = True, eos: bool = False
    ) -> list[list[int]]: ...

    def fingerprint(self) -> str: ...


def as_document(document: Any, where: str) -> Document:
    """``document`` as a :class:`Document` (a plain string is a one-segment document)."""
    if isinstance(document, str):
        return Document.of(document)
    if not isinstance(document, Document):
        raise TokenizationError(f"{where}: expected a Document or str, got {type(document).__name__}")
    return document


class MixedModalTokenizer:
    """A text tokenizer, the modalities and the unified vocabulary they define.

    Build it with :meth:`from_config` (the ``text_tokenizer``, ``modalities`` and ``vocabulary``
    slots of a :class:`PipelineConfig`); :meth:`save` and :meth:`load` move the components' state.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *,
        text_tokenizer: TextTokenizer,
        modalities: Mapping[str, Modality],
    ) -> None:
        self.config = config
        self.text_tokenizer = text_tokenizer
        self.modalities = dict(modalities)
        self._vocabulary: Vocabulary | None = None

    @classmethod
    def from_config(cls, config: PipelineConfig, *, registry: PluginRegistry | None = None) -> MixedModalTokenizer:
        """Build the text tokenizer and every modality that ``config`` names."""
        registry = registry or get_registry()
        spec = config.text_tokenizer
        tokenizer = registry.build("text_tokenizer", spec.name, spec.options)
        modalities = {m.name: registry.build("modality", m.name, m.options) for m in config.modalities}
        return cls(config, text_tokenizer=tokenizer, modalities=modalities)

    def train_text(self, texts: Iterable[str]) -> None:
        """Train the text tokenizer on ``texts`` (the vocabulary is rebuilt afterwards)."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
            raise TokenizationError(
                f"train_text_tokenizer: expected an iterable of strings, got {type(texts).__name__}"
            )
        self.text_tokenizer.train(texts)
        self._vocabulary = None

    # -- the vocabulary -------------------------------------------------------------------------

    @property
    def vocabulary(self) -> Vocabulary:
        """The unified vocabulary, built from the text tokenizer and the modalities' codebook sizes."""
        if self._vocabulary is None:
            self._vocabulary = self._build_vocabulary()
        return self._vocabulary

    def _build_vocabulary(self) -> Vocabulary:
        tok = self.text_tokenizer
        if not tok.is_trained:
            raise TokenizationError(
                f"text tokenizer {self.config.text_tokenizer.name!r} is not trained yet: "
                "call pipe.train_text_tokenizer(texts) or load a trained pipeline"
            )
        sizes = {name: int(m.codebook_size) for name, m in self.modalities.items()}
        lengths = {name: m.block_length for name, m in self.modalities.items()}
        layout = self.config.vocabulary
        if layout == "chameleon":
            return Vocabulary.chameleon(extra_modalities=sizes, block_lengths=lengths)
        if layout == "tokenizer":
            if not isinstance(tok, NamedTokenizer):
                raise TokenizationError(
                    f"vocabulary 'tokenizer' needs a text tokenizer that names its ids (token_ids()); "
                    f"{self.config.text_tokenizer.name!r} does not"
                )
            spec = self.config.text_tokenizer
            source = spec.options.get("path") or "its saved copy"
            where = f"text tokenizer {spec.name!r} ({source})"
            vocabulary = vocabulary_from_names(tok.token_ids(), size=tok.vocab_size, block_lengths=lengths, where=where)
            extra = {name: size for name, size in sizes.items() if name not in vocabulary.blocks}
            return vocabulary.with_modalities(extra, block_lengths=lengths) if extra else vocabulary
        return Vocabulary.appended(
            text_size=tok.vocab_size,
            bos_id=tok.bos_id,
            eos_id=tok.eos_id,
            pad_id=tok.pad_id,
            modalities=sizes,
            block_lengths=lengths,
        )

    # -- documents -> ids -----------------------------------------------------------------------

    def _modality(self, name: str) -> Modality:
        try:
            return self.modalities[name]
        except KeyError:
            raise TokenizationError(
                f"the document has a {name!r} segment but the pipeline has no {name!r} modality; "
                f"configured modalities: {sorted(self.modalities) or 'none'}"
            ) from None

    def encode_segment(self, segment: Text | Image | Segment) -> torch.Tensor:
        """Token ids of one segment (``[begin, codes..., end]`` for non-text)."""
        if not isinstance(segment, (Text, Image, Segment)):
            raise TokenizationError(f"encode_segment: expected a Text, Image or Segment, got {type(segment).__name__}")
        if isinstance(segment, Text):
            return torch.tensor(self.text_tokenizer.encode(segment.text), dtype=torch.long)
        return self._block_ids(segment.modality, self._modality(segment.modality).encode(segment.payload))

    def _block_ids(self, name: str, codes: Any) -> torch.Tensor:
        """``[begin, ids..., end]`` for one payload's codes from modality ``name``, checked."""
        modality = self.modalities[name]
        if not isinstance(codes, torch.Tensor) or codes.dim() != 1:
            raise TokenizationError(f"modality {name!r} must encode to a 1-D tensor of codes")
        if modality.block_length is not None and codes.numel() != modality.block_length:
            raise TokenizationError(
                f"modality {name!r} produced {codes.numel()} codes; its block length is {modality.block_length}"
            )
        block = self.vocabulary.block(name)
        ids = self.vocabulary.codes_to_ids(name, codes)
        return torch.cat([torch.tensor([block.begin_id]), ids, torch.tensor([block.end_id])])

    def tokenize(
        self, document: Document | str, *, bos: bool = True, eos: bool = False, end_of_turn: bool = False
    ) -> list[int]:
        """The token ids of ``document`` (a plain string is a one-segment document).

        :param end_of_turn: append the end-of-turn token after the document: the chat form of a
            prompt (``transformers``' processor does this by default).
        """
        return self._tokenize([as_document(document, "tokenize")], bos=bos, eos=eos, end_of_turn=end_of_turn)[0]

    def tokenize_batch(
        self,
        documents: Sequence[Document | str],
        *,
        bos: bool = True,
        eos: bool = False,
        end_of_turn: bool = False,
    ) -> list[list[int]]:
        """``[tokenize(d) for d in documents]``, with the payloads of a modality that has
        ``encode_batch`` (see :class:`~chameleon_sdk.plugin_api.BatchEncodingModality`) encoded
        :data:`ENCODE_BATCH` at a time instead of one by one."""
        if isinstance(documents, (str, Document)):
            raise TokenizationError("tokenize_batch: expected a sequence of documents; use tokenize() for one")
        docs = [as_document(d, f"tokenize_batch: document {i}") for i, d in enumerate(documents)]
        return self._tokenize(docs, bos=bos, eos=eos, end_of_turn=end_of_turn)

    def _tokenize(self, docs: Sequence[Document], *, bos: bool, eos: bool, end_of_turn: bool) -> list[list[int]]:
        encoded = self._encode_payloads_batched(docs)
        specials = self.vocabulary.specials
        out = []
        for i, doc in enumerate(docs):
            parts = [torch.tensor([specials["bos"]])] if bos else []
            parts += [encoded[i, j] if (i, j) in encoded else self.encode_segment(seg) for j, seg in enumerate(doc)]
            if end_of_turn:
                parts.append(torch.tensor([specials.get("eot", specials["eos"])]))
            if eos:
                parts.append(torch.tensor([specials["eos"]]))
            out.append(torch.cat(parts).tolist() if parts else [])
        return out

    def _encode_payloads_batched(self, docs: Sequence[Document]) -> dict[tuple[int, int], torch.Tensor]:
        """Block ids of every payload whose modality can encode in batches, keyed (document, segment)."""
        batchable = {
            name
            for name, modality in self.modalities.items()
            if modality.block_length is not None and isinstance(modality, BatchEncodingModality)
        }
        waiting: dict[str, list[tuple[tuple[int, int], Any]]] = {}
        for i, doc in enumerate(docs):
            for j, seg in enumerate(doc):
                if isinstance(seg, (Image, Segment)) and seg.modality in batchable:
                    waiting.setdefault(seg.modality, []).append(((i, j), seg.payload))
        encoded: dict[tuple[int, int], torch.Tensor] = {}
        for name, items in waiting.items():
            modality = self.modalities[name]
            for start in range(0, len(items), ENCODE_BATCH):
                chunk = items[start : start + ENCODE_BATCH]
                codes = modality.encode_batch([payload for _, payload in chunk])  # type: ignore[attr-defined]
                if not isinstance(codes, torch.Tensor) or codes.dim() != 2 or codes.shape[0] != len(chunk):
                    raise TokenizationError(
                        f"modality {name!r}: encode_batch of {len(chunk)} payloads must return a "
                        f"[{len(chunk)}, {modality.block_length}] tensor of codes, got "
                        f"{list(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__}"
                    )
                for (key, _), row in zip(chunk, codes):
                    encoded[key] = self._block_ids(name, row)
        return encoded

    # -- ids -> documents -----------------------------------------------------------------------

    def detokenize(self, ids: Sequence[int] | torch.Tensor, *, strict: bool = True) -> Document:
        """The document for token ids.

        With ``strict=True`` malformed structure raises :class:`TokenizationError`: a modality code
        outside its block, an end without a begin, a begin inside a block, an unterminated block.
        With ``strict=False`` stray codes and ends are dropped, codes past a fixed block length are
        cut, and a short or unterminated block is decoded by the modality's ``decode_partial`` when
        it has one, else dropped. Out-of-range ids always raise.
        """
        vocab = self.vocabulary
        ids_t = vocab._checked_ids(ids)
        if ids_t.dim() != 1:
            raise TokenizationError(
                f"detokenize: expected one sequence of ids (1-D), got shape {tuple(ids_t.shape)}; "
                "detokenize the rows of a batch one by one"
            )
        begin_of = {b.begin_id: name for name, b in vocab.blocks.items()}
        end_of = {b.end_id: name for name, b in vocab.blocks.items()}
        markers = torch.isin(ids_t, torch.tensor([*begin_of, *end_of], dtype=torch.long))
        segments: list[Text | Image | Segment] = []
        cursor, open_at, open_name = 0, -1, ""
        for pos in torch.nonzero(markers).flatten().tolist():  # loops over blocks, not tokens
            token = int(ids_t[pos])
            if token in begin_of:
                if open_at >= 0:
                    if strict:
                        raise TokenizationError(
                            f"position {pos}: begin-of-{begin_of[token]} inside an open {open_name} block"
                        )
                    continue
                segments += self._text_segments(ids_t[cursor:pos], strict, cursor)
                open_at, open_name = pos, begin_of[token]
            else:
                name = end_of[token]
                if open_at < 0 or name != open_name:
                    if strict:
                        raise TokenizationError(f"position {pos}: end-of-{name} without a matching begin")
                    continue
                block = self._decode_block(name, ids_t[open_at + 1 : pos], strict, open_at + 1)
                segments += [block] if block is not None else []
                cursor, open_at = pos + 1, -1
        if open_at >= 0:
            if strict:
                raise TokenizationError(f"position {open_at}: {open_name} block is never closed")
            segment = self._lenient_block(open_name, self._only_codes(open_name, ids_t[open_at + 1 :]), closed=False)
            segments += [segment] if segment is not None else []
        else:
            segments += self._text_segments(ids_t[cursor:], strict, cursor)
        return Document(segments)

    def _only_codes(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        return ids[self.vocabulary.code_mask(name)[ids]]

    def _decode_block(self, name: str, ids: torch.Tensor, strict: bool, offset: int) -> Text | Image | Segment | None:
        modality = self._modality(name)
        vocab = self.vocabulary
        is_code = vocab.code_mask(name)[ids]
        if not bool(is_code.all()):
            if strict:
                bad = int(torch.nonzero(~is_code).flatten()[0])
                token = int(ids[bad])
                raise TokenizationError(
                    f"position {offset + bad}: token {token} inside a {name} block is not a code of modality {name!r}"
                )
            ids = ids[is_code]
        if not strict:
            return self._lenient_block(name, ids, closed=True)
        if modality.block_length is not None and ids.numel() != modality.block_length:
            raise TokenizationError(
                f"position {offset}: {name} block has {ids.numel()} codes, expected {modality.block_length}"
            )
        return segment_of(name, modality.decode(vocab.ids_to_codes(name, ids)))

    def _lenient_block(self, name: str, ids: torch.Tensor, *, closed: bool) -> Text | Image | Segment | None:
        """A block's payload by the ``strict=False`` rules: codes past a fixed block length are cut; a
        short or unterminated block goes through ``decode_partial`` (dropped without one)."""
        modality = self.modalities.get(name)
        if modality is None:
            return None
        length = modality.block_length
        if length is not None:
            ids = ids[:length]
        codes = self.vocabulary.ids_to_codes(name, ids)
        if closed and (length is None or ids.numel() == length):
            return segment_of(name, modality.decode(codes))
        if isinstance(modality, PartialDecodingModality):
            return segment_of(name, modality.decode_partial(codes))
        return None

    def _text_segments(self, ids: torch.Tensor, strict: bool, offset: int) -> list[Text | Image | Segment]:
        kinds = self.vocabulary.modality_index[ids]
        stray = kinds >= 0
        if strict and bool(stray.any()):
            bad = int(torch.nonzero(stray).flatten()[0])
            raise TokenizationError(f"position {offset + bad}: modality code {int(ids[bad])} outside any block")
        text_ids = ids[(kinds != SPECIAL) & ~stray]
        return [Text(self.text_tokenizer.decode(text_ids.tolist()))] if text_ids.numel() else []

    # -- state ----------------------------------------------------------------------------------

    def _stateful_components(self) -> list[tuple[str, Stateful]]:
        components: list[tuple[str, Stateful]] = [("text_tokenizer", self.text_tokenizer)]
        return components + [(f"modalities/{n}", m) for n, m in self.modalities.items() if isinstance(m, Stateful)]

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the components' state into ``directory``: ``text_tokenizer/`` and ``modalities/<name>/``."""
        for name, component in self._stateful_components():
            folder = Path(directory) / name
            folder.mkdir(parents=True)
            component.save(folder)

    def load(self, directory: str | os.PathLike[str]) -> None:
        """Restore the components' state written by :meth:`save`."""
        for name, component in self._stateful_components():
            component.load(Path(directory) / name)
        self._vocabulary = None

    def fingerprint(self) -> str:
        """A hash of everything that decides token ids: config, vocabulary, tokenizer and modality state.

        It keys caches of tokenized data across training runs.
        """
        digest = hashlib.sha256()
        tokenization = {
            "text_tokenizer": to_dict(self.config.text_tokenizer),
            "modalities": to_dict(self.config.modalities),
        }
        digest.update(json.dumps([tokenization, self.vocabulary.to_json()], sort_keys=True).encode())
        with tempfile.TemporaryDirectory() as tmp:
            self.save(tmp)
            for name, _ in self._stateful_components():
                folder = Path(tmp) / name
                for file in sorted(folder.rglob("*")):
                    if file.is_file():
                        digest.update(f"{name}/{file.relative_to(folder)}".encode())
                        digest.update(file.read_bytes())
        return digest.hexdigest()

    def __repr__(self) -> str:
        mods = ", ".join(self.modalities) or "none"
        return f"MixedModalTokenizer(text_tokenizer={self.config.text_tokenizer.name!r}, modalities=[{mods}])"
