"""Built-in quantizations: ``int8-weight-only`` on torchao (``pip install 'chameleon-sdk[quantize]'``)."""

from __future__ import annotations

import chameleon_sdk
from chameleon_quantization.torchao_int8 import Int8WeightOnly, Int8WeightOnlyOptions

__all__ = ["Int8WeightOnly", "Int8WeightOnlyOptions"]


@chameleon_sdk.hookimpl
def register_quantizations(register):
    register("int8-weight-only", Int8WeightOnly, options=Int8WeightOnlyOptions)
