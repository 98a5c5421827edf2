"""Generation: modality-constrained decoding, classifier-free guidance, samplers, streaming."""

from chameleon_sdk.generation.constraints import FixedLengthBlock, ModalityStates, VariableLengthBlock
from chameleon_sdk.generation.engine import Guidance, StepOutput, TokenDecoder, generate_tokens

__all__ = [
    "FixedLengthBlock",
    "Guidance",
    "ModalityStates",
    "StepOutput",
    "TokenDecoder",
    "VariableLengthBlock",
    "generate_tokens",
]
