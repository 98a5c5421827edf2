"""The ``local`` trainer: one process, AdamW, warm-up + decay, clipping, accumulation, bf16 autocast,
atomic checkpoints with exact resume, and a guard against non-finite steps (the loop is
:mod:`chameleon_training.loop`; ``ddp`` and ``fsdp`` run the same loop)."""

from __future__ import annotations

from chameleon_training.loop import (
    LoopTrainer,
    apply_partial_training,
    enable_activation_checkpointing,
    parameter_groups,
    resolve_precision,
)

__all__ = [
    "LocalTrainer",
    "apply_partial_training",
    "enable_activation_checkpointing",
    "parameter_groups",
    "resolve_precision",
]


class LocalTrainer(LoopTrainer):
    """Single-process training loop (CPU or one GPU), on the model where it is."""
