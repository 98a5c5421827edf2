"""Training: mixed-modal data, trainer and callback contracts."""

from chameleon_sdk.training.chat import Conversation, Turn
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
    "Conversation",
    "DataConfig",
    "MixtureData",
    "PackedSource",
    "SourceConfig",
    "TrainResult",
    "Trainer",
    "Turn",
    "call_callbacks",
    "is_main_process",
]
