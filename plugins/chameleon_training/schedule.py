"""Learning rate as a pure function of the step (so a resumed run needs no scheduler state)."""

from __future__ import annotations

import math

from chameleon_training.options import TrainerOptions


def learning_rate(options: TrainerOptions, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``."""
    peak, floor = options.lr, options.lr * options.min_lr_ratio
    if step < options.warmup_steps:
        return peak * (step + 1) / options.warmup_steps
    span = max(1, total_steps - options.warmup_steps - 1)
    progress = min(1.0, (step - options.warmup_steps) / span)
    if options.schedule == "constant":
        return peak
    if options.schedule == "linear":
        return peak + (floor - peak) * progress
    if options.schedule == "exponential":
        return peak * (max(floor, 1e-12) / peak) ** progress
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
