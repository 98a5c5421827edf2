"""chameleon-sdk: mixed-modal early-fusion models (Chameleon-style), built from plugins.

The user API is what this module exports: pipelines, documents, configs, models, generation,
checkpoints, adapters and errors. Plugin authors add :mod:`chameleon_sdk.plugin_api` (contracts,
the hook marker, model parts, storage helpers); plugins import from those two and nothing else.
Names are imported on first use (PEP 562), so ``import chameleon_sdk`` and the ``chameleon``
command start without importing torch; the ``TYPE_CHECKING`` block below is the one list of where
each name lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chameleon_sdk.lazy_exports import lazy_module_attributes

if TYPE_CHECKING:
    from chameleon_sdk.adapters import attach_adapter, has_adapter, load_adapter, merge_adapter, save_adapter
    from chameleon_sdk.checkpoint import CheckpointInfo, detect_format, load_model, save_model
    from chameleon_sdk.config import (
        ComponentSpec,
        ModelConfig,
        PipelineConfig,
        from_dict,
        load_config,
        save_config,
        to_dict,
    )
    from chameleon_sdk.contracts import Callback, TrainResult
    from chameleon_sdk.corpus import bundled_corpus
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
        TrainingError,
    )
    from chameleon_sdk.generation import DecodeRequest, Guidance, TokenDecoder, generate_tokens
    from chameleon_sdk.generation.events import (
        BlockDone,
        BlockProgress,
        BlockStarted,
        Finished,
        FinishReason,
        GenerationEvent,
        ImageDone,
        ImageProgress,
        ImageStarted,
        TextDelta,
    )
    from chameleon_sdk.image_io import open_image
    from chameleon_sdk.image_tokenizer import (
        ImageTokenizerTrainingConfig,
        detect_image_tokenizer_format,
        load_image_tokenizer,
        read_image_tokenizer,
        save_image_tokenizer,
        train_image_tokenizer,
    )
    from chameleon_sdk.model import (
        MODEL_PRESETS,
        BackendUnavailableError,
        ChameleonModel,
        ModelOutput,
        ModelPreset,
        UnsupportedMaskError,
        model_preset,
    )
    from chameleon_sdk.model.build import build_model
    from chameleon_sdk.pipeline import Pipeline
    from chameleon_sdk.plugins import (
        PluginRegistry,
        available_plugins,
        get_registry,
        register_plugin,
        unregister_plugin,
        use_registry,
    )
    from chameleon_sdk.quantization import quantize_model
    from chameleon_sdk.render import document_to_html, document_to_text, write_document
    from chameleon_sdk.tokenizer import MixedModalTokenizer
    from chameleon_sdk.training import ChatPrompt, Conversation, DataConfig, MixtureData, SourceConfig, Turn
    from chameleon_sdk.vocabulary import Vocabulary

__version__ = "0.1.0"

__all__ = [
    "MODEL_PRESETS",
    "BackendUnavailableError",
    "BlockDone",
    "BlockProgress",
    "BlockStarted",
    "Callback",
    "ChameleonError",
    "ChameleonModel",
    "ChatPrompt",
    "CheckpointError",
    "CheckpointInfo",
    "ComponentSpec",
    "ConfigError",
    "Conversation",
    "DataConfig",
    "DecodeRequest",
    "Document",
    "DocumentError",
    "DuplicatePluginError",
    "FinishReason",
    "Finished",
    "GenerationError",
    "GenerationEvent",
    "Guidance",
    "Image",
    "ImageDecodeError",
    "ImageDone",
    "ImageProgress",
    "ImageStarted",
    "ImageTokenizerTrainingConfig",
    "MixedModalTokenizer",
    "MixtureData",
    "ModelConfig",
    "ModelOutput",
    "ModelPreset",
    "Pipeline",
    "PipelineConfig",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginRegistry",
    "Segment",
    "SourceConfig",
    "Text",
    "TextDelta",
    "TokenDecoder",
    "TokenizationError",
    "TrainResult",
    "TrainingError",
    "Turn",
    "UnsupportedMaskError",
    "Vocabulary",
    "__version__",
    "attach_adapter",
    "available_plugins",
    "build_model",
    "bundled_corpus",
    "detect_format",
    "detect_image_tokenizer_format",
    "document_to_html",
    "document_to_text",
    "from_dict",
    "generate_tokens",
    "get_registry",
    "has_adapter",
    "load_adapter",
    "load_config",
    "load_image_tokenizer",
    "load_model",
    "merge_adapter",
    "model_preset",
    "open_image",
    "quantize_model",
    "read_image_tokenizer",
    "read_jsonl",
    "register_plugin",
    "save_adapter",
    "save_config",
    "save_image_tokenizer",
    "save_model",
    "to_dict",
    "train_image_tokenizer",
    "unregister_plugin",
    "use_registry",
    "write_document",
    "write_jsonl",
]

_lazy_attribute = lazy_module_attributes(__name__, __file__)


def __getattr__(name: str) -> Any:
    import importlib

    if name in ("serve", "plugin_api"):  # subpackages; Starlette loads only when an app is made
        return importlib.import_module(f"{__name__}.{name}")
    plugin_api = importlib.import_module(f"{__name__}.plugin_api")
    if name in plugin_api.__all__:  # plugin authors' names moved there; they keep working for one release
        import warnings

        warnings.warn(
            f"chameleon_sdk.{name} moved to chameleon_sdk.plugin_api.{name}", DeprecationWarning, stacklevel=2
        )
        return getattr(plugin_api, name)
    return _lazy_attribute(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
