"""The composable Pipeline: named plugins + configs -> one working system.

``Pipeline.from_config(cfg)`` builds each component from the registry by name;
``Pipeline.from_pretrained(path)`` loads a saved pipeline or a released checkpoint folder. Documents
become token ids and back through the pipeline's :class:`MixedModalTokenizer` (:attr:`tokenizer`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import attrs
import torch

from chameleon_sdk.adapters import has_adapter, save_adapter
from chameleon_sdk.checkpoint import load_model, save_model
from chameleon_sdk.config import PipelineConfig, from_dict, load_config, to_dict
from chameleon_sdk.contracts.modality import Modality
from chameleon_sdk.contracts.text_tokenizer import TextTokenizer
from chameleon_sdk.contracts.trainer import BatchSource, TrainResult
from chameleon_sdk.document import Document, Image, Segment, Text
from chameleon_sdk.errors import CheckpointError, ConfigError, PluginNotFoundError
from chameleon_sdk.generation.events import GenerationEvent
from chameleon_sdk.generation.stream import (
    DocumentStream,
    Prompt,
    check_options,
    generate_documents,
    prepare_stream,
    stream_documents,
)
from chameleon_sdk.model import ChameleonModel
from chameleon_sdk.model.build import build_model
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.provenance import component_providers, with_install_hint
from chameleon_sdk.quantization import QuantizeChoice, quantize_model
from chameleon_sdk.released import find_release
from chameleon_sdk.storage import read_json, staging_directory, verify_manifest
from chameleon_sdk.tokenizer import MixedModalTokenizer
from chameleon_sdk.training.data import DataConfig, MixtureData
from chameleon_sdk.training.processes import is_main_process
from chameleon_sdk.vocabulary import Vocabulary

__all__ = ["Pipeline"]

PIPELINE_FILE = "pipeline.json"
FORMAT_VERSION = 1


class Pipeline:
    """Tokenizers, modalities, the vocabulary and (optionally) a model, assembled from a :class:`PipelineConfig`."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        text_tokenizer: TextTokenizer,
        modalities: Mapping[str, Modality],
        registry: PluginRegistry | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        #: documents <-> ids: the text tokenizer, the modalities and the vocabulary
        self.tokenizer = MixedModalTokenizer(config, text_tokenizer=text_tokenizer, modalities=modalities)
        self.registry = registry or get_registry()
        self.model = model  #: the transformer used by :meth:`generate` and :meth:`stream`

    @property
    def config(self) -> PipelineConfig:
        """The pipeline's config (the tokenizer shares it)."""
        return self.tokenizer.config

    @config.setter
    def config(self, config: PipelineConfig) -> None:
        self.tokenizer.config = config

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
        self.tokenizer.train_text(texts)

    @property
    def text_tokenizer(self) -> TextTokenizer:
        return self.tokenizer.text_tokenizer

    @property
    def modalities(self) -> dict[str, Modality]:
        return self.tokenizer.modalities

    @property
    def vocabulary(self) -> Vocabulary:
        """The unified vocabulary, built from the tokenizer and the modalities' codebook sizes."""
        return self.tokenizer.vocabulary

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
        return build_model(
            model_config,
            attention=self.config.attention,
            stability=self.config.stability,
            registry=self.registry,
            vocabulary=self.vocabulary,
        )

    # -- documents <-> ids (see MixedModalTokenizer) ----------------------------------------------

    def encode_segment(self, segment: Text | Image | Segment) -> torch.Tensor:
        """Token ids of one segment (``[begin, codes..., end]`` for non-text)."""
        return self.tokenizer.encode_segment(segment)

    def tokenize(
        self, document: Document | str, *, bos: bool = True, eos: bool = False, end_of_turn: bool = False
    ) -> list[int]:
        """The token ids of ``document``; see :meth:`MixedModalTokenizer.tokenize`."""
        return self.tokenizer.tokenize(document, bos=bos, eos=eos, end_of_turn=end_of_turn)

    def tokenize_batch(
        self,
        documents: Sequence[Document | str],
        *,
        bos: bool = True,
        eos: bool = False,
        end_of_turn: bool = False,
    ) -> list[list[int]]:
        """``[tokenize(d) for d in documents]``, payloads encoded in batches; see
        :meth:`MixedModalTokenizer.tokenize_batch`."""
        return self.tokenizer.tokenize_batch(documents, bos=bos, eos=eos, end_of_turn=end_of_turn)

    def detokenize(self, ids: Sequence[int] | torch.Tensor, *, strict: bool = True) -> Document:
        """The document for token ids; see :meth:`MixedModalTokenizer.detokenize`."""
        return self.tokenizer.detokenize(ids, strict=strict)

    # -- generation -----------------------------------------------------------------------------

    def stream(self, prompt: Prompt | Sequence[Prompt], **options: Any) -> Iterator[GenerationEvent]:
        """Generate a continuation of ``prompt`` (or of each prompt of a batch), yielding typed events.

        A prompt is a :class:`Document` (a string is one text segment) or a :class:`ChatPrompt`, a
        chat so far, laid out as chat fine-tuning lays out conversations (an end-of-turn token after
        every turn); the model then writes the assistant's turn and stops at end-of-turn.

        Events: :class:`TextDelta`, :class:`ImageStarted` / :class:`BlockStarted`, :class:`ImageProgress`
        (every ``progress_every`` codes, through the modality's ``decode_partial`` unless
        ``previews=False``), :class:`ImageDone`, and one :class:`Finished` per row with the row's
        document. Closing the iterator stops the work. Every option is validated here, before the
        first event: a bad request raises at this call.

        Options: ``mode`` (``"text"``, ``"interleaved"``, or the name of any of the pipeline's
        modalities, for one block of it; one, or one per row), ``max_new_tokens``, ``sampler``
        (default: the config's ``sampler``) and per-modality ``samplers``, ``guidance``
        (:class:`Guidance`), ``stop`` (stop strings), ``seed``, ``max_time``, ``progress_every``,
        ``previews``, ``chat`` (end the prompt with the end-of-turn token, the form the released
        models were tuned on; a row then also stops on end-of-turn), ``model`` (default :attr:`model`),
        ``compile`` (the one-token step through ``torch.compile``, see :func:`~chameleon_sdk.generate_tokens`).
        """
        check_options(options)
        return stream_documents(self.tokenizer, prompt, **self._generation_defaults(options))

    def prepare_stream(self, prompt: Prompt | Sequence[Prompt], **options: Any) -> DocumentStream:
        """What :meth:`stream` would decode, checked and tokenized but not run: for a scheduler that
        decodes several requests in one batch (``chameleon_sdk.serve``). Same options as :meth:`stream`."""
        check_options(options)
        return prepare_stream(self.tokenizer, prompt, **self._generation_defaults(options))

    def _generation_defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model, "sampler": self.config.sampler, "registry": self.registry, **options}

    @overload
    def generate(self, prompt: Prompt, **options: Any) -> Document: ...

    @overload
    def generate(self, prompt: Sequence[Prompt], **options: Any) -> list[Document]: ...  # type: ignore[overload-overlap]

    def generate(self, prompt: Prompt | Sequence[Prompt], **options: Any) -> Document | list[Document]:
        """What :meth:`stream` yields, collected: the generated document, or a list for a batch."""
        check_options(options)
        return generate_documents(self.tokenizer, prompt, **self._generation_defaults(options))

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
            pipeline in ``out_dir/pipeline`` (a model with an adapter attached: only the adapter, in
            ``out_dir/adapter``); a run in an existing folder resumes from its last
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
            data = MixtureData(self.tokenizer, data, total_steps=steps, base_dir=Path(base_dir) if base_dir else None)
        spec = self.config.trainer
        trainer = self.registry.build("trainer", spec.name, spec.options)
        hooks = [self.registry.build("callback", c.name, c.options) for c in self.config.callbacks]
        out = Path(out_dir) if out_dir is not None else None
        result = trainer.fit(self.model, data, steps=steps, out_dir=out, callbacks=[*hooks, *callbacks], resume=resume)
        if out is not None and is_main_process():  # one writer in a distributed run
            if has_adapter(self.model):  # the base stays as it was: only the adapter is new
                save_adapter(self.model, out / "adapter")
            else:
                self.save_pretrained(out / "pipeline")
        return result

    # -- persistence ----------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """A hash of everything that decides token ids; see :meth:`MixedModalTokenizer.fingerprint`.

        The model is not part of it, so it keys caches of tokenized data across training runs.
        """
        return self.tokenizer.fingerprint()

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config, vocabulary, component state and the model (if any) to ``directory``, atomically.

        The model is written by the ``checkpoint_format`` plugin the config names, into ``model/``.

        Everything is written to a temporary sibling folder first and renamed into place, so a
        crash never leaves a half-written pipeline at ``directory``.
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise CheckpointError(f"Pipeline.save_pretrained: expected a directory path, got {directory!r}")
        if has_adapter(self.model):
            raise CheckpointError(
                "Pipeline.save_pretrained: the model carries an adapter; save it alone (cs.save_adapter) or fold it "
                "into the weights first (cs.merge_adapter)"
            )
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        with staging_directory(directory) as tmp:
            meta = {
                "format_version": FORMAT_VERSION,
                "config": to_dict(self.config),
                "vocabulary": self.vocabulary.to_json(),
                "plugins": component_providers(self.config, self.registry),
            }
            (tmp / PIPELINE_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            self.tokenizer.save(tmp)
            if self.model is not None:
                fmt = self.config.checkpoint_format
                save_model(self.model, tmp / "model", format=fmt.name, options=fmt.options, registry=self.registry)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        registry: PluginRegistry | None = None,
        quantize: QuantizeChoice | None = None,
    ) -> Pipeline:
        """Load a pipeline: one written by :meth:`save_pretrained`, or a released checkpoint folder.

        Released layouts (see docs/checkpoints.md): a Hugging Face Chameleon folder (``config.json``,
        safetensors, ``tokenizer.json`` and the processor config), Meta's download (its root, with
        ``models/7b`` or ``models/30b`` beside ``tokenizer/``, or one ``models/NAME`` folder), and an
        Anole folder (Meta's layout, whose ``vqgan.ckpt`` has the decoder, so it can draw).

        :param dtype: the model's parameter dtype (``torch.bfloat16`` halves the memory); default fp32.
        :param device: where the model and the modalities' networks run.
        :param quantize: a ``quantization`` plugin for the model's weights, applied on ``device``
            after the cast to ``dtype`` (``"int8-weight-only"``; see :func:`~chameleon_sdk.quantize_model`).
        :raises CheckpointError: naming a missing file and what it is for, or a file that is
            truncated or altered since it was saved (checked against ``manifest.json``).
        :raises ConfigError: ``device`` is not a device torch knows, or names CUDA where there is none.
        """
        if device is not None:
            checked_device(device)  # before anything is read
        if not isinstance(path, (str, os.PathLike)):
            raise CheckpointError(f"Pipeline.from_pretrained: expected a directory path, got {path!r:.80}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"Pipeline.from_pretrained: dtype must be a torch.dtype, got {dtype!r}")
        directory = Path(path)
        registry = registry or get_registry()
        if (directory / PIPELINE_FILE).is_file():
            pipe = cls._from_saved(directory, dtype=dtype, registry=registry)
        else:
            release = find_release(directory)
            pipe = cls.from_config(release.load_config, registry=registry)
            pipe.config = release.config
            pipe.model = load_model(release.model_path, format=release.model_format, registry=registry, dtype=dtype)
        if device is not None:
            pipe.to(device)
        if quantize is not None and pipe.model is not None:
            pipe.model = quantize_model(pipe.model, quantize, registry=registry)
        return pipe

    @classmethod
    def _from_saved(cls, directory: Path, *, dtype: torch.dtype | None, registry: PluginRegistry) -> Pipeline:
        verify_manifest(directory, recursive=False)  # model/ is verified by load_model
        meta_path = directory / PIPELINE_FILE
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{str(meta_path)!r}: unsupported or missing format_version (expected {FORMAT_VERSION})"
            )
        try:
            pipe = cls.from_config(
                from_dict(PipelineConfig, meta.get("config"), where=f"{meta_path}: config"), registry=registry
            )
            pipe.tokenizer.load(directory)
            if (directory / "model").exists():
                fmt = pipe.config.checkpoint_format
                pipe.model = load_model(
                    directory / "model", format=fmt.name, options=fmt.options, registry=pipe.registry, dtype=dtype
                )
        except PluginNotFoundError as exc:  # say which package provided it when the pipeline was saved
            raise with_install_hint(exc, meta.get("plugins")) from exc
        stored = Vocabulary.from_json(meta.get("vocabulary") or {})
        if stored != pipe.vocabulary:
            raise CheckpointError(
                f"{str(meta_path)!r}: the stored vocabulary ({stored!r}) does not match the one the loaded "
                f"components give ({pipe.vocabulary!r})"
            )
        return pipe

    def to(self, device: str | torch.device) -> Pipeline:
        """Move the model and every modality that can move (one with a ``to`` method) to ``device``.

        :raises ConfigError: ``device`` is not a device torch knows, or names CUDA where there is none.
        """
        device = checked_device(device)
        if self.model is not None:
            self.model.to(device)
        for modality in self.modalities.values():
            move = getattr(modality, "to", None)
            if callable(move):
                move(device)
        return self

    def __repr__(self) -> str:
        mods = ", ".join(self.modalities) or "none"
        return f"Pipeline(text_tokenizer={self.config.text_tokenizer.name!r}, modalities=[{mods}])"


def checked_device(device: object) -> torch.device:
    """``device`` as a ``torch.device``, or a :class:`ConfigError` that names it."""
    try:
        checked = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device (cpu, cuda, cuda:1, mps...): {exc}") from None
    if checked.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: this machine (or this torch build) has no CUDA device")
    return checked
