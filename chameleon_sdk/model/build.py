"""Building a model from plugin names: look each one up in the registry, check they fit together,
and hand the built parts to :class:`~chameleon_sdk.ChameleonModel`, which knows no registry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from chameleon_sdk.config import ComponentSpec, ModelConfig
from chameleon_sdk.contracts.attention import AttentionBackend
from chameleon_sdk.contracts.stability import ResidualLayout, StabilityTrick, overrides
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.model.masking import MaskKind
from chameleon_sdk.model.routing import ParameterGroups
from chameleon_sdk.model.transformer import ChameleonModel
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.vocabulary import Vocabulary

__all__ = ["ModelParts", "build_model", "build_parts"]

SpecLike = str | ComponentSpec | Mapping[str, Any]


@attrs.frozen(kw_only=True)
class ModelParts:
    """The built plugins a :class:`~chameleon_sdk.ChameleonModel` is made of, already checked to fit.

    ``attention_spec`` and ``stability_specs`` say how they were chosen (checkpoints record them).
    """

    attention: AttentionBackend
    attention_spec: ComponentSpec
    #: the mask kinds the backend declared (always including ``causal``)
    mask_kinds: frozenset[str]
    tricks: tuple[StabilityTrick, ...]
    stability_specs: tuple[ComponentSpec, ...]
    layout: ResidualLayout
    #: how tokens are routed to parameter groups (None: every token uses the same weights)
    groups: ParameterGroups | None


def build_parts(
    config: ModelConfig,
    *,
    attention: SpecLike = "sdpa",
    stability: SpecLike | Iterable[SpecLike] = (),
    registry: PluginRegistry | None = None,
    vocabulary: Vocabulary | None = None,
) -> ModelParts:
    """Build the attention backend and stability tricks named, and check that they fit ``config``.

    :raises ConfigError: an unknown or doubly listed plugin, a backend without the causal mask, a
        trick that is not a :class:`~chameleon_sdk.plugin_api.StabilityTrick`, dropout without the
        trick that applies it, conflicting residual layouts or parameter groups.
    """
    if not isinstance(config, ModelConfig):
        raise ConfigError(
            f"ChameleonModel: expected a ModelConfig, got {type(config).__name__} "
            "(build one with ModelConfig(...) or chameleon_sdk.from_dict(ModelConfig, data))"
        )
    if config.vocab_size is None:
        raise ConfigError("ChameleonModel: config.vocab_size is None; set it (Pipeline.build_model fills it)")
    registry = registry or get_registry()
    attention_spec = ComponentSpec.of(attention)
    record = registry.get("attention", attention_spec.name)
    mask_kinds = frozenset(record.traits.get("mask_kinds", frozenset()))
    if MaskKind.CAUSAL not in mask_kinds:
        raise ConfigError(
            f"attention backend {record.name!r} must declare mask_kinds including 'causal', got {sorted(mask_kinds)}"
        )
    backend = record.build(attention_spec.options)
    if isinstance(stability, (str, Mapping, ComponentSpec)):
        stability = [stability]
    if not isinstance(stability, Iterable):
        raise ConfigError(f"stability must be a list of trick names or specs, got {stability!r}")
    specs = tuple(ComponentSpec.of(s) for s in stability)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"stability tricks must be listed once each, got {names}")
    named = [(s.name, registry.build("stability", s.name, s.options)) for s in specs]
    for name, trick in named:
        if not isinstance(trick, StabilityTrick):
            raise ConfigError(f"stability plugin {name!r} built {type(trick).__name__}, not a StabilityTrick")
    tricks = tuple(trick for _, trick in named)
    if config.dropout > 0 and not any(t.uses_config_dropout for t in tricks):
        raise ConfigError(
            f"ModelConfig.dropout is {config.dropout} but no stability trick applies it; add the 'dropout' trick "
            "or set dropout to 0"
        )
    return ModelParts(
        attention=backend,
        attention_spec=attention_spec,
        mask_kinds=mask_kinds,
        tricks=tricks,
        stability_specs=specs,
        layout=_residual_layout(named),
        groups=_parameter_groups(named, config, vocabulary),
    )


def build_model(
    config: ModelConfig,
    *,
    attention: SpecLike = "sdpa",
    stability: SpecLike | Iterable[SpecLike] = (),
    registry: PluginRegistry | None = None,
    vocabulary: Vocabulary | None = None,
) -> ChameleonModel:
    """A freshly initialised :class:`~chameleon_sdk.ChameleonModel` of ``config`` with the named plugins.

    :param attention: an attention backend's registry name or spec (default ``"sdpa"``).
    :param stability: stability tricks by registry name or spec, applied in order.
    :param registry: where to look the plugins up (default: the process-wide registry).
    :param vocabulary: the token space, when known; a trick that routes tokens to parameter groups
        (``parameter_groups``, e.g. ``mot``) derives the routing from it, and generation reads it.
    """
    parts = build_parts(config, attention=attention, stability=stability, registry=registry, vocabulary=vocabulary)
    return ChameleonModel(config, parts, vocabulary=vocabulary)


def _residual_layout(tricks: Iterable[tuple[str, StabilityTrick]]) -> ResidualLayout:
    chosen: dict[str, ResidualLayout] = {}
    for name, trick in tricks:
        if trick.residual_layout is not None:
            chosen[name] = trick.residual_layout
    if len(set(chosen.values())) > 1:
        raise ConfigError(f"stability tricks ask for conflicting residual layouts: {chosen}")
    return next(iter(chosen.values()), "pre_norm")


def _parameter_groups(
    tricks: Iterable[tuple[str, StabilityTrick]], config: ModelConfig, vocabulary: Vocabulary | None
) -> ParameterGroups | None:
    chosen = {}
    for name, trick in tricks:
        if overrides(trick, "parameter_groups"):
            groups = trick.parameter_groups(config, vocabulary)
            if groups is not None:
                if not isinstance(groups, ParameterGroups):
                    raise ConfigError(f"stability trick {name!r}: parameter_groups returned {groups!r}")
                chosen[name] = groups
    if len(chosen) > 1:
        raise ConfigError(f"only one stability trick may route tokens to parameter groups, got {sorted(chosen)}")
    groups = next(iter(chosen.values()), None)
    if groups is not None and groups.token_group.numel() != config.vocab_size:
        raise ConfigError(
            f"parameter groups route {groups.token_group.numel()} token ids but the model's vocab_size is "
            f"{config.vocab_size}"
        )
    return groups
