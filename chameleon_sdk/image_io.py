"""Reading image files safely, and the one rule for turning any image into RGB.

:func:`open_image` turns a path or bytes into a fully decoded PIL image or raises
:class:`~chameleon_sdk.errors.ImageDecodeError` naming the file and the problem (empty file, not an
image, truncated or corrupt data, more pixels than allowed). :func:`to_rgb` applies the conversion
rules every image tokenizer should share:

- ``RGB``: unchanged.
- Transparency (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, palette images with a transparent
  colour): alpha-composited on white, ``out = (1 - a) * 255 + a * rgb`` truncated to 8 bits, as
  Chameleon's reference tokenizer does. Fully opaque images just drop the alpha channel.
- Palette (``P``) without transparency, ``L``, ``1``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``: Pillow's
  ``convert("RGB")`` (CMYK uses Pillow's naive formula; ICC profiles are not applied).
- 16-bit and 32-bit integer greyscale (``I;16*``, ``I``): read as 16-bit values and scaled to 8 bits
  (``round(v / 257)``, clipped to 0..255), instead of Pillow's convert, which saturates at 255.
- Float greyscale (``F``): values taken as 0..255, rounded and clipped.
- Animated images (GIF, APNG, WebP, multi-page TIFF): the first frame.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import PIL.Image

from chameleon_sdk.bounded_read import MAX_IMAGE_FILE_BYTES, read_bounded
from chameleon_sdk.errors import ConfigError, ImageDecodeError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "PNG_MODES", "open_image", "to_rgb"]

#: Pillow's default limit (about 89.5 megapixels).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)
#: the modes a PNG file holds as they are; others (CMYK, F, LAB, HSV, YCbCr...) are written as RGB by :func:`to_rgb`
PNG_MODES = frozenset({"1", "L", "LA", "I;16", "P", "RGB", "RGBA"})
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def open_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    name: str | None = None,
) -> PIL.Image.Image:
    """Decode an image file (a path) or its bytes into a loaded PIL image (the first frame).

    :param max_pixels: images with more pixels than this are refused as decompression bombs; the
        size is checked from the header, before any pixel data is decoded.
    :param name: what to call the input in errors (default: the path, or ``"<bytes>"``).
    :raises ImageDecodeError: naming the input and the problem.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ConfigError(f"open_image: max_pixels must be a positive integer, got {max_pixels!r}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = bytes(source), name or "<bytes>"
    elif not isinstance(source, (str, os.PathLike)):
        raise ImageDecodeError(f"open_image: expected a file path or the file's bytes, got {type(source).__name__}")
    else:
        path = Path(source)
        label = name or str(path)
        data = read_bounded(path, limit=MAX_IMAGE_FILE_BYTES, what="image file", error=ImageDecodeError)
    if not data:
        raise ImageDecodeError(f"image {label!r} is empty (0 bytes)")
    with warnings.catch_warnings():
        # Our own max_pixels check replaces Pillow's process-wide warning.
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
        try:
            image = PIL.Image.open(io.BytesIO(data))
        except PIL.Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"image {label!r} is refused as a decompression bomb: {exc}") from exc
        except PIL.UnidentifiedImageError as exc:
            raise ImageDecodeError(
                f"{label!r} is not an image file (format not recognised; {len(data)} bytes)"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(f"image {label!r} is truncated or corrupt (unreadable header: {exc})") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"image {label!r} is refused as a decompression bomb: {width} x {height} = {width * height} pixels "
                f"exceeds the limit of {max_pixels} (option max_image_pixels)"
            )
        if width == 0 or height == 0:
            raise ImageDecodeError(f"image {label!r} has no pixels ({width} x {height})")
        try:
            image.seek(0)
            image.load()
            return image.copy()
        except _DECODE_ERRORS as exc:
            raise ImageDecodeError(
                f"image {label!r} ({image.format}, {width} x {height}) is truncated or corrupt: {exc}"
            ) from exc


def _la_planes(image: PIL.Image.Image) -> tuple[np.ndarray, np.ndarray]:
    planes = np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.height, image.width, 2)
    return planes[:, :, 0].astype(np.float64), planes[:, :, 1].astype(np.float64)


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image as 8-bit RGB by the module's documented rules (first frame; alpha over white)."""
    if not isinstance(image, PIL.Image.Image):
        raise ImageDecodeError(f"to_rgb: expected a PIL image, got {type(image).__name__}")
    if image.width == 0 or image.height == 0:
        raise ImageDecodeError(f"to_rgb: the image has no pixels ({image.width} x {image.height})")
    if getattr(image, "n_frames", 1) > 1 and image.tell() != 0:
        image.seek(0)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _INT_GREY_MODES:
        values = np.asarray(image).astype(np.float64)
        grey = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return PIL.Image.fromarray(grey, "L").convert("RGB")
    if mode == "La":  # grey premultiplied by alpha, which Pillow cannot convert: composite by hand
        grey, alpha = _la_planes(image)
        blended = (255.0 - alpha) + grey  # (1 - a) * 255 + a * L, where grey is already a * L
        return PIL.Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:  # a palette or grey image with a transparency key
        rgba = np.asarray(image.convert("RGBA"))
        alpha = rgba[:, :, 3:4] / 255.0
        if (rgba[:, :, 3] == 255).all():
            return PIL.Image.fromarray(np.ascontiguousarray(rgba[:, :, :3]), "RGB")
        blended = (1.0 - alpha) * 255.0 + alpha * rgba[:, :, :3]
        return PIL.Image.fromarray(blended.astype(np.uint8), "RGB")
    return image.convert("RGB")
