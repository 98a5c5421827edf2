"""Built-in adapters: ``lora`` (low-rank adaptation, built on peft).

Registered by reference: listing plugins imports neither torch nor peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_adapters.lora import LoRA, LoRAOptions

__all__ = ["LoRA", "LoRAOptions"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_adapters(register):
    register("lora", "chameleon_adapters.lora:LoRA", options="chameleon_adapters.lora:LoRAOptions")
