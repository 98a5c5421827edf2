"""Built-in trainers (``local``, ``ddp``, ``fsdp``) and training callbacks (``metrics-jsonl``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
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
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_trainers(register):
    register("local", "chameleon_training.local:LocalTrainer", options="chameleon_training.options:TrainerOptions")
    register(
        "ddp", "chameleon_training.distributed:DDPTrainer", options="chameleon_training.distributed:DistributedOptions"
    )
    register("fsdp", "chameleon_training.distributed:FSDPTrainer", options="chameleon_training.distributed:FSDPOptions")


@plugin_api.hookimpl
def register_callbacks(register):
    register(
        "metrics-jsonl", "chameleon_training.metrics:MetricsWriter", options="chameleon_training.metrics:MetricsOptions"
    )
