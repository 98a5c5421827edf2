"""The image tokenizer API of the core: load released weights, train from a config.

Both reach the tokenizer only through the plugin registry (modality ``"image"`` by default), so any
plugin that registers a compatible modality can stand in for the built-in one.

- :func:`load_image_tokenizer` builds the modality with its ``pretrained`` option set to a path: the
  built-in plugin reads its own saved layout, a Hugging Face Chameleon directory (encoder only) or
  the original ``vqgan.yaml`` + ``vqgan.ckpt`` release.
- :func:`train_image_tokenizer` (and ``chameleon train-image-tokenizer CONFIG``) builds the modality,
  calls its ``fit`` and saves it atomically to the output directory, with the metrics beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from chameleon_sdk.checkpoint import staging_directory
from chameleon_sdk.config import ComponentSpec, from_dict, load_config
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.protocols import Modality, TrainableModality

__all__ = ["ImageTokenizerTrainingConfig", "load_image_tokenizer", "train_image_tokenizer"]

METRICS_FILE = "training_metrics.json"


def load_image_tokenizer(
    path: str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
    name: str = "image",
    registry: PluginRegistry | None = None,
) -> Modality:
    """An image tokenizer with weights from ``path`` (a directory, or a ``vqgan.ckpt`` file).

    :param options: further options of the modality plugin (the architecture comes from the
        checkpoint).
    :param name: the modality plugin to build.
    :raises CheckpointError: when ``path`` holds no readable checkpoint in a supported layout.
    """
    merged = {**dict(options or {}), "pretrained": os.fspath(path)}
    return (registry or get_registry()).build("modality", name, merged)  # type: ignore[no-any-return]


def _spec(value: Any) -> ComponentSpec:
    return ComponentSpec.of(value)


@attrs.frozen(kw_only=True)
class ImageTokenizerTrainingConfig:
    """What ``chameleon train-image-tokenizer CONFIG`` reads (JSON or TOML).

    :param data: a folder of images or a JSONL file of documents (relative paths are resolved
        against the config file's folder).
    :param output: the directory the trained tokenizer is written to (replaced atomically).
    :param tokenizer: the modality plugin and its options, e.g. ``{"name": "image", "options":
        {"resolution": 64, ...}}``.
    :param training: the plugin's training options (for ``image``: ``ImageTrainingOptions``).
    """

    data: str
    output: str
    tokenizer: ComponentSpec = attrs.field(factory=lambda: ComponentSpec(name="image"), converter=_spec)
    training: dict[str, Any] = attrs.field(factory=dict)


def train_image_tokenizer(
    config: ImageTokenizerTrainingConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    registry: PluginRegistry | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train the configured image tokenizer and save it to ``config.output``; returns its metrics.

    Nothing is written unless training succeeds: the output is assembled in a temporary sibling
    directory and renamed into place.
    """
    base = Path.cwd()
    if isinstance(config, (str, os.PathLike)):
        base = Path(config).resolve().parent
        config = load_config(config, ImageTokenizerTrainingConfig)
    elif isinstance(config, Mapping):
        config = from_dict(ImageTokenizerTrainingConfig, config)
    elif not isinstance(config, ImageTokenizerTrainingConfig):
        raise ConfigError(f"train_image_tokenizer: expected a config, mapping or path, got {config!r}")
    spec = config.tokenizer
    modality = (registry or get_registry()).build("modality", spec.name, spec.options)
    if not isinstance(modality, TrainableModality):
        raise ConfigError(f"modality plugin {spec.name!r} cannot be trained (it has no fit/save methods)")
    metrics = modality.fit(str(base / config.data), config.training, progress=progress)
    output = base / config.output
    output.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(output) as tmp:
        modality.save(tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dict(metrics)
