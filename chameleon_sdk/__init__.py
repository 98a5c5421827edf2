"""chameleon-sdk: mixed-modal early-fusion models (Chameleon-style), built from plugins.

The public API is what this module exports; plugins import only from here.
"""

from __future__ import annotations

from chameleon_sdk.config import (
    ComponentSpec,
    ModelConfig,
    PipelineConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)
from chameleon_sdk.document import Document, Image, Segment, Text, read_jsonl, write_jsonl
from chameleon_sdk.errors import (
    ChameleonError,
    CheckpointError,
    ConfigError,
    DocumentError,
    DuplicatePluginError,
    GenerationError,
    ImageDecodeError,
    PluginError,
    PluginLoadError,
    PluginNotFoundError,
    TokenizationError,
)
from chameleon_sdk.hookspecs import hookimpl
from chameleon_sdk.pipeline import Pipeline
from chameleon_sdk.plugins import (
    KINDS,
    PluginRecord,
    PluginRegistry,
    available_plugins,
    get_registry,
    register_plugin,
    unregister_plugin,
    use_registry,
)
from chameleon_sdk.protocols import Modality, Stateful, TextTokenizer
from chameleon_sdk.vocabulary import ModalityBlock, Vocabulary

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "ChameleonError",
    "CheckpointError",
    "ComponentSpec",
    "ConfigError",
    "Document",
    "DocumentError",
    "DuplicatePluginError",
    "GenerationError",
    "Image",
    "ImageDecodeError",
    "Modality",
    "ModalityBlock",
    "ModelConfig",
    "Pipeline",
    "PipelineConfig",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginRecord",
    "PluginRegistry",
    "Segment",
    "Stateful",
    "Text",
    "TextTokenizer",
    "TokenizationError",
    "Vocabulary",
    "__version__",
    "available_plugins",
    "from_dict",
    "get_registry",
    "hookimpl",
    "load_config",
    "read_jsonl",
    "register_plugin",
    "save_config",
    "to_dict",
    "unregister_plugin",
    "use_registry",
    "write_jsonl",
]
