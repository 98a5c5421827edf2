"""Applying a ``quantization`` plugin to a loaded model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from chameleon_sdk.config import ComponentSpec
from chameleon_sdk.contracts.quantization import Quantization
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.plugins import PluginRegistry, get_registry

__all__ = ["QuantizeChoice", "quantize_model"]

#: a quantization plugin's name, ``{"name", "options"}``, or a spec
QuantizeChoice = str | ComponentSpec | Mapping[str, Any]


def quantize_model(model: nn.Module, quantize: QuantizeChoice, *, registry: PluginRegistry | None = None) -> nn.Module:
    """``model`` with its weights in the format of the ``quantization`` plugin ``quantize`` names.

    The model is put in eval mode first: quantized weights are for inference.

    :raises PluginNotFoundError: no quantization of that name is registered.
    :raises ConfigError: the plugin did not build a :class:`~chameleon_sdk.plugin_api.Quantization`,
        or did not return a module.
    """
    if not isinstance(quantize, (str, ComponentSpec, Mapping)):
        raise ConfigError(
            f"quantize must be a quantization plugin name such as 'int8-weight-only' or {{'name', 'options'}}, "
            f"got {quantize!r}"
        )
    spec = ComponentSpec.of(quantize)
    method = (registry or get_registry()).build("quantization", spec.name, spec.options)
    if not isinstance(method, Quantization):
        raise ConfigError(f"quantization plugin {spec.name!r} built {type(method).__name__}, which has no quantize()")
    quantized = method.quantize(model.eval())
    if not isinstance(quantized, nn.Module):
        raise ConfigError(f"quantization plugin {spec.name!r} returned {type(quantized).__name__}, not a module")
    for name in ("vocabulary", "checkpoint_info"):  # what loaders attach to the model travels with it
        if quantized is not model and hasattr(model, name):
            setattr(quantized, name, getattr(model, name))
    return quantized.eval()
