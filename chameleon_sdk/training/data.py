"""Training data: JSONL sources -> token caches -> packed rows -> batches for any step.

- Each source is a JSONL file of documents (``docs/formats.md``). Documents are tokenized through
  the pipeline once and cached on disk (``.npz``: flat tokens, document offsets, loss mask), keyed
  by the source file and the pipeline's tokenizer/modality fingerprint, so every image is
  VQ-encoded once.
- Text-image pairs (exactly one text and one image segment) are rotated so that every other pair
  puts the image first (captioning), as in the paper.
- SFT sources: each line holds a conversation (``{"turns": [...]}``, :mod:`chameleon_sdk.training.chat`)
  or a ``prompt`` and an ``answer`` document (a one-exchange conversation); only the assistant's
  tokens and the token closing each of its turns count in the loss.
- Packing: documents are laid into rows of ``seq_len + 1`` tokens without splitting a document that
  fits (the rest of the row is padding, masked); longer documents are split across rows. Each row
  carries document ids, so attention stays inside documents and positions restart per document.
- Mixture: each row of a batch picks a source by weight. Stage 1 covers the first
  ``1 - stage2_fraction`` of the steps; stage 2 multiplies stage-1 weights by ``stage2_downweight``
  and adds the ``stage2`` sources. ``batch_at(step)`` is a pure function of (seed, step), so a
  resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch

from chameleon_sdk.config import check_types, from_dict, typed
from chameleon_sdk.document import Document, Text, jsonl_lines, parse_json_line
from chameleon_sdk.errors import ChameleonError, ConfigError, DocumentError
from chameleon_sdk.storage.atomic_files import atomic_write_bytes
from chameleon_sdk.training.chat import Conversation, chat_tokens
from chameleon_sdk.validation import check_number

if TYPE_CHECKING:
    from chameleon_sdk.tokenizer import DocumentTokenizer

__all__ = ["Batch", "DataConfig", "MixtureData", "PackedSource", "SourceConfig", "iter_records"]

IGNORE = -100
#: records tokenized together (their pictures go through the image tokenizer in batches)
TOKENIZE_CHUNK = 256


def _weight(instance: object, attribute: attrs.Attribute, value: float) -> None:
    typed(instance, attribute, value)
    check_number(value, f"{type(instance).__name__}.{attribute.name}", low=0)


@attrs.frozen(kw_only=True)
class SourceConfig:
    """One JSONL source of documents.

    :param path: the JSONL file (relative paths are resolved against the config file's folder).
    :param weight: mixture weight.
    :param stage2: only mixed in during stage 2 (the higher-quality data).
    :param sft: supervised fine-tuning data: every line is a conversation ``{"turns": [...]}`` or
        ``{"prompt": DOCUMENT, "answer": DOCUMENT}``; only the assistant's tokens count in the loss.
    """

    path: str = attrs.field(validator=typed)
    weight: float = attrs.field(default=1.0, validator=_weight)
    stage2: bool = attrs.field(default=False, validator=typed)
    sft: bool = attrs.field(default=False, validator=typed)


def _sources(value: Any) -> tuple[SourceConfig, ...]:
    if isinstance(value, (SourceConfig, Mapping)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"DataConfig.sources: expected a list of sources ({{path, weight, ...}}), got {value!r}")
    return tuple(
        v if isinstance(v, SourceConfig) else from_dict(SourceConfig, v, where=f"DataConfig.sources[{i}]")
        for i, v in enumerate(value)
    )


@attrs.frozen(kw_only=True)
class DataConfig:
    """Where training data comes from and how it is packed and mixed."""

    sources: tuple[SourceConfig, ...] = attrs.field(converter=_sources)
    seq_len: int = 512
    batch_size: int = 8
    stage2_fraction: float = 0.2
    stage2_downweight: float = 0.5
    rotate_pairs: bool = True
    skip_bad_records: bool = False
    cache_dir: str | None = None
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        check_types(self)
        if not self.sources:
            raise ConfigError("DataConfig.sources: at least one source is needed")
        if self.seq_len < 2 or self.batch_size < 1:
            raise ConfigError(
                f"DataConfig: seq_len must be >= 2 and batch_size >= 1, got {self.seq_len}, {self.batch_size}"
            )
        check_number(self.stage2_fraction, "DataConfig.stage2_fraction", low=0, high=1, high_open=True)
        check_number(self.stage2_downweight, "DataConfig.stage2_downweight", low=0)


@attrs.frozen
class Batch:
    """One training batch. ``targets`` holds the next token, or -100 where the loss ignores it."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    document_ids: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """Tokens that count in the loss."""
        return int((self.targets != IGNORE).sum())


def iter_records(path: Path, *, skip_bad_records: bool, counters: dict[str, int]) -> Iterator[Document | Conversation]:
    """A document, or a conversation for SFT lines (``turns``, or ``prompt`` and ``answer``), per
    JSONL line; bad lines raise naming file and line, or are counted in ``counters["skipped_records"]``."""
    for where, line in jsonl_lines(path, what="training data"):
        try:
            record = _record(parse_json_line(where, line), path.parent, where)
        except ChameleonError:
            if not skip_bad_records:
                raise
            counters["skipped_records"] = counters.get("skipped_records", 0) + 1
            continue
        yield record


def _record(data: Any, base_dir: Path, where: str) -> Document | Conversation:
    if isinstance(data, dict) and set(data) == {"prompt", "answer"}:
        prompt = Document.from_json(data["prompt"], base_dir=base_dir, where=f"{where} prompt")
        answer = Document.from_json(data["answer"], base_dir=base_dir, where=f"{where} answer")
        try:
            return Conversation.from_prompt_answer(prompt, answer)
        except DocumentError as exc:
            raise DocumentError(f"{where}: {exc}") from exc
    if isinstance(data, dict) and "turns" in data:
        return Conversation.from_json(data, base_dir=base_dir, where=where)
    return Document.from_json(data, base_dir=base_dir, where=where)


def _read_token_cache(cache: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """(tokens, offsets, mask, skipped records) from a token cache; None, with a warning naming the
    file (which is then removed, to be rebuilt), when it is damaged or inconsistent."""
    try:
        with np.load(cache, allow_pickle=False) as data:
            tokens, offsets, mask = data["tokens"], data["offsets"], data["mask"]
            skipped = int(data["skipped"])
        consistent = (
            tokens.ndim == offsets.ndim == mask.ndim == 1
            and tokens.dtype == np.int32
            and offsets.dtype == np.int64
            and len(mask) == len(tokens)
            and len(offsets) >= 1
            and offsets[0] == 0
            and offsets[-1] == len(tokens)
            and bool((np.diff(offsets) >= 0).all())
            and skipped >= 0
        )
        if consistent:
            return tokens, offsets, mask, skipped
        problem = "its arrays do not fit together"
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"token cache {str(cache)!r} is damaged ({problem}); rebuilding it", stacklevel=3)
    cache.unlink(missing_ok=True)
    return None


def _is_pair(doc: Document) -> bool:
    """A text segment and one segment of another modality (a caption and its image), in either order."""
    return len(doc) == 2 and sum(isinstance(s, Text) for s in doc) == 1


def _tokens_of(
    pipe: DocumentTokenizer, records: Sequence[Document | Conversation]
) -> list[tuple[list[int], list[int]]]:
    """Token ids of each record and a 0/1 loss mask over them: a document is ``[bos] ... [eos]``,
    all counted; a conversation is tokenized by :func:`~chameleon_sdk.training.chat.chat_tokens`.
    Payloads are encoded in batches (:meth:`MixedModalTokenizer.tokenize_batch`)."""
    documents = [r for r in records if isinstance(r, Document)]
    plain = iter(pipe.tokenize_batch(documents, bos=True, eos=True) if documents else [])
    chats = iter(chat_tokens(pipe, [r for r in records if isinstance(r, Conversation)]))
    out = []
    for record in records:
        if isinstance(record, Document):
            ids = next(plain)
            out.append((ids, [1] * len(ids)))
        else:
            out.append(next(chats))
    return out


class PackedSource:
    """One source's documents, tokenized (and cached), packed into rows of ``seq_len + 1`` tokens."""

    def __init__(
        self, pipe: DocumentTokenizer, source: SourceConfig, config: DataConfig, *, base_dir: Path | None = None
    ) -> None:
        self.source = source
        path = Path(source.path)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        self.path = path
        self.counters: dict[str, int] = {}
        tokens, offsets, mask = self._load_or_tokenize(pipe, config)
        self.rows, self.row_docs, self.row_mask = self._pack(tokens, offsets, mask, config.seq_len + 1, pipe)
        if len(self.rows) == 0:
            raise DocumentError(f"training source {str(path)!r} has no usable documents")

    def _cache_file(self, pipe: DocumentTokenizer, config: DataConfig) -> Path | None:
        if config.cache_dir is None:
            return None
        stat = self.path.stat()
        key = hashlib.sha256(
            json.dumps(
                [
                    str(self.path.resolve()),
                    stat.st_size,
                    stat.st_mtime_ns,
                    pipe.fingerprint(),
                    config.rotate_pairs,
                    self.source.sft,
                ]
            ).encode()
        ).hexdigest()[:24]
        return Path(config.cache_dir) / f"{self.path.stem}-{key}.npz"

    def _load_or_tokenize(
        self, pipe: DocumentTokenizer, config: DataConfig
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cache = self._cache_file(pipe, config)
        if cache is not None and cache.is_file():
            cached = _read_token_cache(cache)
            if cached is not None:
                self.counters["skipped_records"] = cached[3]
                return cached[:3]
        flat: list[int] = []
        mask: list[int] = []
        offsets = [0]
        pairs = 0
        records = iter_records(self.path, skip_bad_records=config.skip_bad_records, counters=self.counters)
        while chunk := list(itertools.islice(records, TOKENIZE_CHUNK)):
            checked = []
            for record in chunk:
                if self.source.sft and not isinstance(record, Conversation):
                    raise DocumentError(
                        f"{self.path}: every line of an SFT source needs 'turns' (a conversation) "
                        "or 'prompt' and 'answer'"
                    )
                if isinstance(record, Conversation) and not self.source.sft:
                    raise DocumentError(
                        f"{self.path}: conversation and prompt/answer lines need a source with sft = true"
                    )
                if config.rotate_pairs and isinstance(record, Document) and _is_pair(record):
                    if pairs % 2 == 1:  # every other pair is flipped: image first (captioning) or text first
                        record = Document(record.segments[::-1])
                    pairs += 1
                checked.append(record)
            for ids, m in _tokens_of(pipe, checked):
                flat += ids
                mask += m
                offsets.append(len(flat))
        arrays = (
            np.asarray(flat, dtype=np.int32),
            np.asarray(offsets, dtype=np.int64),
            np.asarray(mask, dtype=np.uint8),
        )
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            skipped = self.counters.get("skipped_records", 0)
            np.savez(buffer, tokens=arrays[0], offsets=arrays[1], mask=arrays[2], skipped=skipped)
            atomic_write_bytes(cache, buffer.getvalue())
        return arrays

    @staticmethod
    def _pack(
        tokens: np.ndarray, offsets: np.ndarray, mask: np.ndarray, width: int, pipe: DocumentTokenizer
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pad = pipe.vocabulary.specials["pad"]
        rows: list[np.ndarray] = []
        docs: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        row = np.full(width, pad, dtype=np.int64)
        row_doc = np.full(width, -1, dtype=np.int64)
        row_mask = np.zeros(width, dtype=np.uint8)
        fill, doc_count = 0, 0

        def flush() -> None:
            nonlocal row, row_doc, row_mask, fill, doc_count
            if fill:
                rows.append(row)
                docs.append(row_doc)
                masks.append(row_mask)
            row = np.full(width, pad, dtype=np.int64)
            row_doc = np.full(width, -1, dtype=np.int64)
            row_mask = np.zeros(width, dtype=np.uint8)
            fill, doc_count = 0, 0

        for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):  # over documents, not tokens
            if end - start <= width and fill + (end - start) > width:
                flush()  # a document that fits in a row is never split
            pos = start
            while pos < end:
                take = min(end - pos, width - fill)
                row[fill : fill + take] = tokens[pos : pos + take]
                row_doc[fill : fill + take] = doc_count
                row_mask[fill : fill + take] = mask[pos : pos + take]
                fill, pos = fill + take, pos + take
                if fill == width:
                    flush()  # a longer document continues in the next row as a new document
            doc_count += 1
        flush()
        if not rows:
            return (
                torch.empty(0, width, dtype=torch.long),
                torch.empty(0, width, dtype=torch.long),
                torch.empty(0, width, dtype=torch.bool),
            )
        return (
            torch.from_numpy(np.stack(rows)),
            torch.from_numpy(np.stack(docs)),
            torch.from_numpy(np.stack(masks)).bool(),
        )

    def __len__(self) -> int:
        return len(self.rows)


class MixtureData:
    """Batches for any step from weighted, staged sources (see the module docstring)."""

    def __init__(
        self, pipe: DocumentTokenizer, config: DataConfig, *, total_steps: int, base_dir: Path | None = None
    ) -> None:
        self.config = config
        self.total_steps = total_steps
        self.sources = [PackedSource(pipe, s, config, base_dir=base_dir) for s in config.sources]
        stage1 = torch.tensor([0.0 if s.stage2 else s.weight for s in config.sources])
        stage2 = torch.tensor([s.weight if s.stage2 else s.weight * config.stage2_downweight for s in config.sources])
        if stage1.sum() <= 0:
            raise ConfigError("DataConfig.sources: the stage-1 weights sum to zero")
        self.weights = (stage1 / stage1.sum(), stage2 / stage2.sum() if stage2.sum() > 0 else stage1 / stage1.sum())
        self.stage2_start = round(total_steps * (1.0 - config.stage2_fraction))

    @property
    def counters(self) -> dict[str, Any]:
        return {"skipped_records": sum(s.counters.get("skipped_records", 0) for s in self.sources)}

    def stage(self, step: int) -> int:
        return 2 if step >= self.stage2_start and self.config.stage2_fraction > 0 else 1

    def batch_at(self, step: int, micro: int = 0) -> Batch:
        """Micro-batch ``micro`` of optimizer step ``step``: a pure function of (seed, step, micro)."""
        # modulo 2**63: a 64-bit seed would overflow manual_seed (non-negative seeds below it are unchanged)
        generator = torch.Generator().manual_seed(((self.config.seed * 1_000_003 + step) * 1009 + micro) % 2**63)
        weights = self.weights[self.stage(step) - 1]
        picks = torch.multinomial(weights, self.config.batch_size, replacement=True, generator=generator)
        rows, docs, masks = [], [], []
        for source_index in picks.tolist():  # a loop over the batch's rows
            source = self.sources[source_index]
            i = int(torch.randint(len(source), (1,), generator=generator))
            rows.append(source.rows[i])
            docs.append(source.row_docs[i])
            masks.append(source.row_mask[i])
        row, doc, mask = torch.stack(rows), torch.stack(docs), torch.stack(masks)
        inputs, targets = row[:, :-1], row[:, 1:].clone()
        # a target counts when it is a real token of the same document and its mask says so
        counts = (doc[:, 1:] == doc[:, :-1]) & (doc[:, 1:] >= 0) & mask[:, 1:]
        targets[~counts] = IGNORE
        document_ids = doc[:, :-1].clone()
        document_ids[document_ids < 0] = document_ids.max() + 1  # padding: a document of its own
        return Batch(input_ids=inputs.contiguous(), targets=targets, document_ids=document_ids.contiguous())
