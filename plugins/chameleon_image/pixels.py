"""Images <-> pixel tensors, as Chameleon's reference tokenizer prepares them.

In: any input -> RGB (:func:`chameleon_sdk.to_rgb`: alpha over white, first frame, ...), shortest
side resized to the resolution with LANCZOS, centre crop, ``x / 255 * 2 - 1`` -> ``[3, R, R]``
float32 in ``[-1, 1]``.

Out: clamp to ``[-1, 1]``, ``(x + 1) / 2 * 255`` **rounded** to 8 bits. (The reference truncates,
which darkens every pixel by half a level on average; rounding is the unbiased choice.)
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import torch

from chameleon_sdk import TokenizationError, open_image, to_rgb


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


def image_from_pixels(pixels: torch.Tensor) -> PIL.Image.Image:
    """An RGB PIL image for ``[3, H, W]`` pixels in ``[-1, 1]`` (values outside are clamped)."""
    scaled = (pixels.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    array = scaled.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return PIL.Image.fromarray(np.ascontiguousarray(array), "RGB")


def as_pixels(payload: object, resolution: int, max_pixels: int) -> torch.Tensor:
    """``[3, R, R]`` pixels for a PIL image, an image file path, image bytes or a pixel tensor.

    A tensor must already be ``[3, R, R]`` floats in ``[-1, 1]``.
    """
    if isinstance(payload, PIL.Image.Image):
        return pixels_from_image(payload, resolution)
    if isinstance(payload, torch.Tensor):
        if payload.shape != (3, resolution, resolution) or not payload.is_floating_point():
            raise TokenizationError(
                f"image tokenizer: a pixel tensor must be float [3, {resolution}, {resolution}] in [-1, 1], "
                f"got {payload.dtype} {list(payload.shape)}"
            )
        return payload.float()
    if isinstance(payload, (str, os.PathLike, bytes, bytearray)):
        return pixels_from_image(open_image(payload, max_pixels=max_pixels), resolution)
    raise TokenizationError(
        f"image tokenizer: cannot encode a {type(payload).__name__}; expected a PIL image, a file path, "
        "image bytes or a [3, R, R] pixel tensor"
    )
