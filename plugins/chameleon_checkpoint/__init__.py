"""Built-in checkpoint formats: ``native``, ``hf`` (transformers' layout) and ``original`` (Meta's release).

Each reads models and, through the methods of ``chameleon_sdk.ImageTokenizerFormat``, image
tokenizers (the layouts are in ``vqgan.py``); ``original`` writes models but not image tokenizers.
"""

from __future__ import annotations

import chameleon_sdk
from chameleon_checkpoint.hf import HFFormat, HFOptions
from chameleon_checkpoint.native import NativeFormat, NativeOptions
from chameleon_checkpoint.original import OriginalFormat, OriginalOptions

__all__ = ["HFFormat", "HFOptions", "NativeFormat", "NativeOptions", "OriginalFormat", "OriginalOptions"]


@chameleon_sdk.hookimpl
def register_checkpoint_formats(register):
    register("native", NativeFormat, options=NativeOptions, writable=True)
    register("hf", HFFormat, options=HFOptions, writable=True)
    register("original", OriginalFormat, options=OriginalOptions, writable=True)
