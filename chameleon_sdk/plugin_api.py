"""What plugin authors build on: the contracts, hook marker, model parts and storage helpers.

A plugin imports from :mod:`chameleon_sdk` (the user API: pipelines, documents, configs, errors)
and from here, and from nothing else in the SDK; ``tests/test_import_direction.py`` enforces it.
Names import on first use, as in the package itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk.lazy_exports import lazy_module_attributes

if TYPE_CHECKING:
    from chameleon_sdk.bounded_read import open_regular, read_bounded
    from chameleon_sdk.contracts import (
        Adapter,
        AttentionBackend,
        BatchEncodingModality,
        BatchSource,
        BlockConstraint,
        CheckpointFormat,
        ConstrainingModality,
        ImageLossInputs,
        ImageTokenizerFormat,
        ImageTokenizerLoss,
        Modality,
        NamedTokenizer,
        PartialDecodingModality,
        Quantization,
        ResidualLayout,
        Sampler,
        StabilityTrick,
        Stateful,
        TextTokenizer,
        TrainableModality,
        Trainer,
        call_callbacks,
    )
    from chameleon_sdk.document import png_bytes
    from chameleon_sdk.error_mapping import foreign_errors
    from chameleon_sdk.generation import FixedLengthBlock, VariableLengthBlock
    from chameleon_sdk.hardware import native_bfloat16
    from chameleon_sdk.hookspecs import hookimpl
    from chameleon_sdk.image_io import DEFAULT_MAX_IMAGE_PIXELS, to_rgb
    from chameleon_sdk.image_tokenizer import ImageTokenizerCheckpoint, VQGANArchitecture
    from chameleon_sdk.model import (
        UNTIE_PARTS,
        KVCache,
        LossOutput,
        MaskKind,
        MaskSpec,
        ParameterGroups,
        RMSNorm,
        apply_rotary,
        document_positions,
        parameters_on_meta,
        rotary_tables,
    )
    from chameleon_sdk.model.build import ModelParts, build_parts
    from chameleon_sdk.model.cross_entropy import per_token_cross_entropy
    from chameleon_sdk.model.weights import check_shapes, load_weights
    from chameleon_sdk.plugins import KINDS, PluginRecord
    from chameleon_sdk.progress import progress_bar
    from chameleon_sdk.render import html_page, png_data_uri
    from chameleon_sdk.storage import (
        MANIFEST_FILE,
        atomic_write_bytes,
        atomic_write_text,
        global_rng_state,
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
    from chameleon_sdk.training import Batch
    from chameleon_sdk.training.data import IGNORE
    from chameleon_sdk.training.run import apply_overrides
    from chameleon_sdk.validation import check_int64, check_number, number_validator
    from chameleon_sdk.vocabulary import ModalityBlock

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IGNORE",
    "KINDS",
    "MANIFEST_FILE",
    "UNTIE_PARTS",
    "Adapter",
    "AttentionBackend",
    "Batch",
    "BatchEncodingModality",
    "BatchSource",
    "BlockConstraint",
    "CheckpointFormat",
    "ConstrainingModality",
    "FixedLengthBlock",
    "ImageLossInputs",
    "ImageTokenizerCheckpoint",
    "ImageTokenizerFormat",
    "ImageTokenizerLoss",
    "KVCache",
    "LossOutput",
    "MaskKind",
    "MaskSpec",
    "Modality",
    "ModalityBlock",
    "ModelParts",
    "NamedTokenizer",
    "ParameterGroups",
    "PartialDecodingModality",
    "PluginRecord",
    "Quantization",
    "RMSNorm",
    "ResidualLayout",
    "Sampler",
    "StabilityTrick",
    "Stateful",
    "TextTokenizer",
    "TrainableModality",
    "Trainer",
    "VQGANArchitecture",
    "VariableLengthBlock",
    "apply_overrides",
    "apply_rotary",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_parts",
    "call_callbacks",
    "check_int64",
    "check_number",
    "check_shapes",
    "document_positions",
    "foreign_errors",
    "global_rng_state",
    "hookimpl",
    "html_page",
    "lazy_module_attributes",
    "load_weights",
    "native_bfloat16",
    "number_validator",
    "open_regular",
    "parameters_on_meta",
    "per_token_cross_entropy",
    "png_bytes",
    "png_data_uri",
    "progress_bar",
    "prune_step_directories",
    "read_bounded",
    "read_json",
    "read_safetensors",
    "read_safetensors_shapes",
    "read_torch_file",
    "read_torch_weights",
    "rotary_tables",
    "set_global_rng_state",
    "staging_directory",
    "step_directories",
    "step_directory",
    "to_rgb",
    "verify_dcp_metadata",
    "verify_manifest",
    "write_json",
    "write_manifest",
    "write_safetensors",
    "write_torch_file",
]

__getattr__ = lazy_module_attributes(__name__, __file__)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
