"""Training: mixed-modal data, chat conversations, and which process writes run files."""

from chameleon_sdk.training.chat import ChatPrompt, Conversation, Turn
from chameleon_sdk.training.data import Batch, DataConfig, MixtureData, PackedSource, SourceConfig
from chameleon_sdk.training.processes import is_main_process

__all__ = [
    "Batch",
    "ChatPrompt",
    "Conversation",
    "DataConfig",
    "MixtureData",
    "PackedSource",
    "SourceConfig",
    "Turn",
    "is_main_process",
]
