"""open_image: typed errors naming the input; to_rgb: the documented conversion rules."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from chameleon_sdk import ImageDecodeError, open_image
from chameleon_sdk.plugin_api import to_rgb


def _encoded(image: PIL.Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(size=(24, 16), seed=0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def test_open_reads_files_and_bytes(tmp_path):
    data = _encoded(_noise(), "PNG")
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert open_image(path).tobytes() == open_image(data).tobytes() == _noise().tobytes()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"hello, this is text and not a picture\n" * 4, "not an image file"),
        (_encoded(_noise((64, 64)), "PNG")[:300], "truncated or corrupt"),
        (_encoded(_noise((64, 64)), "JPEG")[:400], "truncated or corrupt"),
    ],
    ids=["zero-byte", "not-an-image", "truncated-png", "truncated-jpeg"],
)
def test_bad_files_raise_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad-input.bin"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=problem) as info:
        open_image(path)
    assert "bad-input.bin" in str(info.value)


def test_missing_file_is_an_image_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="cannot read image file"):
        open_image(tmp_path / "nope.png")


def test_decompression_bomb_limit_is_checked_from_the_header():
    data = _encoded(PIL.Image.new("L", (300, 200)), "PNG")
    assert open_image(data, max_pixels=60_000).size == (300, 200)
    with pytest.raises(ImageDecodeError, match=r"decompression bomb.*60000 pixels exceeds the limit of 59999"):
        open_image(data, max_pixels=59_999, name="bomb.png")


def test_animated_images_give_the_first_frame():
    frames = [PIL.Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    image = to_rgb(open_image(buf.getvalue()))
    assert image.mode == "RGB" and image.getpixel((3, 3)) == (255, 0, 0)


def test_palette_with_transparency_is_composited_on_white():
    image = PIL.Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.info["transparency"] = 0
    rgb = to_rgb(image)
    assert rgb.getpixel((0, 0)) == (255, 255, 255)
    assert rgb.getpixel((1, 1)) == (200, 10, 10)


def test_sixteen_bit_grey_is_scaled_not_saturated():
    image = PIL.Image.new("I;16", (4, 1))
    image.putdata([0, 257, 32896, 65535])
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_cmyk_and_greyscale_become_rgb():
    assert to_rgb(PIL.Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(PIL.Image.new("L", (2, 2), 77)).getpixel((1, 1)) == (77, 77, 77)
    assert to_rgb(PIL.Image.new("LA", (2, 2), (100, 0))).getpixel((0, 0)) == (255, 255, 255)


@given(arrays(np.uint8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.just(4))))
def test_alpha_compositing_matches_the_reference_formula(rgba):
    out = np.asarray(to_rgb(PIL.Image.fromarray(rgba, "RGBA")))
    alpha = rgba[:, :, 3:4] / 255.0
    if (rgba[:, :, 3] == 255).all():
        expected = rgba[:, :, :3]
    else:
        expected = ((1 - alpha) * 255 + alpha * rgba[:, :, :3]).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
