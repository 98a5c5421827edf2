"""LoRA (Hu et al., 2021) on peft: ``W x + (alpha / rank) * B A x`` on the chosen projections.

peft's ``inject_adapter_in_model`` wraps the matching ``nn.Linear`` modules in place, so the model
keeps its class and its forward (``model(ids, targets=...)``), and every trainer trains it as it is.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping

import attrs
import torch
from torch import nn

from chameleon_sdk import ConfigError

#: shorthand target names -> module-name patterns (the names of this SDK's model)
TARGET_GROUPS: Mapping[str, tuple[str, ...]] = {
    "attention": ("layers.*.attention.wq", "layers.*.attention.wk", "layers.*.attention.wv", "layers.*.attention.wo"),
    "mlp": ("layers.*.feed_forward.w1", "layers.*.feed_forward.w2", "layers.*.feed_forward.w3"),
    "head": ("output",),
}


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"lora option {attribute.name} must be > 0, got {value!r}")


def _dropout(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"lora option dropout must be in [0, 1), got {value!r}")


def _targets(instance: object, attribute: attrs.Attribute, value: tuple[str, ...]) -> None:
    if not value or not all(isinstance(t, str) and t for t in value):
        raise ConfigError(
            f"lora option targets must be a non-empty list of module-name patterns or groups "
            f"{sorted(TARGET_GROUPS)}, got {value!r}"
        )


@attrs.frozen(kw_only=True)
class LoRAOptions:
    """Options of ``lora``.

    :param rank: the rank ``r`` of the update ``B A``.
    :param alpha: the update is scaled by ``alpha / rank``.
    :param dropout: dropout on the adapter's input while training.
    :param targets: which ``nn.Linear`` modules get an adapter: groups (``attention``: wq/wk/wv/wo,
        ``mlp``: w1/w2/w3, ``head``: the output projection) or ``fnmatch`` patterns over module
        names (``"layers.3[01].attention.w[qv]"``).
    """

    rank: int = attrs.field(default=8, validator=_positive)
    alpha: float = attrs.field(default=16.0, validator=_positive)
    dropout: float = attrs.field(default=0.0, validator=_dropout)
    targets: tuple[str, ...] = attrs.field(default=("attention",), converter=tuple, validator=_targets)

    def patterns(self) -> tuple[str, ...]:
        """The module-name patterns the targets stand for."""
        return tuple(p for t in self.targets for p in TARGET_GROUPS.get(t, (t,)))


class LoRA:
    """Low-rank adapters on the chosen linear projections (peft's LoRA layers)."""

    adapter_name = "default"

    def __init__(self, options: LoRAOptions | None = None) -> None:
        self.options = options or LoRAOptions()

    def attach(self, model: nn.Module) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        patterns = self.options.patterns()
        names = [name for name, module in model.named_modules() if name]
        matched = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not matched:
            raise ConfigError(f"lora targets {list(self.options.targets)} match no module of the model")
        unsupported = [n for n in matched if not isinstance(model.get_submodule(n), nn.Linear)]
        if unsupported:
            raise ConfigError(
                f"lora targets must be nn.Linear modules; these are not: {unsupported[:5]} (untied MoT parts?)"
            )
        config = LoraConfig(
            r=self.options.rank,
            lora_alpha=self.options.alpha,
            lora_dropout=self.options.dropout,
            # peft matches a string as one regex against each full module name
            target_modules="|".join(fnmatch.translate(p) for p in patterns),
            bias="none",
        )
        inject_adapter_in_model(config, model, adapter_name=self.adapter_name)

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return dict(get_peft_model_state_dict(model, adapter_name=self.adapter_name))

    def load_state(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        from peft import set_peft_model_state_dict

        expected = set(self.state(model))
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise KeyError(f"missing adapter tensors {missing[:5]}, unexpected {unexpected[:5]}")
        set_peft_model_state_dict(model, dict(tensors), adapter_name=self.adapter_name)

    def merge(self, model: nn.Module) -> None:
        from peft.tuners.lora import LoraLayer

        layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
        for name, layer in layers:
            layer.merge(adapter_names=[self.adapter_name])
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
        if hasattr(model, "peft_config"):
            del model.peft_config
