"""The built-in ``image`` modality: a Chameleon-style VQGAN image tokenizer that encodes and decodes.

Registered through the ``chameleon_sdk`` entry-point group as modality ``"image"``::

    tok = chameleon_sdk.get_registry().build("modality", "image", {"resolution": 64, ...})
    codes = tok.encode(pil_image)            # 1-D LongTensor, block_length codes
    image = tok.decode(codes)                # PIL RGB image
    metrics = tok.fit("images/", {"steps": 2000, "max_seconds": 150})
    tok.save("out/")                          # through the `native` checkpoint format
    released = chameleon_sdk.load_image_tokenizer("chameleon-7b/")   # HF (encoder only) or vqgan.ckpt

and the image-tokenizer losses ``lpips`` (perceptual; weights a user supplies) and ``patch-gan``
(adversarial, hinge loss, adaptive weight), named in the training options' ``losses``.

Modules: ``options`` (the options class), ``vqgan`` (the network), ``pixels`` (preprocessing),
``tokenizer`` (the modality), ``training`` (``fit``, resumable), ``losses`` (the loss plugins).
Checkpoint layouts belong to the ``checkpoint_format`` plugins (``chameleon_sdk.read_image_tokenizer``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_image.losses import LPIPSLoss, LPIPSOptions, PatchGANLoss, PatchGANOptions
    from chameleon_image.options import ImageTokenizerOptions
    from chameleon_image.tokenizer import ImageTokenizer
    from chameleon_image.training import ImageTokenizerTrainer, ImageTrainingOptions

__all__ = [
    "ImageTokenizer",
    "ImageTokenizerOptions",
    "ImageTokenizerTrainer",
    "ImageTrainingOptions",
    "LPIPSLoss",
    "LPIPSOptions",
    "PatchGANLoss",
    "PatchGANOptions",
]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_modalities(register):
    register(
        "image", "chameleon_image.tokenizer:ImageTokenizer", options="chameleon_image.options:ImageTokenizerOptions"
    )


@plugin_api.hookimpl
def register_image_tokenizer_losses(register):
    register("lpips", "chameleon_image.losses:LPIPSLoss", options="chameleon_image.losses:LPIPSOptions")
    register("patch-gan", "chameleon_image.losses:PatchGANLoss", options="chameleon_image.losses:PatchGANOptions")
