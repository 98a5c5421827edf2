"""Images <-> pixel tensors, as each release prepares them.

In, Meta's rule (``preprocessing="meta"``): any input -> RGB (:func:`chameleon_sdk.plugin_api.to_rgb`: alpha
over white, first frame, ...), shortest side resized to the resolution with LANCZOS, centre crop,
``x / 255 * 2 - 1`` -> ``[3, R, R]`` float32 in ``[-1, 1]``.

In, ``transformers``' rule (``preprocessing="hf"``, its ``ChameleonImageProcessor`` with the PIL
backend): PIL ``alpha_composite`` on white when the image has alpha or a transparency key, shortest
side resized with the configured filter (the long side truncated, ``int()``), centre crop with the
offset rounded down, ``(float32(x * rescale_factor) - mean) / std``.

Out: clamp to ``[-1, 1]``, ``(x + 1) / 2 * 255`` **rounded** to 8 bits. (The reference truncates,
which darkens every pixel by half a level on average; rounding is the unbiased choice.)
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

from chameleon_image.options import ImageTokenizerOptions
from chameleon_sdk import TokenizationError, open_image
from chameleon_sdk.plugin_api import to_rgb

_FILTERS = {
    "lanczos": PIL.Image.LANCZOS,
    "bicubic": PIL.Image.BICUBIC,
    "bilinear": PIL.Image.BILINEAR,
    "nearest": PIL.Image.NEAREST,
    "box": PIL.Image.BOX,
    "hamming": PIL.Image.HAMMING,
}


def fit_square(image: PIL.Image.Image, resolution: int) -> PIL.Image.Image:
    """Resize the shortest side to ``resolution`` (LANCZOS) and centre-crop a square."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(scale * width)), max(resolution, round(scale * height)))
    if size != image.size:
        image = image.resize(size, PIL.Image.LANCZOS)
    left, top = (image.width - resolution) // 2, (image.height - resolution) // 2
    if image.size != (resolution, resolution):
        image = image.crop((left, top, left + resolution, top + resolution))
    return image


def pixels_from_image(image: PIL.Image.Image, resolution: int) -> torch.Tensor:
    """``[3, R, R]`` float32 in ``[-1, 1]`` for a PIL image of any mode and size."""
    square = fit_square(to_rgb(image), resolution)
    array = np.asarray(square, dtype=np.float64) / 255.0 * 2.0 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).float().contiguous()


def hf_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB as ``transformers`` converts: alpha (or a transparency key) composited on white by PIL."""
    image = to_rgb(image) if image.mode in ("I", "I;16", "I;16L", "I;16B", "F") else image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def hf_pixels_from_image(image: PIL.Image.Image, options: ImageTokenizerOptions) -> torch.Tensor:
    """``[3, R, R]`` float32 pixels by ``transformers``' Chameleon processor rule (see the module docstring)."""
    resolution = options.resolution
    rgb = hf_rgb(image)
    width, height = rgb.size
    short, long = min(width, height), max(width, height)
    long_side = int(resolution * long / short)
    size = (resolution, long_side) if width <= height else (long_side, resolution)
    if size != rgb.size:
        rgb = rgb.resize(size, _FILTERS[options.resample])
    left, top = (rgb.width - resolution) // 2, (rgb.height - resolution) // 2
    if rgb.size != (resolution, resolution):
        rgb = rgb.crop((left, top, left + resolution, top + resolution))
    scaled = (np.asarray(rgb).astype(np.float64) * options.rescale_factor).astype(np.float32)
    normalised = (scaled - np.float32(options.image_mean)) / np.float32(options.image_std)
    return torch.from_numpy(np.ascontiguousarray(normalised)).permute(2, 0, 1).contiguous()


def image_from_pixels(pixels: torch.Tensor) -> PIL.Image.Image:
    """An RGB PIL image for ``[3, H, W]`` pixels in ``[-1, 1]`` (values outside are clamped)."""
    scaled = (pixels.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    array = scaled.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return PIL.Image.fromarray(np.ascontiguousarray(array), "RGB")


#: how far outside [-1, 1] a caller's pixel values may stray (resampling overshoot), not a [0, 255] image
PIXEL_SLACK = 0.5


def checked_pixels(pixels: torch.Tensor, what: str) -> torch.Tensor:
    """``pixels`` when every value is finite and within ``[-1, 1]`` give or take :data:`PIXEL_SLACK`;
    :class:`TokenizationError` otherwise (NaN or a [0, 255] tensor would encode to garbage)."""
    if pixels.numel():
        if not bool(torch.isfinite(pixels).all()):
            raise TokenizationError(f"image tokenizer: {what} holds NaN or infinite values")
        low, high = float(pixels.min()), float(pixels.max())
        if low < -1 - PIXEL_SLACK or high > 1 + PIXEL_SLACK:
            raise TokenizationError(
                f"image tokenizer: {what} holds values in [{low:g}, {high:g}]; pixels must be in [-1, 1] "
                "(x / 127.5 - 1 for 8-bit values)"
            )
    return pixels


def as_pixels(payload: object, options: ImageTokenizerOptions) -> torch.Tensor:
    """``[3, R, R]`` pixels for a PIL image, an image file path, image bytes or a pixel tensor, by the
    options' ``preprocessing`` rule.

    A tensor must already be ``[3, R, R]`` floats in ``[-1, 1]``.
    """
    resolution = options.resolution
    if isinstance(payload, (str, os.PathLike, bytes, bytearray)):
        payload = open_image(payload, max_pixels=options.max_image_pixels)
    if isinstance(payload, PIL.Image.Image):
        if options.preprocessing == "hf":
            return hf_pixels_from_image(payload, options)
        return pixels_from_image(payload, resolution)
    if isinstance(payload, torch.Tensor):
        if payload.shape != (3, resolution, resolution) or not payload.is_floating_point():
            raise TokenizationError(
                f"image tokenizer: a pixel tensor must be float [3, {resolution}, {resolution}] in [-1, 1], "
                f"got {payload.dtype} {list(payload.shape)}"
            )
        return checked_pixels(payload.float(), "a pixel tensor")
    raise TokenizationError(
        f"image tokenizer: cannot encode a {type(payload).__name__}; expected a PIL image, a file path, "
        "image bytes or a [3, R, R] pixel tensor"
    )
