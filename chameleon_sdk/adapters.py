"""Parameter-efficient fine-tuning: attaching, saving, loading and merging ``adapter`` plugins.

An adapter (LoRA, ...) adds a few trainable weights to a model whose own weights stay frozen, so
any trainer (``local``, ``ddp``, ``fsdp``) trains only them. Only the adapter is saved: a folder with
``adapter.json`` (the plugin's name and options) and ``adapter.safetensors`` (its tensors). It loads
onto a base model read from any checkpoint layout, and :func:`merge_adapter` folds it into the
base weights, leaving a plain model that every format can write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chameleon_sdk.config import ComponentSpec, to_dict
from chameleon_sdk.contracts.adapter import Adapter
from chameleon_sdk.errors import CheckpointError, ConfigError
from chameleon_sdk.generation.compiled import forget_frozen_code
from chameleon_sdk.plugins import PluginRegistry, get_registry

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "AdapterChoice",
    "attach_adapter",
    "has_adapter",
    "load_adapter",
    "merge_adapter",
    "merge_checkpoint",
    "read_adapter_spec",
    "save_adapter",
]

ADAPTER_CONFIG_FILE = "adapter.json"
ADAPTER_WEIGHTS_FILE = "adapter.safetensors"
_FORMAT_VERSION = 1
_ATTACHED = "_chameleon_adapter"  # the model attribute holding (spec, adapter) while one is attached

#: an adapter plugin's name, ``{"name", "options"}``, or a spec
AdapterChoice = str | ComponentSpec | Mapping[str, Any]


def attach_adapter(model: nn.Module, adapter: AdapterChoice, *, registry: PluginRegistry | None = None) -> nn.Module:
    """Attach the ``adapter`` plugin to ``model`` (in place) and return ``model``.

    Afterwards only the adapter's weights require gradients, so a trainer trains only them.

    :raises ConfigError: ``model`` already carries an adapter, or the plugin is not an :class:`Adapter`.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"attach_adapter: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(adapter, (str, ComponentSpec, Mapping)):
        raise ConfigError(f"adapter must be a plugin name such as 'lora' or {{'name', 'options'}}, got {adapter!r}")
    if has_adapter(model):
        raise ConfigError("the model already carries an adapter; merge it (merge_adapter) before attaching another")
    spec = ComponentSpec.of(adapter)
    record = (registry or get_registry()).get("adapter", spec.name)
    options = record.make_options(spec.options)
    method = record.build(options)
    if not isinstance(method, Adapter):
        raise ConfigError(f"adapter plugin {spec.name!r} built {type(method).__name__}, which is not an Adapter")
    method.attach(model)
    stored = {} if options is None else to_dict(options)
    setattr(model, _ATTACHED, (ComponentSpec(name=spec.name, options=stored), method))
    return model


def has_adapter(model: nn.Module | None) -> bool:
    """Whether ``model`` carries an adapter (attached, not merged)."""
    return getattr(model, _ATTACHED, None) is not None


def _attached(model: nn.Module, action: str) -> tuple[ComponentSpec, Adapter]:
    found = getattr(model, _ATTACHED, None)
    if found is None:
        raise ConfigError(f"{action}: the model carries no adapter (attach_adapter or load_adapter first)")
    return found


def save_adapter(model: nn.Module, directory: str | os.PathLike[str]) -> Path:
    """Write only the adapter of ``model`` to ``directory`` (replaced whole, atomically).

    :returns: the directory, holding ``adapter.json`` and ``adapter.safetensors``.
    """
    from safetensors.torch import save_file

    from chameleon_sdk.storage import staging_directory, write_json

    spec, method = _attached(model, "save_adapter")
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in method.state(model).items()}
    path = Path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(path) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS_FILE))
        write_json(tmp / ADAPTER_CONFIG_FILE, {"format_version": _FORMAT_VERSION, **to_dict(spec)})
    return path


def read_adapter_spec(directory: str | os.PathLike[str]) -> ComponentSpec:
    """The adapter plugin and options an adapter folder was saved with."""
    from chameleon_sdk.storage import read_json

    path = Path(directory)
    if not (path / ADAPTER_CONFIG_FILE).is_file():
        raise CheckpointError(f"{str(path)!r} is not an adapter folder: it has no {ADAPTER_CONFIG_FILE}")
    data = read_json(path / ADAPTER_CONFIG_FILE)
    if not isinstance(data, dict) or data.get("format_version") != _FORMAT_VERSION or "name" not in data:
        raise CheckpointError(
            f"{str(path / ADAPTER_CONFIG_FILE)!r} is not an adapter config of format version {_FORMAT_VERSION} "
            f"(expected {{'format_version': 1, 'name': ..., 'options': {{...}}}})"
        )
    try:
        return ComponentSpec(name=data["name"], options=data.get("options") or {})
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{str(path / ADAPTER_CONFIG_FILE)!r}: {exc}") from exc


def load_adapter(
    model: nn.Module, directory: str | os.PathLike[str], *, registry: PluginRegistry | None = None
) -> nn.Module:
    """Attach the adapter saved in ``directory`` to ``model`` (a base model of any layout) and load its weights.

    A ``model`` that already carries the same adapter (plugin and options) gets its weights replaced,
    as when a trainer resumes a LoRA run.

    :raises CheckpointError: the folder is not an adapter, its tensors do not fit ``model``, or
        ``model`` carries a different adapter.
    """
    from chameleon_sdk.storage import read_safetensors, verify_manifest

    path = Path(directory)
    spec = read_adapter_spec(path)
    carried = getattr(model, _ATTACHED, None)
    if carried is not None and to_dict(carried[0]) != to_dict(spec):  # refused before any weight is read
        raise CheckpointError(
            f"adapter {str(path)!r} is {to_dict(spec)}, but the model already carries {to_dict(carried[0])}"
        )
    verify_manifest(path)  # a damaged file is named, never loaded (a folder without a manifest is read as it is)
    # read before attaching: a bad file leaves the model as it was
    tensors = read_safetensors(path / ADAPTER_WEIGHTS_FILE)
    if carried is None:
        attach_adapter(model, spec, registry=registry)
    _, method = _attached(model, "load_adapter")
    device = next(model.parameters()).device
    try:
        method.load_state(model, {key: value.to(device) for key, value in tensors.items()})
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"adapter {str(path)!r} does not fit this model: {exc}") from exc
    return model


def merge_adapter(model: nn.Module) -> nn.Module:
    """Fold the attached adapter into ``model``'s weights (in place) and return the plain model."""
    _, method = _attached(model, "merge_adapter")
    with torch.no_grad():
        method.merge(model)
    delattr(model, _ATTACHED)
    forget_frozen_code(model)  # a plugin may merge through ``.data``, which frozen code cannot see
    return model


def merge_checkpoint(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    to: str,
    registry: PluginRegistry | None = None,
) -> Path:
    """``chameleon merge``: load ``base`` (any layout), apply and merge ``adapter``, write ``destination``.

    A base with its tokenizers is written as a whole pipeline (``native``: a saved pipeline, ``hf``:
    the released layout); a bare model folder as a model in that format.
    """
    from chameleon_sdk.checkpoint import load_model, save_model
    from chameleon_sdk.convert import has_tokenizers, write_pipeline
    from chameleon_sdk.pipeline import Pipeline

    if to not in ("native", "hf"):
        raise CheckpointError(f"merge: --format must be 'native' or 'hf', got {to!r}")
    base, destination = Path(base), Path(destination)
    if not base.exists():
        raise CheckpointError(f"merge: the base checkpoint {str(base)!r} does not exist")
    if destination.resolve() in (base.resolve(), Path(adapter).resolve()):
        raise CheckpointError("merge: the destination must differ from the base and the adapter")
    read_adapter_spec(adapter)  # a wrong folder fails before the base model is read
    registry = registry or get_registry()
    if not has_tokenizers(base):
        model = merge_adapter(load_adapter(load_model(base, registry=registry), adapter, registry=registry))
        return save_model(model, destination, format=to, registry=registry)
    pipe = Pipeline.from_pretrained(base, registry=registry)
    if pipe.model is None:
        raise CheckpointError(f"merge: {str(base)!r} holds no model weights to merge into")
    merge_adapter(load_adapter(pipe.model, adapter, registry=registry))
    return write_pipeline(pipe, destination, to)
