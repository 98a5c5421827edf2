"""Training: mixed-modal data, trainer and callback contracts."""

from chameleon_sdk.training.contracts import (
    BatchSource,
    Callback,
    Trainer,
    TrainResult,
    call_callbacks,
    is_main_process,
)
from chameleon_sdk.training.data import Batch, DataConfig, MixtureData, PackedSource, SourceConfig

__all__ = [
    "Batch",
    "BatchSource",
    "Callback",
    "DataConfig",
    "MixtureData",
    "PackedSource",
    "SourceConfig",
    "TrainResult",
    "Trainer",
    "call_callbacks",
    "is_main_process",
]
