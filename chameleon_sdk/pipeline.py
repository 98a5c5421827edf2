"""The composable Pipeline: named plugins + configs -> one working system.

``Pipeline.from_config(cfg)`` builds each component from the registry by name. The pipeline turns
:class:`Document` values into token ids and back through the text tokenizer, the modality plugins
and the :class:`Vocabulary`.

Special tokens: ``tokenize`` puts ``bos`` first (``bos=True``) and ``eos`` last only when asked
(``eos=True``); each non-text segment becomes ``[begin] codes... [end]``. ``detokenize`` treats
bos, eos, pad and end-of-turn as structure, not content, and drops them.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import attrs
import torch

from chameleon_sdk.checkpoint import load_model, read_json, save_model, staging_directory, verify_manifest
from chameleon_sdk.config import PipelineConfig, from_dict, load_config, to_dict
from chameleon_sdk.document import Document, Image, Segment, Text, segment_of
from chameleon_sdk.errors import CheckpointError, ConfigError, TokenizationError
from chameleon_sdk.generation.events import GenerationEvent
from chameleon_sdk.generation.stream import check_options, generate_documents, stream_documents
from chameleon_sdk.model import ChameleonModel
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.protocols import BatchEncodingModality, Modality, Stateful, TextTokenizer
from chameleon_sdk.training.contracts import BatchSource, TrainResult, is_main_process
from chameleon_sdk.training.data import DataConfig, MixtureData
from chameleon_sdk.vocabulary import SPECIAL, Vocabulary

__all__ = ["Pipeline"]

PIPELINE_FILE = "pipeline.json"
FORMAT_VERSION = 1
#: payloads per ``encode_batch`` call in :meth:`Pipeline.tokenize_batch`
ENCODE_BATCH = 256


def _as_document(document: Any, where: str) -> Document:
    if isinstance(document, str):
        return Document.of(document)
    if not isinstance(document, Document):
        raise TokenizationError(f"{where}: expected a Document or str, got {type(document).__name__}")
    return document


class Pipeline:
    """Tokenizers, modalities and the vocabulary, assembled from a :class:`PipelineConfig`."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        text_tokenizer: TextTokenizer,
        modalities: Mapping[str, Modality],
        registry: PluginRegistry | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        self.config = config
        self.text_tokenizer = text_tokenizer
        self.modalities = dict(modalities)
        self.registry = registry or get_registry()
        self.model = model  #: the transformer used by :meth:`generate` and :meth:`stream`
        self._vocabulary: Vocabulary | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | Mapping[str, Any] | str | os.PathLike[str],
        *,
        registry: PluginRegistry | None = None,
    ) -> Pipeline:
        """Build every component named in ``config`` (an object, a mapping, or a .json/.toml path)."""
        if isinstance(config, (str, os.PathLike)):
            config = load_config(config)
        elif isinstance(config, Mapping):
            config = from_dict(PipelineConfig, config)
        elif not isinstance(config, PipelineConfig):
            raise ConfigError(f"Pipeline.from_config: expected a PipelineConfig, mapping or path, got {config!r}")
        registry = registry or get_registry()
        spec = config.text_tokenizer
        tokenizer = registry.build("text_tokenizer", spec.name, spec.options)
        modalities = {m.name: registry.build("modality", m.name, m.options) for m in config.modalities}
        return cls(config, text_tokenizer=tokenizer, modalities=modalities, registry=registry)

    def train_text_tokenizer(self, texts: Iterable[str]) -> None:
        """Train the text tokenizer on ``texts`` (the vocabulary is rebuilt afterwards)."""
        if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
            raise TokenizationError(
                f"train_text_tokenizer: expected an iterable of strings, got {type(texts).__name__}"
            )
        self.text_tokenizer.train(texts)
        self._vocabulary = None

    @property
    def vocabulary(self) -> Vocabulary:
        """The unified vocabulary, built from the tokenizer and the modalities' codebook sizes."""
        if self._vocabulary is None:
            tok = self.text_tokenizer
            if not tok.is_trained:
                raise TokenizationError(
                    f"text tokenizer {self.config.text_tokenizer.name!r} is not trained yet: "
                    "call pipe.train_text_tokenizer(texts) or load a trained pipeline"
                )
            sizes = {name: int(m.codebook_size) for name, m in self.modalities.items()}
            lengths = {name: m.block_length for name, m in self.modalities.items()}
            if self.config.vocabulary == "chameleon":
                self._vocabulary = Vocabulary.chameleon(extra_modalities=sizes, block_lengths=lengths)
            else:
                self._vocabulary = Vocabulary.appended(
                    text_size=tok.vocab_size,
                    bos_id=tok.bos_id,
                    eos_id=tok.eos_id,
                    pad_id=tok.pad_id,
                    modalities=sizes,
                    block_lengths=lengths,
                )
        return self._vocabulary

    def build_model(self) -> ChameleonModel:
        """A freshly initialised :class:`ChameleonModel` from ``config.model``, ``config.attention`` and
        ``config.stability``; ``vocab_size=None`` is filled from :attr:`vocabulary` (a larger, padded
        vocab_size is kept; a smaller one is a :class:`ConfigError`)."""
        model_config = self.config.model
        if model_config is None:
            raise ConfigError("Pipeline.build_model: the pipeline config has no 'model' section")
        size = self.vocabulary.size
        if model_config.vocab_size is None:
            model_config = attrs.evolve(model_config, vocab_size=size)
        elif model_config.vocab_size < size:
            raise ConfigError(
                f"Pipeline.build_model: model.vocab_size ({model_config.vocab_size}) is smaller than the "
                f"vocabulary ({size} ids); set it to None or >= {size}"
            )
        model = ChameleonModel(
            model_config, attention=self.config.attention, stability=self.config.stability, registry=self.registry
        )
        model.vocabulary = self.vocabulary
        return model

    # -- documents <-> ids ----------------------------------------------------------------------

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

    def tokenize(self, document: Document | str, *, bos: bool = True, eos: bool = False) -> list[int]:
        """The token ids of ``document`` (a plain string is a one-segment document)."""
        return self._tokenize([_as_document(document, "tokenize")], bos=bos, eos=eos)[0]

    def tokenize_batch(
        self, documents: Sequence[Document | str], *, bos: bool = True, eos: bool = False
    ) -> list[list[int]]:
        """``[tokenize(d) for d in documents]``, with the payloads of a modality that has
        ``encode_batch`` (see :class:`~chameleon_sdk.protocols.BatchEncodingModality`) encoded
        :data:`ENCODE_BATCH` at a time instead of one by one."""
        if isinstance(documents, (str, Document)):
            raise TokenizationError("tokenize_batch: expected a sequence of documents; use tokenize() for one")
        docs = [_as_document(d, f"tokenize_batch: document {i}") for i, d in enumerate(documents)]
        return self._tokenize(docs, bos=bos, eos=eos)

    def _tokenize(self, docs: Sequence[Document], *, bos: bool, eos: bool) -> list[list[int]]:
        encoded = self._encode_payloads_batched(docs)
        vocab = self.vocabulary
        out = []
        for i, doc in enumerate(docs):
            parts = [torch.tensor([vocab.specials["bos"]])] if bos else []
            parts += [encoded[i, j] if (i, j) in encoded else self.encode_segment(seg) for j, seg in enumerate(doc)]
            if eos:
                parts.append(torch.tensor([vocab.specials["eos"]]))
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
        partial = getattr(modality, "decode_partial", None)
        return segment_of(name, partial(codes)) if partial is not None else None

    def _text_segments(self, ids: torch.Tensor, strict: bool, offset: int) -> list[Text | Image | Segment]:
        kinds = self.vocabulary.modality_index[ids]
        stray = kinds >= 0
        if strict and bool(stray.any()):
            bad = int(torch.nonzero(stray).flatten()[0])
            raise TokenizationError(f"position {offset + bad}: modality code {int(ids[bad])} outside any block")
        text_ids = ids[(kinds != SPECIAL) & ~stray]
        return [Text(self.text_tokenizer.decode(text_ids.tolist()))] if text_ids.numel() else []

    # -- generation -----------------------------------------------------------------------------

    def stream(self, prompt: Document | str | Sequence[Document | str], **options: Any) -> Iterator[GenerationEvent]:
        """Generate a continuation of ``prompt`` (or of each prompt of a batch), yielding typed events.

        Events: :class:`TextDelta`, :class:`ImageStarted` / :class:`BlockStarted`, :class:`ImageProgress`
        (every ``progress_every`` codes, through the modality's ``decode_partial``), :class:`ImageDone`,
        and one :class:`Finished` per row with the row's document. Closing the iterator stops the work.

        Options: ``mode`` (``"text"``, ``"interleaved"``, ``"image"``; one, or one per row),
        ``max_new_tokens``, ``sampler`` (default: the config's ``sampler``) and per-modality
        ``samplers``, ``guidance`` (:class:`Guidance`), ``stop`` (stop strings), ``seed``,
        ``max_time``, ``progress_every``, ``model`` (default :attr:`model`).
        """
        check_options(options)
        return stream_documents(self, prompt, **options)

    @overload
    def generate(self, prompt: Document | str, **options: Any) -> Document: ...

    @overload
    def generate(self, prompt: Sequence[Document | str], **options: Any) -> list[Document]: ...  # type: ignore[overload-overlap]

    def generate(self, prompt: Document | str | Sequence[Document | str], **options: Any) -> Document | list[Document]:
        """What :meth:`stream` yields, collected: the generated document, or a list for a batch."""
        return generate_documents(self, prompt, **options)

    # -- training -------------------------------------------------------------------------------

    def train(
        self,
        data: DataConfig | Mapping[str, Any] | BatchSource,
        *,
        steps: int,
        out_dir: str | os.PathLike[str] | None = None,
        resume: bool = True,
        callbacks: Sequence[Any] = (),
        base_dir: str | os.PathLike[str] | None = None,
    ) -> TrainResult:
        """Train :attr:`model` (built from ``config.model`` if absent) with the configured trainer.

        :param data: a :class:`DataConfig` (or its mapping), or any :class:`BatchSource`.
        :param out_dir: run folder for checkpoints, ``metrics.jsonl`` and, at the end, the trained
            pipeline in ``out_dir/pipeline``; a run in an existing folder resumes from its last
            checkpoint unless ``resume=False``.
        :param callbacks: extra callback objects, after those the config names.
        :param base_dir: folder that relative source paths are resolved against.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
            raise ConfigError(f"Pipeline.train: steps must be > 0 (an integer), got {steps!r}")
        for name, value in (("out_dir", out_dir), ("base_dir", base_dir)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise ConfigError(f"Pipeline.train: {name} must be a path, got {value!r}")
        if isinstance(data, Mapping):
            data = from_dict(DataConfig, data)
        if not isinstance(data, (DataConfig, BatchSource)):
            raise ConfigError(
                f"Pipeline.train: data must be a DataConfig, its mapping or a BatchSource, got {type(data).__name__}"
            )
        if self.model is None:
            self.model = self.build_model()
        if isinstance(data, DataConfig):
            data = MixtureData(self, data, total_steps=steps, base_dir=Path(base_dir) if base_dir else None)
        spec = self.config.trainer
        trainer = self.registry.build("trainer", spec.name, spec.options)
        hooks = [self.registry.build("callback", c.name, c.options) for c in self.config.callbacks]
        out = Path(out_dir) if out_dir is not None else None
        result = trainer.fit(self.model, data, steps=steps, out_dir=out, callbacks=[*hooks, *callbacks], resume=resume)
        if out is not None and is_main_process():  # one writer in a distributed run
            self.save_pretrained(out / "pipeline")
        return result

    # -- persistence ----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A hash of everything that decides token ids: config, vocabulary, tokenizer and modality state.

        The model is not part of it, so it keys caches of tokenized data across training runs.
        """
        digest = hashlib.sha256()
        tokenization = {
            "text_tokenizer": to_dict(self.config.text_tokenizer),
            "modalities": to_dict(self.config.modalities),
        }
        digest.update(json.dumps([tokenization, self.vocabulary.to_json()], sort_keys=True).encode())
        with tempfile.TemporaryDirectory() as tmp:
            components: list[tuple[str, Any]] = [("text_tokenizer", self.text_tokenizer)]
            components += [(f"modalities/{n}", m) for n, m in self.modalities.items() if isinstance(m, Stateful)]
            for name, component in components:
                folder = Path(tmp) / name
                folder.mkdir(parents=True)
                component.save(folder)
                for file in sorted(folder.rglob("*")):
                    if file.is_file():
                        digest.update(f"{name}/{file.relative_to(folder)}".encode())
                        digest.update(file.read_bytes())
        return digest.hexdigest()

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config, vocabulary, component state and the model (if any) to ``directory``, atomically.

        The model is written by the ``checkpoint_format`` plugin the config names, into ``model/``.

        Everything is written to a temporary sibling folder first and renamed into place, so a
        crash never leaves a half-written pipeline at ``directory``.
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise CheckpointError(f"Pipeline.save_pretrained: expected a directory path, got {directory!r}")
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with staging_directory(directory) as tmp:
            meta = {
                "format_version": FORMAT_VERSION,
                "config": to_dict(self.config),
                "vocabulary": self.vocabulary.to_json(),
            }
            (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            (tmp / "text_tokenizer").mkdir()
            self.text_tokenizer.save(tmp / "text_tokenizer")
            for name, modality in self.modalities.items():
                if isinstance(modality, Stateful):
                    (tmp / "modalities" / name).mkdir(parents=True)
                    modality.save(tmp / "modalities" / name)
            if self.model is not None:
                fmt = self.config.checkpoint_format
                save_model(self.model, tmp / "model", format=fmt.name, options=fmt.options, registry=self.registry)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], *, registry: PluginRegistry | None = None) -> Pipeline:
        """Load a pipeline written by :meth:`save_pretrained`.

        :raises CheckpointError: naming a file that is missing, truncated or altered since it was
            saved (checked against ``manifest.json``), or a component that does not match.
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise CheckpointError(f"Pipeline.from_pretrained: expected a directory path, got {directory!r:.80}")
        directory = Path(directory)
        verify_manifest(directory, recursive=False)  # model/ is verified by load_model
        meta_path = directory / PIPELINE_FILE
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{str(meta_path)!r}: unsupported or missing format_version (expected {FORMAT_VERSION})"
            )
        pipe = cls.from_config(
            from_dict(PipelineConfig, meta.get("config"), where=f"{meta_path}: config"), registry=registry
        )
        pipe.text_tokenizer.load(directory / "text_tokenizer")
        for name, modality in pipe.modalities.items():
            if isinstance(modality, Stateful):
                modality.load(directory / "modalities" / name)
        if (directory / "model").exists():
            fmt = pipe.config.checkpoint_format
            pipe.model = load_model(directory / "model", format=fmt.name, options=fmt.options, registry=pipe.registry)
        stored = Vocabulary.from_json(meta.get("vocabulary") or {})
        if stored != pipe.vocabulary:
            raise CheckpointError(
                f"{str(meta_path)!r}: the stored vocabulary ({stored!r}) does not match the one the loaded "
                f"components give ({pipe.vocabulary!r})"
            )
        return pipe

    def __repr__(self) -> str:
        mods = ", ".join(self.modalities) or "none"
        return f"Pipeline(text_tokenizer={self.config.text_tokenizer.name!r}, modalities=[{mods}])"
