"""Which distribution provided each plugin a pipeline names, recorded in ``pipeline.json``.

A saved pipeline names its components (``"sketch"``, ``"sentencepiece"``); on another machine the
package that provides one may be missing, and the name alone does not say what to install. So
:meth:`Pipeline.save_pretrained` stores ``{"modality/sketch": {"distribution": ..., "version": ...}}``
and :meth:`Pipeline.from_pretrained` turns a missing plugin into an error that names the package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from chameleon_sdk.config import ComponentSpec, PipelineConfig
from chameleon_sdk.errors import PluginNotFoundError
from chameleon_sdk.plugins import BUILTIN_DISTRIBUTION, PluginRegistry

__all__ = ["component_providers", "with_install_hint"]

#: PipelineConfig slot -> plugin kind
SLOT_KINDS: Mapping[str, str] = {
    "text_tokenizer": "text_tokenizer",
    "modalities": "modality",
    "attention": "attention",
    "stability": "stability",
    "trainer": "trainer",
    "sampler": "sampler",
    "checkpoint_format": "checkpoint_format",
    "callbacks": "callback",
}


def _components(config: PipelineConfig) -> Iterator[tuple[str, str]]:
    for slot, kind in SLOT_KINDS.items():
        value = getattr(config, slot)
        for spec in value if isinstance(value, tuple) else (value,):
            if isinstance(spec, ComponentSpec):
                yield kind, spec.name


def component_providers(config: PipelineConfig, registry: PluginRegistry) -> dict[str, dict[str, Any]]:
    """``{"kind/name": {"distribution", "version"}}`` for every registered component ``config`` names."""
    found: dict[str, dict[str, Any]] = {}
    for kind, name in _components(config):
        try:
            record = registry.get(kind, name)
        except PluginNotFoundError:
            continue  # a component this registry lacks is reported when the pipeline is built
        found[f"{kind}/{name}"] = {"distribution": record.provider, "version": record.version}
    return found


def with_install_hint(error: PluginNotFoundError, providers: Any) -> PluginNotFoundError:
    """``error`` again, saying which distribution provided the plugin when the pipeline was saved."""
    entry = providers.get(f"{error.kind}/{error.name}") if isinstance(providers, Mapping) else None
    if not isinstance(entry, Mapping) or not isinstance(entry.get("distribution"), str):
        return error
    dist, version = entry["distribution"], entry.get("version")
    if dist == BUILTIN_DISTRIBUTION:
        hint = f"it was built into {dist} {version or ''} when the pipeline was saved; upgrade chameleon-sdk"
    else:
        pinned = f"{dist}=={version}" if isinstance(version, str) else dist
        hint = f"the pipeline was saved with it from distribution {dist!r}: install it (pip install {pinned!r})"
    return PluginNotFoundError(error.kind, error.name, error.available, error.closest, hint=hint)
