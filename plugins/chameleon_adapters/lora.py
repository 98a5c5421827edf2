"""LoRA (Hu et al., 2021) on peft: ``W x + (alpha / rank) * B A x`` on the chosen projections.

peft's ``inject_adapter_in_model`` wraps the matching ``nn.Linear`` modules in place, so the model
keeps its class and its forward (``model(ids, targets=...)``), and every trainer trains it as it is.
The target ``head-image-rows`` adapts only the head's image-code rows, which peft cannot; a
:class:`~chameleon_adapters.rows.RowLoRA` of this package does it.
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
#: the target that adapts only the head's rows of image codes (Anole's target, with a low-rank update)
IMAGE_ROWS = "head-image-rows"


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
            f"{[*sorted(TARGET_GROUPS), IMAGE_ROWS]}, got {value!r}"
        )
    if IMAGE_ROWS in value and "head" in value:
        raise ConfigError(f"lora targets 'head' and {IMAGE_ROWS!r} overlap: choose one")


@attrs.frozen(kw_only=True)
class LoRAOptions:
    """Options of ``lora``.

    :param rank: the rank ``r`` of the update ``B A``.
    :param alpha: the update is scaled by ``alpha / rank``.
    :param dropout: dropout on the adapter's input while training.
    :param targets: which ``nn.Linear`` modules get an adapter: groups (``attention``: wq/wk/wv/wo,
        ``mlp``: w1/w2/w3, ``head``: the output projection, ``head-image-rows``: only the head's
        rows of image codes, which needs a model whose vocabulary has an ``image`` block) or
        ``fnmatch`` patterns over module names (``"layers.3[01].attention.w[qv]"``).
    """

    rank: int = attrs.field(default=8, validator=_positive)
    alpha: float = attrs.field(default=16.0, validator=_positive)
    dropout: float = attrs.field(default=0.0, validator=_dropout)
    targets: tuple[str, ...] = attrs.field(default=("attention",), converter=tuple, validator=_targets)

    def patterns(self) -> tuple[str, ...]:
        """The module-name patterns peft adapts (every target but ``head-image-rows``)."""
        return tuple(p for t in self.targets if t != IMAGE_ROWS for p in TARGET_GROUPS.get(t, (t,)))


class LoRA:
    """Low-rank adapters on the chosen linear projections (peft's LoRA layers)."""

    adapter_name = "default"

    def __init__(self, options: LoRAOptions | None = None) -> None:
        self.options = options or LoRAOptions()

    def attach(self, model: nn.Module) -> None:
        patterns = self.options.patterns()
        if patterns:
            self._attach_peft(model, patterns)
        if IMAGE_ROWS in self.options.targets:
            self._attach_image_rows(model)
        for name, param in model.named_parameters():  # peft freezes the base too, but not when it adapts nothing
            param.requires_grad_(_is_adapter_tensor(name))

    def _attach_peft(self, model: nn.Module, patterns: tuple[str, ...]) -> None:
        from peft import LoraConfig, inject_adapter_in_model

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

    def _attach_image_rows(self, model: nn.Module) -> None:
        from chameleon_adapters.rows import RowLoRA

        vocabulary = getattr(model, "vocabulary", None)
        head = getattr(model, "output", None)
        if vocabulary is None or "image" not in vocabulary.blocks:
            raise ConfigError(f"lora target {IMAGE_ROWS!r} needs a model whose vocabulary has an 'image' block")
        if type(head) is not nn.Linear or head.bias is not None:
            raise ConfigError(f"lora target {IMAGE_ROWS!r} needs the model's head (output) to be a bias-free nn.Linear")
        rows = vocabulary.code_mask("image")[: head.out_features].nonzero().squeeze(1)
        options = self.options
        model.output = RowLoRA(head, rows, rank=options.rank, alpha=options.alpha, dropout=options.dropout)

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = _row_tensors(model)
        if self.options.patterns():
            from peft import get_peft_model_state_dict

            tensors.update(get_peft_model_state_dict(model, adapter_name=self.adapter_name))
        return tensors

    def load_state(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        expected = set(self.state(model))
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        if missing or unexpected:
            raise KeyError(f"missing adapter tensors {missing[:5]}, unexpected {unexpected[:5]}")
        rows = _row_tensors(model)
        # a tensor of another shape is a RuntimeError naming it, strict or not
        model.load_state_dict({key: tensors[key] for key in rows}, strict=False)
        if self.options.patterns():
            from peft import set_peft_model_state_dict

            peft_tensors = {key: value for key, value in tensors.items() if key not in rows}
            set_peft_model_state_dict(model, peft_tensors, adapter_name=self.adapter_name)

    def merge(self, model: nn.Module) -> None:
        from peft.tuners.lora import LoraLayer

        from chameleon_adapters.rows import RowLoRA

        head = getattr(model, "output", None)
        if isinstance(head, RowLoRA):
            model.output = head.merged()
        layers = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
        for name, layer in layers:
            layer.merge(adapter_names=[self.adapter_name])
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, layer.get_base_layer())
        if hasattr(model, "peft_config"):
            del model.peft_config


def _is_adapter_tensor(name: str) -> bool:
    """Whether parameter ``name`` is an adapter's: peft's ``lora_A``/``lora_B`` or RowLoRA's ``rows_A``/``rows_B``."""
    return any(part.startswith(("lora_", "rows_")) for part in name.split("."))


def _row_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The RowLoRA weights of ``model`` by parameter name (the tensors themselves, not copies)."""
    from chameleon_adapters.rows import RowLoRA

    return {
        f"{name}.{leaf}": param
        for name, module in model.named_modules()
        if isinstance(module, RowLoRA)
        for leaf, param in (("rows_A", module.rows_A), ("rows_B", module.rows_B))
    }
