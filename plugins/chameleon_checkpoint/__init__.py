"""Built-in checkpoint formats: ``native``, ``hf`` (transformers' layout) and ``original`` (Meta's release).

Each reads models and, through the methods of ``plugin_api.ImageTokenizerFormat``, image
tokenizers (the layouts are in ``vqgan.py``); ``original`` writes models but not image tokenizers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_checkpoint.hf import HFFormat, HFOptions
    from chameleon_checkpoint.native import NativeFormat, NativeOptions
    from chameleon_checkpoint.original import OriginalFormat, OriginalOptions

__all__ = ["HFFormat", "HFOptions", "NativeFormat", "NativeOptions", "OriginalFormat", "OriginalOptions"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
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
