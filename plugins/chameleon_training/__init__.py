"""Built-in trainers (``local``, ``ddp``, ``fsdp``) and training callbacks (``metrics-jsonl``)."""

from __future__ import annotations

import chameleon_sdk
from chameleon_training.distributed import DDPTrainer, DistributedOptions, FSDPOptions, FSDPTrainer
from chameleon_training.local import LocalTrainer
from chameleon_training.metrics import MetricsOptions, MetricsWriter
from chameleon_training.options import TrainerOptions

__all__ = [
    "DDPTrainer",
    "DistributedOptions",
    "FSDPOptions",
    "FSDPTrainer",
    "LocalTrainer",
    "MetricsOptions",
    "MetricsWriter",
    "TrainerOptions",
]


@chameleon_sdk.hookimpl
def register_trainers(register):
    register("local", LocalTrainer, options=TrainerOptions)
    register("ddp", DDPTrainer, options=DistributedOptions)
    register("fsdp", FSDPTrainer, options=FSDPOptions)


@chameleon_sdk.hookimpl
def register_callbacks(register):
    register("metrics-jsonl", MetricsWriter, options=MetricsOptions)
