"""Limits with clear errors: sequence length, image pixels, batch size."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import PIL.Image
import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.generation.request import DEFAULT_MAX_BATCH


def huge_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels, with almost no data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


# -- sequence length -------------------------------------------------------------------------------


def test_prompt_plus_new_tokens_beyond_max_seq_len_is_refused(image_pipe):
    model = image_pipe.model
    limit = model.config.max_seq_len
    with pytest.raises(cs.GenerationError, match=rf"prompt \(100 tokens\) \+ max_new_tokens \(61\) = 161 .*{limit}"):
        cs.generate_tokens(model, [1] * 100, max_new_tokens=61)
    assert cs.generate_tokens(model, [1] * 100, max_new_tokens=60, stop_ids=[]).shape == (60,)  # exactly fits
    with pytest.raises(cs.GenerationError, match="exceeds the model's max_seq_len"):
        image_pipe.generate("a red", max_new_tokens=limit)


def test_the_default_budget_fits_the_context(image_pipe):
    """Without max_new_tokens, generation takes what the context allows (at most 256): no error."""
    prompt = "a " * 60
    room = image_pipe.model.config.max_seq_len - len(image_pipe.tokenize(prompt))
    events = list(image_pipe.stream(prompt, stop=[], sampler={"name": "sample", "options": {"temperature": 1.0}}))
    assert room > 0 and isinstance(events[-1], cs.Finished)
    with pytest.raises(cs.GenerationError, match=r"fills the model's max_seq_len \(160\)"):
        image_pipe.generate("a " * 200)


def test_the_model_refuses_sequences_longer_than_max_seq_len(image_pipe):
    model = image_pipe.model
    with pytest.raises(cs.ConfigError, match=r"201 positions, more than the model's max_seq_len \(160\)"):
        model(torch.zeros(1, 201, dtype=torch.long))
    with pytest.raises(cs.ConfigError, match="outside the vocabulary"):
        model(torch.full((1, 4), model.config.vocab_size))


# -- image pixels ----------------------------------------------------------------------------------


def test_the_pixel_limit_refuses_bombs_from_the_header(image_pipe, tmp_path):
    bomb = huge_png(10_000, 9_000)  # 90 megapixels in 60 bytes: just over the default limit
    assert len(bomb) < 100
    with pytest.raises(
        cs.ImageDecodeError, match=r"decompression bomb: 10000 x 9000 = 90000000 pixels exceeds the limit of 89478485"
    ):
        cs.open_image(bomb)
    # past twice Pillow's own limit, Pillow refuses it first: still an ImageDecodeError
    with pytest.raises(cs.ImageDecodeError, match=r"decompression bomb.*2500000000 pixels"):
        cs.open_image(huge_png(50_000, 50_000))
    # the same file through a document and a JSONL dataset
    document = {"segments": [{"image_base64": base64.b64encode(bomb).decode()}]}
    with pytest.raises(cs.ImageDecodeError, match="decompression bomb"):
        cs.Document.from_json(document)
    (tmp_path / "bomb.png").write_bytes(bomb)
    (tmp_path / "data.jsonl").write_text('{"segments": [{"image": "bomb.png"}]}\n')
    with pytest.raises(cs.ImageDecodeError, match=r"data\.jsonl:1.*decompression bomb"):
        list(cs.read_jsonl(tmp_path / "data.jsonl"))
    # and through the image tokenizer, whose option sets the limit
    tokenizer = image_pipe.modalities["image"]
    with pytest.raises(cs.ImageDecodeError, match="max_image_pixels"):
        tokenizer.encode(bomb)


def test_the_pixel_limit_is_configurable(image_pipe):
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (40, 30)).save(buffer, format="PNG")
    assert cs.open_image(buffer.getvalue(), max_pixels=1200).size == (40, 30)
    with pytest.raises(cs.ImageDecodeError, match="1200 pixels exceeds the limit of 1199"):
        cs.open_image(buffer.getvalue(), max_pixels=1199)
    options = {**image_pipe.config.modalities[0].options, "max_image_pixels": 1199}
    small = cs.get_registry().build("modality", "image", options)
    with pytest.raises(cs.ImageDecodeError, match="limit of 1199"):
        small.encode(buffer.getvalue())


# -- batch size ------------------------------------------------------------------------------------


def test_batches_beyond_max_batch_are_refused_before_any_work(image_pipe):
    model = image_pipe.model
    assert DEFAULT_MAX_BATCH == 256
    with pytest.raises(cs.GenerationError, match=r"257 prompts exceed max_batch=256"):
        cs.generate_tokens(model, [[1, 2]] * 257, max_new_tokens=1)
    with pytest.raises(cs.GenerationError, match=r"3 prompts exceed max_batch=2"):
        image_pipe.generate(["a", "b", "c"], max_new_tokens=1, max_batch=2)
    with pytest.raises(cs.GenerationError, match="max_batch must be a positive integer"):
        cs.generate_tokens(model, [[1, 2]], max_new_tokens=1, max_batch=0)
    assert cs.generate_tokens(model, [[1, 2]] * 3, max_new_tokens=1, max_batch=3).shape == (3, 1)
    assert len(image_pipe.generate(["a", "b", "c"], max_new_tokens=1, max_batch=None)) == 3
