"""Generation: modality-constrained decoding, classifier-free guidance, samplers, streaming."""

from chameleon_sdk.generation.constraints import FixedLengthBlock, ModalityStates, VariableLengthBlock
from chameleon_sdk.generation.engine import StepOutput, TokenDecoder, generate_tokens
from chameleon_sdk.generation.request import DecodeRequest, Guidance

__all__ = [
    "DecodeRequest",
    "FixedLengthBlock",
    "Guidance",
    "ModalityStates",
    "StepOutput",
    "TokenDecoder",
    "VariableLengthBlock",
    "generate_tokens",
]
