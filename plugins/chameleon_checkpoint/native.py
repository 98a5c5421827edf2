"""The ``native`` checkpoint format: our own parameter names, nothing converted.

A directory with ``config.json``::

    {"format": "chameleon-sdk/native", "format_version": 1,
     "model": {...ModelConfig...}, "attention": {"name": ..., "options": ...},
     "stability": [{"name": ..., "options": ...}, ...], "vocabulary": {...} | null}

and ``model.safetensors`` holding ``model.state_dict()`` under its own keys, in the model's dtype.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

import chameleon_sdk
from chameleon_checkpoint import vqgan
from chameleon_checkpoint.layout import build_model, json_object, require_chameleon_model
from chameleon_sdk import (
    CheckpointError,
    CheckpointInfo,
    ComponentSpec,
    ModelConfig,
    PluginRegistry,
    Vocabulary,
    plugin_api,
)
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint

CONFIG_FILE = "config.json"
FORMAT_TAG = "chameleon-sdk/native"
FORMAT_VERSION = 1


@attrs.frozen(kw_only=True)
class NativeOptions:
    """Options of the ``native`` checkpoint format.

    :param attention: load with this attention backend instead of the stored one (the weights do
        not depend on it).
    """

    attention: str | None = None


class NativeFormat:
    """Our own layout: ``config.json`` (model shape, attention, stability tricks, vocabulary) + safetensors."""

    name = "native"

    def __init__(self, options: NativeOptions | None = None) -> None:
        self.options = options or NativeOptions()

    def detect(self, path: Path) -> bool:
        meta = json_object(path / CONFIG_FILE)
        return meta is not None and meta.get("format") == FORMAT_TAG

    def load(self, path: Path, *, registry: PluginRegistry, dtype: torch.dtype | None = None) -> nn.Module:
        config_file = path / CONFIG_FILE
        meta = plugin_api.read_json(config_file)
        where = str(config_file)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
            raise CheckpointError(f"{where!r} is not a native chameleon-sdk checkpoint config")
        if meta.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{where!r}: format_version {meta.get('format_version')!r} is not supported (expected {FORMAT_VERSION})"
            )
        try:
            config = chameleon_sdk.from_dict(ModelConfig, meta.get("model"), where=f"{where}: model")
            attention = ComponentSpec.of(meta.get("attention", "sdpa"))
            stability = [ComponentSpec.of(spec) for spec in meta.get("stability", [])]
            vocabulary = Vocabulary.from_json(meta["vocabulary"]) if meta.get("vocabulary") else None
        except chameleon_sdk.ConfigError as exc:
            raise CheckpointError(f"{where!r}: {exc}") from exc
        if self.options.attention is not None:
            attention = ComponentSpec(name=self.options.attention)
        shapes = plugin_api.read_safetensors_shapes(path)
        model = build_model(
            config,
            attention=attention,
            stability=stability,
            registry=registry,
            vocabulary=vocabulary,
            file_shapes=shapes,
            source=str(path),
        )
        plugin_api.load_weights(model, plugin_api.read_safetensors(path), source=str(path), dtype=dtype)
        model.checkpoint_info = CheckpointInfo(format=self.name, path=str(path))  # type: ignore[assignment]
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        require_chameleon_model(model, self.name)
        vocabulary = getattr(model, "vocabulary", None)
        meta: dict[str, Any] = {
            "format": FORMAT_TAG,
            "format_version": FORMAT_VERSION,
            "model": chameleon_sdk.to_dict(model.config),
            "attention": chameleon_sdk.to_dict(model.attention_spec),
            "stability": chameleon_sdk.to_dict(list(model.stability_specs)),
            "vocabulary": vocabulary.to_json() if vocabulary is not None else None,
        }
        plugin_api.write_json(path / CONFIG_FILE, meta)
        plugin_api.write_safetensors(model.state_dict(), path)

    # -- image tokenizers (plugin_api.ImageTokenizerFormat; the layout is in vqgan.py) ------------

    def detect_image_tokenizer(self, path: Path) -> bool:
        return vqgan.detect_native(path)

    def read_image_tokenizer(self, path: Path) -> ImageTokenizerCheckpoint:
        return vqgan.read_native(path)

    def write_image_tokenizer(self, checkpoint: ImageTokenizerCheckpoint, path: Path) -> None:
        vqgan.write_native(checkpoint, path)
