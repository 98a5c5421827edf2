"""The image modality: options, preprocessing, encode/decode, partial previews, save/load."""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import pytest
import torch
from chameleon_image import ImageTokenizer, ImageTokenizerOptions
from chameleon_image.pixels import image_from_pixels, pixels_from_image
from hypothesis import given
from hypothesis.extra.numpy import arrays

import chameleon_sdk
from chameleon_sdk import CheckpointError, ConfigError, ImageDecodeError, TokenizationError, plugin_api
from chameleon_sdk.plugin_api import Modality, Stateful


def test_defaults_are_chameleons_tokenizer():
    o = ImageTokenizerOptions()
    assert (o.resolution, o.base_channels, o.channel_multipliers, o.num_res_blocks) == (512, 128, (1, 1, 2, 2, 4), 2)
    assert (o.embed_dim, o.latent_channels, o.codebook_size, o.latent_size, o.block_length) == (
        256,
        256,
        8192,
        32,
        1024,
    )


def test_registered_as_the_image_modality(tiny_tokenizer):
    record = chameleon_sdk.get_registry().get("modality", "image")
    assert record.options is ImageTokenizerOptions and record.factory is ImageTokenizer
    assert isinstance(tiny_tokenizer, Modality) and isinstance(tiny_tokenizer, Stateful)
    assert isinstance(tiny_tokenizer, plugin_api.TrainableModality)
    assert tiny_tokenizer.payload_types == (PIL.Image.Image,)
    assert (tiny_tokenizer.codebook_size, tiny_tokenizer.block_length, tiny_tokenizer.grid_size) == (64, 64, 8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base_channels": 48}, "multiple of 32"),
        ({"channel_multipliers": [1, 1, 3], "base_channels": 16}, "multiple of 32"),
        ({"resolution": 30}, "divisible by"),
        ({"codebook_metric": "dot"}, "codebook_metric"),
        ({"codebook_size": 0}, "codebook_size must be > 0"),
        ({"resolutoin": 32}, "did you mean 'resolution'"),
    ],
)
def test_bad_options_raise_config_error(tiny_options, change, message):
    with pytest.raises(ConfigError, match=message):
        chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, **change})


def _reference_pixels(image: PIL.Image.Image, size: int) -> np.ndarray:
    """The reference tokenizer's preprocessing, spelled out independently."""
    scale = size / min(image.size)
    image = image.resize((round(scale * image.size[0]), round(scale * image.size[1])), PIL.Image.LANCZOS)
    x0, y0 = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((x0, y0, x0 + size, y0 + size))
    return (np.asarray(image) / 255.0 * 2 - 1).transpose(2, 0, 1)


@pytest.mark.parametrize("size", [(32, 32), (50, 37), (20, 90), (33, 32)])
def test_preprocessing_matches_the_reference(size):
    rng = np.random.default_rng(1)
    image = PIL.Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")
    ours = pixels_from_image(image, 32)
    assert ours.shape == (3, 32, 32) and ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.numpy(), _reference_pixels(image, 32).astype(np.float32))


@given(arrays(np.uint8, (8, 8, 3)))
def test_pixels_round_trip_exactly(array):
    image = PIL.Image.fromarray(array, "RGB")
    assert image_from_pixels(pixels_from_image(image, 8)).tobytes() == image.tobytes()


def test_encode_gives_block_length_codes_from_any_input(tiny_tokenizer, tmp_path):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8), "RGB")
    codes = tiny_tokenizer.encode(image)
    assert codes.dtype == torch.long and codes.shape == (64,)
    assert int(codes.min()) >= 0 and int(codes.max()) < 64
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    (tmp_path / "x.png").write_bytes(buf.getvalue())
    pixels = tiny_tokenizer.preprocess(image)
    assert torch.equal(tiny_tokenizer.encode(tmp_path / "x.png"), codes)
    assert torch.equal(tiny_tokenizer.encode(buf.getvalue()), codes)
    assert torch.equal(tiny_tokenizer.encode(pixels), codes)


def test_encode_batch_equals_one_by_one(tiny_tokenizer, shapes):
    batch = tiny_tokenizer.encode_batch(shapes[:5])
    assert batch.shape == (5, 64)
    for row, image in zip(batch, shapes[:5]):
        assert torch.equal(row, tiny_tokenizer.encode(image))
    pixels = torch.stack([tiny_tokenizer.preprocess(s) for s in shapes[:5]])
    assert torch.equal(tiny_tokenizer.encode_batch(pixels), batch)


def test_decode_gives_rgb_images_of_the_resolution(tiny_tokenizer):
    codes = torch.randint(0, 64, (3, 64))
    images = tiny_tokenizer.decode_batch(codes)
    assert [(im.mode, im.size) for im in images] == [("RGB", (32, 32))] * 3
    # batched convolutions may round differently from single ones: allow one 8-bit level
    one = np.asarray(tiny_tokenizer.decode(codes[1]), dtype=int)
    assert np.abs(one - np.asarray(images[1], dtype=int)).max() <= 1
    pixels = tiny_tokenizer.decode_pixels(codes)
    assert pixels.shape == (3, 3, 32, 32) and float(pixels.abs().max()) <= 1.0


def test_decode_partial_fills_with_the_first_code_as_the_reference(tiny_tokenizer):
    codes = torch.randint(0, 64, (64,))
    for n in (1, 10, 63, 64):
        filled = torch.cat([codes[:n], codes[:1].repeat(64 - n)])
        assert tiny_tokenizer.decode_partial(codes[:n]).tobytes() == tiny_tokenizer.decode(filled).tobytes()
    empty = tiny_tokenizer.decode_partial(torch.zeros(0, dtype=torch.long))
    assert empty.tobytes() == tiny_tokenizer.decode(torch.zeros(64, dtype=torch.long)).tobytes()
    with pytest.raises(TokenizationError, match="more than"):
        tiny_tokenizer.decode_partial(torch.zeros(65, dtype=torch.long))


@pytest.mark.parametrize(
    "codes",
    [torch.full((64,), 64), torch.full((64,), -1), torch.zeros(64), torch.zeros(63, dtype=torch.long)],
    ids=["too-big", "negative", "float", "short"],
)
def test_bad_codes_raise(tiny_tokenizer, codes):
    with pytest.raises(TokenizationError):
        tiny_tokenizer.decode(codes)


def test_bad_inputs_raise_typed_errors(tiny_tokenizer, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.png"):
        tiny_tokenizer.encode(tmp_path / "empty.png")
    with pytest.raises(TokenizationError, match=r"\[3, 32, 32\]"):
        tiny_tokenizer.encode(torch.zeros(3, 16, 16))
    with pytest.raises(TokenizationError, match="cannot encode a int"):
        tiny_tokenizer.encode(3)


def test_decompression_bomb_limit_is_an_option(tiny_options, tmp_path):
    PIL.Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "max_image_pixels": 9_999})
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        tokenizer.encode(tmp_path / "big.png")


def test_save_and_load_round_trip(tiny_tokenizer, tiny_options, shapes, tmp_path):
    tiny_tokenizer.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["image_tokenizer.json", "image_tokenizer.safetensors", "manifest.json"]
    fresh = chameleon_sdk.get_registry().build("modality", "image", tiny_options)
    assert not torch.equal(fresh.encode_batch(shapes[:4]), tiny_tokenizer.encode_batch(shapes[:4]))
    fresh.load(tmp_path)
    assert torch.equal(fresh.encode_batch(shapes[:4]), tiny_tokenizer.encode_batch(shapes[:4]))
    codes = torch.randint(0, 64, (64,))
    assert fresh.decode(codes).tobytes() == tiny_tokenizer.decode(codes).tobytes()


def test_load_refuses_another_architecture(tiny_tokenizer, tiny_options, tmp_path):
    tiny_tokenizer.save(tmp_path)
    other = chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "codebook_size": 32})
    with pytest.raises(CheckpointError, match="codebook_size: this tokenizer 32, saved 64"):
        other.load(tmp_path)
    with pytest.raises(CheckpointError, match=r"missing' does not exist"):
        other.load(tmp_path / "missing")
