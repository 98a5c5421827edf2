"""Built-in checkpoint formats: ``native``, ``hf`` (transformers' layout) and ``original`` (Meta's release).

Each reads models and, through the methods of ``chameleon_sdk.ImageTokenizerFormat``, image
tokenizers (the layouts are in ``vqgan.py``); ``original`` writes models but not image tokenizers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import chameleon_sdk

if TYPE_CHECKING:
    from chameleon_checkpoint.hf import HFFormat, HFOptions
    from chameleon_checkpoint.native import NativeFormat, NativeOptions
    from chameleon_checkpoint.original import OriginalFormat, OriginalOptions

__all__ = ["HFFormat", "HFOptions", "NativeFormat", "NativeOptions", "OriginalFormat", "OriginalOptions"]
__getattr__ = chameleon_sdk.lazy_module_attributes(__name__, __file__)


@chameleon_sdk.hookimpl
def register_checkpoint_formats(register):
    register(
        "native",
        "chameleon_checkpoint.native:NativeFormat",
        options="chameleon_checkpoint.native:NativeOptions",
        writable=True,
    )
    register("hf", "chameleon_checkpoint.hf:HFFormat", options="chameleon_checkpoint.hf:HFOptions", writable=True)
    register(
        "original",
        "chameleon_checkpoint.original:OriginalFormat",
        options="chameleon_checkpoint.original:OriginalOptions",
        writable=True,
    )
