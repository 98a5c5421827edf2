"""Built-in trainers (``local``) and training callbacks (``metrics-jsonl``)."""

from __future__ import annotations

import chameleon_sdk
from chameleon_training.local import LocalTrainer
from chameleon_training.metrics import MetricsOptions, MetricsWriter
from chameleon_training.options import TrainerOptions

__all__ = ["LocalTrainer", "MetricsOptions", "MetricsWriter", "TrainerOptions"]


@chameleon_sdk.hookimpl
def register_trainers(register):
    register("local", LocalTrainer, options=TrainerOptions)


@chameleon_sdk.hookimpl
def register_callbacks(register):
    register("metrics-jsonl", MetricsWriter, options=MetricsOptions)
