"""The transformer core: the model, its KV cache, the attention contract and the trick extension points.

This package knows no attention backend and no stability trick by name; both are plugins.
"""

from __future__ import annotations

from chameleon_sdk.model.cache import KVCache
from chameleon_sdk.model.layers import RMSNorm, apply_rotary, rotary_tables
from chameleon_sdk.model.masking import BackendUnavailableError, MaskKind, MaskSpec, UnsupportedMaskError
from chameleon_sdk.model.meta_device import parameters_on_meta
from chameleon_sdk.model.presets import MODEL_PRESETS, ModelPreset, model_preset
from chameleon_sdk.model.routing import UNTIE_PARTS, ParameterGroups
from chameleon_sdk.model.transformer import ChameleonModel, LossOutput, ModelOutput, document_positions

__all__ = [
    "MODEL_PRESETS",
    "UNTIE_PARTS",
    "BackendUnavailableError",
    "ChameleonModel",
    "KVCache",
    "LossOutput",
    "MaskKind",
    "MaskSpec",
    "ModelOutput",
    "ModelPreset",
    "ParameterGroups",
    "RMSNorm",
    "UnsupportedMaskError",
    "apply_rotary",
    "document_positions",
    "model_preset",
    "parameters_on_meta",
    "rotary_tables",
]
