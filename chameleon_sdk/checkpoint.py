"""Model checkpoints: the format contract, format detection, load and save.

A checkpoint format is a plugin of kind ``checkpoint_format`` whose factory builds an object
following :class:`CheckpointFormat`. :func:`load_model` asks every registered format whether it
recognises a path and lets the single one that does load it; :func:`save_model` lets the named
format write into a fresh temporary directory, then swaps that directory into place, so a crash
never leaves a half-written checkpoint behind.

What format plugins build on (JSON, safetensors and torch files, manifests, staging directories,
:func:`~chameleon_sdk.plugin_api.load_weights`) is in :mod:`chameleon_sdk.plugin_api`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import torch

from chameleon_sdk.contracts.checkpoint_format import CheckpointFormat
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import ChameleonError, CheckpointError
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.quantization import QuantizeChoice, quantize_model
from chameleon_sdk.storage import checked_path, staging_directory, verify_manifest

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "KIND",
    "CheckpointInfo",
    "claiming_format",
    "detect_format",
    "load_model",
    "registered_formats",
    "save_model",
]

KIND = "checkpoint_format"


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """Where a loaded model came from; kept on the model as ``model.checkpoint_info``.

    ``metadata`` holds whatever the format needs to write the checkpoint back faithfully (for the
    ``hf`` format: the original ``config.json``, whose ``vq_config`` the image tokenizer needs).
    """

    format: str
    path: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


# -- detection, load, save ---------------------------------------------------------------------


def registered_formats(registry: PluginRegistry) -> dict[str, CheckpointFormat]:
    """Every format that builds with default options (one needing options can still be named)."""
    formats = {}
    for record in registry.records(KIND):
        try:
            formats[record.name] = record.build()
        except ChameleonError:
            continue
    return formats


def detect_format(path: str | os.PathLike[str], *, registry: PluginRegistry | None = None) -> str:
    """The name of the one registered format that recognises ``path``.

    :raises CheckpointError: when ``path`` does not exist, or no format (or more than one) claims it.
    """
    formats = registered_formats(registry or get_registry())
    return claiming_format(
        path,
        {name: fmt.detect for name, fmt in formats.items()},
        missing="checkpoint {path} does not exist",
        unclaimed="no checkpoint format recognises {path} (it holds {listing}); "
        f"registered formats: {sorted(formats) or 'none'}",
    )


def claiming_format(path: Any, detectors: Mapping[str, Callable[[Path], bool]], *, missing: str, unclaimed: str) -> str:
    """The one name whose detector claims ``path``; :class:`CheckpointError` otherwise.

    ``missing`` and ``unclaimed`` are the messages (``{path}``: the quoted path, ``{listing}``: up to
    ten names the folder holds).
    """
    path = checked_path(path)
    if not path.exists():
        raise CheckpointError(missing.format(path=repr(str(path))))
    claimed = sorted(name for name, detect in detectors.items() if detect(path))
    if len(claimed) == 1:
        return claimed[0]
    if not claimed:
        listing = sorted(p.name for p in path.iterdir())[:10] if path.is_dir() else [path.name]
        raise CheckpointError(unclaimed.format(path=repr(str(path)), listing=listing))
    raise CheckpointError(f"{str(path)!r} is claimed by several checkpoint formats {claimed}; pass format=...")


def load_model(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    options: Any = None,
    registry: PluginRegistry | None = None,
    dtype: torch.dtype | None = None,
    verify: bool = True,
    quantize: QuantizeChoice | None = None,
) -> nn.Module:
    """Load a model checkpoint, detecting its format unless ``format`` names one.

    :param path: a checkpoint directory (or file, for formats that use one).
    :param format: a ``checkpoint_format`` plugin name (``"native"``, ``"hf"``, ``"original"``).
    :param options: options for that format's plugin (a mapping or its options class).
    :param dtype: the dtype of the loaded model's floating-point weights (default: the model's own,
        float32); the built-in formats read each weight straight into it.
    :param verify: check the files against the directory's ``manifest.json`` first (a directory
        without one, such as a Hugging Face download, is loaded as it is).
    :param quantize: a ``quantization`` plugin (``"int8-weight-only"``, or ``{"name", "options"}``)
        applied after the cast to ``dtype``; see :func:`chameleon_sdk.quantize_model`.
    :returns: the model, in eval mode, with ``model.checkpoint_info`` describing its source.
    :raises CheckpointError: on a missing or corrupt file (named), a shape mismatch (key and both shapes).
    """
    registry = registry or get_registry()
    path = checked_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"load_model: dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
    if verify and path.is_dir():
        verify_manifest(path)
    name = format or detect_format(path, registry=registry)
    fmt = registry.build(KIND, name, options)
    with foreign_errors(f"checkpoint {str(path)!r} ({name} format)", CheckpointError, interpreting=True):
        if dtype is not None and _takes_dtype(fmt.load):
            model = fmt.load(path, registry=registry, dtype=dtype)
        else:
            model = fmt.load(path, registry=registry)
    if dtype is not None:
        model = model.to(dtype)  # nothing to do when the format loaded in dtype
    if quantize is not None:
        model = quantize_model(model, quantize, registry=registry)
    return model.eval()


def _takes_dtype(load: Callable[..., Any]) -> bool:
    """Whether a format's ``load`` accepts ``dtype=`` (formats written before it existed do not)."""
    try:
        parameters = inspect.signature(load).parameters
    except (TypeError, ValueError):
        return False
    return "dtype" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: str = "native",
    options: Any = None,
    registry: PluginRegistry | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory of ``format``, atomically.

    The format writes into a temporary sibling directory that then replaces ``path`` in one rename,
    so readers see either the old checkpoint or the complete new one; ``manifest.json`` (SHA-256 and
    size of every file) is written last.
    """
    registry = registry or get_registry()
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"save_model: expected a torch.nn.Module, got {type(model).__name__}")
    fmt = registry.build(KIND, format, options)
    path = checked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(path) as tmp:
        fmt.save(model, tmp)
    return path


def __getattr__(name: str) -> Any:
    # the helpers this module held moved to chameleon_sdk.plugin_api; the old names keep working for one release
    from chameleon_sdk import plugin_api

    if name in plugin_api.__all__:
        warnings.warn(
            f"chameleon_sdk.checkpoint.{name} moved to chameleon_sdk.plugin_api.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(plugin_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
