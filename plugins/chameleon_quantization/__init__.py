"""Built-in quantizations: ``int8-weight-only`` on torchao (``pip install 'chameleon-sdk[quantize]'``), and
``onednn-packed`` (bf16 weights packed for oneDNN, for decoding on a CPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_quantization.onednn_packed import OneDNNPacked
    from chameleon_quantization.torchao_int8 import Int8WeightOnly, Int8WeightOnlyOptions

__all__ = ["Int8WeightOnly", "Int8WeightOnlyOptions", "OneDNNPacked"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_quantizations(register):
    register(
        "int8-weight-only",
        "chameleon_quantization.torchao_int8:Int8WeightOnly",
        options="chameleon_quantization.torchao_int8:Int8WeightOnlyOptions",
    )
    register("onednn-packed", "chameleon_quantization.onednn_packed:OneDNNPacked")
