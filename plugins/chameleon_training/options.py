"""Options of the built-in trainers (AdamW with the paper's defaults)."""

from __future__ import annotations

from typing import Literal

import attrs

from chameleon_sdk import ConfigError
from chameleon_sdk.plugin_api import check_number, number_validator

_non_negative = number_validator(low=0, label="trainer option")
_positive = number_validator(low=0, low_open=True, label="trainer option")
_count = number_validator(integer=True, low=1, label="trainer option")
_non_negative_count = number_validator(integer=True, low=0, label="trainer option")


def _betas(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ConfigError(f"trainer option betas must be two numbers (beta1, beta2), got {value!r}")
    for i, beta in enumerate(value):
        check_number(beta, f"trainer option betas[{i}]", low=0, high=1, high_open=True)


def _patterns(instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not all(isinstance(p, str) for p in value):
        raise ConfigError(f"trainer option freeze must be a list of name patterns, got {value!r}")


@attrs.frozen(kw_only=True)
class TrainerOptions:
    """Optimisation and run options.

    :param lr: peak learning rate (the paper: 1e-4 for the 7B/34B; small models want more).
    :param betas: AdamW betas (paper: 0.9, 0.95).
    :param eps: AdamW epsilon (paper: 1e-5).
    :param weight_decay: decoupled weight decay on 2-D weights only (paper: 0.1).
    :param warmup_steps: linear warm-up from 0 to ``lr``.
    :param schedule: after warm-up: ``cosine``, ``linear`` (to ``min_lr_ratio * lr``),
        ``exponential`` (decays to ``min_lr_ratio * lr`` at the last step) or ``constant``.
    :param grad_clip: global gradient-norm clip (0: off; the norm is still reported).
    :param grad_accum: micro-batches per optimizer step (losses weighted by their token counts).
    :param precision: ``auto`` (bf16 autocast where it was measured to pay: CPUs with AMX or AVX512-BF16, bf16 GPUs;
        else fp32), ``bf16`` or ``fp32`` (exact tests).
    :param activation_checkpointing: recompute each block's activations in the backward pass.
    :param compile: run the forward pass through ``torch.compile``.
    :param checkpoint_every: write a checkpoint every N steps (0: only at the end).
    :param keep_last: checkpoints kept on disk.
    :param max_nonfinite: stop with an error after this many non-finite steps in a row.
    :param progress: show a progress bar.
    :param freeze: parameter-name patterns (``fnmatch``, e.g. ``"layers.0.*"``) kept frozen.
    :param anole: the Anole recipe: train only the output-head rows of the image codes (everything
        else frozen); needs a model that carries its vocabulary.
    """

    lr: float = attrs.field(default=3e-4, validator=_positive)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), validator=_betas)
    eps: float = attrs.field(default=1e-5, validator=_positive)
    weight_decay: float = attrs.field(default=0.1, validator=_non_negative)
    warmup_steps: int = attrs.field(default=0, validator=_non_negative_count)
    schedule: Literal["cosine", "linear", "exponential", "constant"] = attrs.field(
        default="cosine", validator=attrs.validators.in_(("cosine", "linear", "exponential", "constant"))
    )
    min_lr_ratio: float = attrs.field(default=0.1, validator=_non_negative)
    grad_clip: float = attrs.field(default=1.0, validator=_non_negative)
    grad_accum: int = attrs.field(default=1, validator=_count)
    precision: Literal["auto", "bf16", "fp32"] = attrs.field(
        default="auto", validator=attrs.validators.in_(("auto", "bf16", "fp32"))
    )
    activation_checkpointing: bool = False
    compile: bool = False
    checkpoint_every: int = attrs.field(default=0, validator=_non_negative_count)
    keep_last: int = attrs.field(default=2, validator=_count)
    max_nonfinite: int = attrs.field(default=5, validator=_count)
    progress: bool = True
    freeze: tuple[str, ...] = attrs.field(default=(), validator=_patterns)
    anole: bool = False
