"""Built-in adapters: ``lora`` (low-rank adaptation, built on peft).

Registered by reference: listing plugins imports neither torch nor peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import chameleon_sdk

if TYPE_CHECKING:
    from chameleon_adapters.lora import LoRA, LoRAOptions

__all__ = ["LoRA", "LoRAOptions"]
__getattr__ = chameleon_sdk.lazy_module_attributes(__name__, __file__)


@chameleon_sdk.hookimpl
def register_adapters(register):
    register("lora", "chameleon_adapters.lora:LoRA", options="chameleon_adapters.lora:LoRAOptions")
