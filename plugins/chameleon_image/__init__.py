"""The built-in ``image`` modality: a Chameleon-style VQGAN image tokenizer that encodes and decodes.

Registered through the ``chameleon_sdk`` entry-point group as modality ``"image"``::

    tok = chameleon_sdk.get_registry().build("modality", "image", {"resolution": 64, ...})
    codes = tok.encode(pil_image)            # 1-D LongTensor, block_length codes
    image = tok.decode(codes)                # PIL RGB image
    metrics = tok.fit("images/", {"steps": 2000, "max_seconds": 150})
    tok.save("out/")                          # image_tokenizer.safetensors + image_tokenizer.json
    released = chameleon_sdk.load_image_tokenizer("chameleon-7b/")   # HF (encoder only) or vqgan.ckpt

Modules: ``options`` (the options class), ``vqgan`` (the network), ``pixels`` (preprocessing),
``tokenizer`` (the modality), ``training`` (``fit``), ``checkpoints`` (released-weight layouts).
"""

from __future__ import annotations

import chameleon_sdk
from chameleon_image.options import ImageTokenizerOptions
from chameleon_image.tokenizer import ImageTokenizer
from chameleon_image.training import ImageTokenizerTrainer, ImageTrainingOptions

__all__ = ["ImageTokenizer", "ImageTokenizerOptions", "ImageTokenizerTrainer", "ImageTrainingOptions"]


@chameleon_sdk.hookimpl
def register_modalities(register):
    register("image", ImageTokenizer, options=ImageTokenizerOptions)
