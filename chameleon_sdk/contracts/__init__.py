"""Every plugin contract, one module per kind, in one style.

A contract is a ``typing.Protocol``: a plugin provides the members (structural typing) and never
has to subclass anything. Members a component may leave out are protocols of their own (for a
modality: :class:`BatchEncodingModality`, :class:`PartialDecodingModality`,
:class:`ConstrainingModality`, :class:`TrainableModality`), which the core checks with
``isinstance`` instead of probing for attributes. The two kinds whose every member is optional,
:class:`StabilityTrick` and :class:`Callback`, are base classes with no-op members instead: a
trick or a callback overrides the few it needs (and the model calls only those a trick overrides).

Which hook registers which kind, and with which contract, is declared once, on the hook
specifications (:mod:`chameleon_sdk.hookspecs`); :data:`chameleon_sdk.plugin_api.KINDS` is read from them.
Plugin authors import these names from :mod:`chameleon_sdk.plugin_api`.
"""

from typing import TYPE_CHECKING

from chameleon_sdk.lazy_exports import lazy_module_attributes

if TYPE_CHECKING:
    from chameleon_sdk.contracts.adapter import Adapter
    from chameleon_sdk.contracts.attention import AttentionBackend
    from chameleon_sdk.contracts.callback import Callback, call_callbacks
    from chameleon_sdk.contracts.checkpoint_format import CheckpointFormat, ImageTokenizerFormat
    from chameleon_sdk.contracts.image_tokenizer_loss import ImageLossInputs, ImageTokenizerLoss
    from chameleon_sdk.contracts.modality import (
        BatchEncodingModality,
        BlockConstraint,
        ConstrainingModality,
        Modality,
        PartialDecodingModality,
        TrainableModality,
    )
    from chameleon_sdk.contracts.quantization import Quantization
    from chameleon_sdk.contracts.sampler import Sampler
    from chameleon_sdk.contracts.stability import ResidualLayout, StabilityTrick
    from chameleon_sdk.contracts.stateful import Stateful
    from chameleon_sdk.contracts.text_tokenizer import NamedTokenizer, TextTokenizer
    from chameleon_sdk.contracts.trainer import BatchSource, Trainer, TrainResult

__all__ = [
    "Adapter",
    "AttentionBackend",
    "BatchEncodingModality",
    "BatchSource",
    "BlockConstraint",
    "Callback",
    "CheckpointFormat",
    "ConstrainingModality",
    "ImageLossInputs",
    "ImageTokenizerFormat",
    "ImageTokenizerLoss",
    "Modality",
    "NamedTokenizer",
    "PartialDecodingModality",
    "Quantization",
    "ResidualLayout",
    "Sampler",
    "StabilityTrick",
    "Stateful",
    "TextTokenizer",
    "TrainResult",
    "TrainableModality",
    "Trainer",
    "call_callbacks",
]

__getattr__ = lazy_module_attributes(__name__, __file__)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
