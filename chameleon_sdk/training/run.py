"""``chameleon train CONFIG``: one file describes a whole training run.

```toml
steps = 200
out_dir = "runs/shapes"          # relative to the working directory
seed = 0                         # model initialisation
[pipeline]                       # a PipelineConfig (or: pretrained = "DIR" to continue a saved pipeline)
model = {dim = 128, num_layers = 2, num_heads = 4}
[data]                           # a DataConfig; source paths are relative to this file
seq_len = 64
sources = [{path = "train.jsonl"}]
```

Optional: ``adapter = {name = "lora", options = {rank = 8}}`` trains an adapter instead of the
weights (only ``out_dir/adapter`` is written); ``trainer = {name, options}`` replaces the pipeline's
trainer (how a ``pretrained`` run turns on activation checkpointing or bf16).

A text tokenizer without a model file is trained first on the text of every source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from chameleon_sdk.config import ComponentSpec, PipelineConfig, from_dict, read_config_data, to_dict
from chameleon_sdk.contracts.trainer import TrainResult
from chameleon_sdk.document import Document, Text
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.plugins import PluginRegistry
from chameleon_sdk.training.data import DataConfig, iter_records
from chameleon_sdk.validation import check_number

__all__ = ["RunConfig", "apply_overrides", "load_run_config", "run_training"]


@attrs.frozen(kw_only=True)
class RunConfig:
    """A training run: pipeline (new or pretrained), data, length and output folder."""

    data: DataConfig
    steps: int
    out_dir: str
    pipeline: PipelineConfig | None = None
    pretrained: str | None = None
    resume: bool = True
    seed: int = 0
    #: an ``adapter`` plugin (``{name = "lora", options = {...}}``) to attach and train instead of the weights
    adapter: ComponentSpec | None = None
    #: the trainer (``{name, options}``), replacing the pipeline's: how a pretrained run sets its options
    trainer: ComponentSpec | None = None

    def __attrs_post_init__(self) -> None:
        if (self.pipeline is None) == (self.pretrained is None):
            raise ConfigError("a run config needs exactly one of [pipeline] or pretrained = 'DIR'")
        check_number(self.steps, "steps", integer=True, low=1)
        check_number(self.seed, "seed", integer=True)


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as JSON when they parse, else strings)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            with foreign_errors(f"--set {key}", ConfigError):
                value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str):  # a plugin slot given by bare name
                child = {"name": child}
            node[part] = child if isinstance(child, dict) else {}
            node = node[part]
        node[parts[-1]] = value
    return data


def load_run_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read a run config (.toml or .json) and apply ``--set`` overrides."""
    path = Path(path)
    data = read_config_data(path)
    if not isinstance(data, dict):
        raise ConfigError(f"run config {str(path)!r}: expected a table of options, got {type(data).__name__}")
    return from_dict(RunConfig, apply_overrides(data, overrides), where=path.name)


def _texts(config: DataConfig, base_dir: Path) -> Iterator[str]:
    for source in config.sources:
        path = Path(source.path) if Path(source.path).is_absolute() else base_dir / source.path
        for record in iter_records(path, skip_bad_records=True, counters={}):
            for part in (record,) if isinstance(record, Document) else record.documents:
                for segment in part:
                    if isinstance(segment, Text):
                        yield segment.text


def run_training(config: RunConfig, *, base_dir: str | os.PathLike[str] = ".", progress: bool = True) -> TrainResult:
    """Build (or load) the pipeline, train its tokenizer if needed, and train the model.

    :param progress: ``False`` turns off the trainer's progress output (for a trainer whose options
        have a ``progress`` field, as the built-in ones do).
    """
    from chameleon_sdk.pipeline import Pipeline

    base = Path(base_dir)
    if config.pretrained is not None:
        pipe = Pipeline.from_pretrained(base / config.pretrained)
    else:
        assert config.pipeline is not None
        pipe = Pipeline.from_config(config.pipeline)
        # the trainer's options are checked now (lr = inf...), not after a tokenizer has been trained
        pipe.registry.get("trainer", pipe.config.trainer.name).make_options(pipe.config.trainer.options)
        if not pipe.text_tokenizer.is_trained:
            pipe.train_text_tokenizer(_texts(config.data, base))
    if config.trainer is not None:
        pipe.config = attrs.evolve(pipe.config, trainer=config.trainer)
    if not progress:
        pipe.config = _without_progress(pipe.config, pipe.registry)
    if pipe.model is None:
        torch.manual_seed(config.seed)
        pipe.model = pipe.build_model()
    if config.adapter is not None:
        from chameleon_sdk.adapters import attach_adapter

        attach_adapter(pipe.model, config.adapter, registry=pipe.registry)
    return pipe.train(config.data, steps=config.steps, out_dir=config.out_dir, resume=config.resume, base_dir=base)


def _without_progress(config: PipelineConfig, registry: PluginRegistry) -> PipelineConfig:
    spec = config.trainer
    options_class = registry.get("trainer", spec.name).options
    if options_class is None or "progress" not in attrs.fields_dict(options_class):
        return config
    options = {**to_dict(spec.options or {}), "progress": False}
    return attrs.evolve(config, trainer=ComponentSpec(name=spec.name, options=options))
