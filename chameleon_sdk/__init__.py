"""chameleon-sdk: mixed-modal early-fusion models (Chameleon-style), built from plugins.

The public API is what this module exports; plugins import only from here. Names are imported on
first use (PEP 562), so ``import chameleon_sdk`` and the ``chameleon`` command start without
importing torch; the ``TYPE_CHECKING`` block below is the one list of where each name lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from chameleon_sdk.lazy_exports import lazy_module_attributes

if TYPE_CHECKING:
    from chameleon_sdk.adapters import Adapter, attach_adapter, load_adapter, merge_adapter, save_adapter
    from chameleon_sdk.bounded_read import open_regular, read_bounded
    from chameleon_sdk.checkpoint import CheckpointFormat, CheckpointInfo, detect_format, load_model, save_model
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
    from chameleon_sdk.error_mapping import foreign_errors
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
    from chameleon_sdk.generation import (
        BlockConstraint,
        FixedLengthBlock,
        Guidance,
        TokenDecoder,
        VariableLengthBlock,
        generate_tokens,
    )
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
    from chameleon_sdk.hookspecs import hookimpl
    from chameleon_sdk.image_io import DEFAULT_MAX_IMAGE_PIXELS, open_image, to_rgb
    from chameleon_sdk.image_tokenizer import (
        ImageLossInputs,
        ImageTokenizerCheckpoint,
        ImageTokenizerFormat,
        ImageTokenizerLoss,
        ImageTokenizerTrainingConfig,
        VQGANArchitecture,
        detect_image_tokenizer_format,
        load_image_tokenizer,
        read_image_tokenizer,
        save_image_tokenizer,
        train_image_tokenizer,
    )
    from chameleon_sdk.model import (
        MODEL_PRESETS,
        UNTIE_PARTS,
        AttentionBackend,
        BackendUnavailableError,
        ChameleonModel,
        KVCache,
        LossOutput,
        MaskKind,
        MaskSpec,
        ModelOutput,
        ModelPreset,
        ParameterGroups,
        ResidualLayout,
        RMSNorm,
        StabilityTrick,
        UnsupportedMaskError,
        apply_rotary,
        document_positions,
        model_preset,
        parameters_on_meta,
        rotary_tables,
    )
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
    from chameleon_sdk.progress import progress_bar
    from chameleon_sdk.protocols import Modality, Quantization, Stateful, TextTokenizer, TrainableModality
    from chameleon_sdk.quantization import quantize_model
    from chameleon_sdk.storage import (
        MANIFEST_FILE,
        check_shapes,
        global_rng_state,
        load_weights,
        prune_step_directories,
        read_json,
        read_safetensors,
        read_safetensors_shapes,
        read_torch_file,
        read_torch_weights,
        set_global_rng_state,
        staging_directory,
        step_directories,
        step_directory,
        verify_dcp_metadata,
        verify_manifest,
        write_json,
        write_manifest,
        write_safetensors,
        write_torch_file,
    )
    from chameleon_sdk.tokenizer import MixedModalTokenizer
    from chameleon_sdk.training import (
        Batch,
        BatchSource,
        Callback,
        Conversation,
        DataConfig,
        MixtureData,
        SourceConfig,
        Trainer,
        TrainResult,
        Turn,
        call_callbacks,
    )
    from chameleon_sdk.validation import check_int64, check_number, number_validator
    from chameleon_sdk.vocabulary import ModalityBlock, Vocabulary

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "KINDS",
    "MANIFEST_FILE",
    "MODEL_PRESETS",
    "UNTIE_PARTS",
    "Adapter",
    "AttentionBackend",
    "BackendUnavailableError",
    "Batch",
    "BatchSource",
    "BlockConstraint",
    "BlockDone",
    "BlockProgress",
    "BlockStarted",
    "Callback",
    "ChameleonError",
    "ChameleonModel",
    "CheckpointError",
    "CheckpointFormat",
    "CheckpointInfo",
    "ComponentSpec",
    "ConfigError",
    "Conversation",
    "DataConfig",
    "Document",
    "DocumentError",
    "DuplicatePluginError",
    "FinishReason",
    "Finished",
    "FixedLengthBlock",
    "GenerationError",
    "GenerationEvent",
    "Guidance",
    "Image",
    "ImageDecodeError",
    "ImageDone",
    "ImageLossInputs",
    "ImageProgress",
    "ImageStarted",
    "ImageTokenizerCheckpoint",
    "ImageTokenizerFormat",
    "ImageTokenizerLoss",
    "ImageTokenizerTrainingConfig",
    "KVCache",
    "LossOutput",
    "MaskKind",
    "MaskSpec",
    "MixedModalTokenizer",
    "MixtureData",
    "Modality",
    "ModalityBlock",
    "ModelConfig",
    "ModelOutput",
    "ModelPreset",
    "ParameterGroups",
    "Pipeline",
    "PipelineConfig",
    "PluginError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginRecord",
    "PluginRegistry",
    "Quantization",
    "RMSNorm",
    "ResidualLayout",
    "Segment",
    "SourceConfig",
    "StabilityTrick",
    "Stateful",
    "Text",
    "TextDelta",
    "TextTokenizer",
    "TokenDecoder",
    "TokenizationError",
    "TrainResult",
    "TrainableModality",
    "Trainer",
    "TrainingError",
    "Turn",
    "UnsupportedMaskError",
    "VQGANArchitecture",
    "VariableLengthBlock",
    "Vocabulary",
    "__version__",
    "apply_rotary",
    "attach_adapter",
    "available_plugins",
    "call_callbacks",
    "check_int64",
    "check_number",
    "check_shapes",
    "detect_format",
    "detect_image_tokenizer_format",
    "document_positions",
    "foreign_errors",
    "from_dict",
    "generate_tokens",
    "get_registry",
    "global_rng_state",
    "hookimpl",
    "lazy_module_attributes",
    "load_adapter",
    "load_config",
    "load_image_tokenizer",
    "load_model",
    "load_weights",
    "merge_adapter",
    "model_preset",
    "number_validator",
    "open_image",
    "open_regular",
    "parameters_on_meta",
    "progress_bar",
    "prune_step_directories",
    "quantize_model",
    "read_bounded",
    "read_image_tokenizer",
    "read_json",
    "read_jsonl",
    "read_safetensors",
    "read_safetensors_shapes",
    "read_torch_file",
    "read_torch_weights",
    "register_plugin",
    "rotary_tables",
    "save_adapter",
    "save_config",
    "save_image_tokenizer",
    "save_model",
    "set_global_rng_state",
    "staging_directory",
    "step_directories",
    "step_directory",
    "to_dict",
    "to_rgb",
    "train_image_tokenizer",
    "unregister_plugin",
    "use_registry",
    "verify_dcp_metadata",
    "verify_manifest",
    "write_json",
    "write_jsonl",
    "write_manifest",
    "write_safetensors",
    "write_torch_file",
]

_lazy_attribute = lazy_module_attributes(__name__, __file__)


def __getattr__(name: str) -> Any:
    if name == "serve":  # the subpackage (cs.serve.create_app); Starlette loads only when an app is made
        import importlib

        return importlib.import_module(f"{__name__}.serve")
    return _lazy_attribute(name)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
