"""Image tokenizers through the checkpoint formats: native round trips, hf for transformers, original read-only."""

from __future__ import annotations

import json
import random

import PIL.Image
import PIL.ImageDraw
import pytest
import torch

import chameleon_sdk
from chameleon_sdk import CheckpointError, plugin_api
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint, ImageTokenizerFormat

TINY = {
    "resolution": 32,
    "base_channels": 32,
    "channel_multipliers": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [16],
    "latent_channels": 16,
    "embed_dim": 8,
    "codebook_size": 64,
}


def _tokenizer(seed: int = 0, **changes):
    torch.manual_seed(seed)
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", {**TINY, **changes})
    with torch.no_grad():  # spread the codebook so that many codes are used
        tokenizer.model.quantize.embedding.weight.normal_()
    return tokenizer


def _pixels(count: int = 4) -> torch.Tensor:
    rng = random.Random(0)
    images = []
    for _ in range(count):
        image = PIL.Image.new("RGB", (32, 32), "white")
        x, y = rng.randint(0, 16), rng.randint(0, 16)
        PIL.ImageDraw.Draw(image).ellipse([x, y, x + 14, y + 14], fill=(rng.randint(0, 255), 40, 200))
        images.append(image)
    tokenizer = _tokenizer()
    return torch.cat([torch.stack([tokenizer.preprocess(i) for i in images]), torch.rand(count, 3, 32, 32) * 2 - 1])


def test_built_in_formats_hold_image_tokenizers():
    formats = {r.name: r.build() for r in chameleon_sdk.available_plugins("checkpoint_format")}
    assert all(isinstance(formats[name], ImageTokenizerFormat) for name in ("native", "hf", "original"))


def test_native_round_trip_is_exact_and_carries_a_manifest(tmp_path):
    tokenizer = _tokenizer(codebook_metric="cosine", mid_attention=False)
    chameleon_sdk.save_image_tokenizer(tokenizer, tmp_path / "tok")
    names = sorted(p.name for p in (tmp_path / "tok").iterdir())
    assert names == ["image_tokenizer.json", "image_tokenizer.safetensors", "manifest.json"]
    assert chameleon_sdk.detect_image_tokenizer_format(tmp_path / "tok") == "native"
    checkpoint = chameleon_sdk.read_image_tokenizer(tmp_path / "tok")
    assert checkpoint.format == "native" and checkpoint.architecture == tokenizer.options.architecture()
    original = tokenizer.model.state_dict()
    assert checkpoint.state_dict.keys() == original.keys()
    assert all(torch.equal(checkpoint.state_dict[k], original[k]) for k in original)


def test_native_reads_version_1_directories(tmp_path):
    """The layout the image plugin wrote before the formats held tokenizers: every option under "options"."""
    tokenizer = _tokenizer()
    chameleon_sdk.save_image_tokenizer(tokenizer, tmp_path)
    (tmp_path / "manifest.json").unlink()
    options = {**chameleon_sdk.to_dict(tokenizer.options), "dropout": 0.0, "max_image_pixels": 1000}
    meta = {"format": "chameleon-image-tokenizer", "format_version": 1, "options": options}
    (tmp_path / "image_tokenizer.json").write_text(json.dumps(meta))
    loaded = chameleon_sdk.load_image_tokenizer(tmp_path)
    assert loaded.options.architecture() == tokenizer.options.architecture()
    assert loaded.options.max_image_pixels != 1000  # runtime options are the caller's, not the file's
    pixels = _pixels(2)
    assert torch.equal(loaded.encode_batch(pixels), tokenizer.encode_batch(pixels))


def test_a_damaged_native_file_is_named(tmp_path):
    chameleon_sdk.save_image_tokenizer(_tokenizer(), tmp_path)
    weights = tmp_path / "image_tokenizer.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match=r"image_tokenizer\.safetensors' is corrupt"):
        chameleon_sdk.read_image_tokenizer(tmp_path)


def test_hf_layout_is_what_transformers_reads_with_identical_codes(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizer = _tokenizer(seed=3)
    chameleon_sdk.save_image_tokenizer(tokenizer, tmp_path / "hf", format="hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "chameleon_vqgan"
    keys = plugin_api.read_safetensors(tmp_path / "hf").keys()
    assert keys and not any(k.startswith("decoder.") for k in keys)  # the layout has no decoder

    theirs = transformers.ChameleonVQVAE.from_pretrained(tmp_path / "hf").eval()
    pixels = _pixels()
    with torch.no_grad():
        reference = theirs.encode(pixels).image_tokens.view(len(pixels), -1)
    codes = tokenizer.encode_batch(pixels)
    assert torch.equal(codes, reference) and len(codes.unique()) > 4

    ours = chameleon_sdk.load_image_tokenizer(tmp_path / "hf")
    assert chameleon_sdk.detect_image_tokenizer_format(tmp_path / "hf") == "hf"
    assert ours.options.decoder is False and torch.equal(ours.encode_batch(pixels), codes)


def test_hf_refuses_what_transformers_cannot_express(tmp_path):
    with pytest.raises(CheckpointError, match="no place for a 'cosine' codebook"):
        chameleon_sdk.save_image_tokenizer(_tokenizer(codebook_metric="cosine"), tmp_path / "a", format="hf")
    with pytest.raises(CheckpointError, match="switches all attention on or off"):
        chameleon_sdk.save_image_tokenizer(_tokenizer(mid_attention=False), tmp_path / "b", format="hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written


def test_original_is_read_only_and_unknown_directories_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="original format is read-only"):
        chameleon_sdk.save_image_tokenizer(_tokenizer(), tmp_path / "orig", format="original")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"holds no image tokenizer checkpoint \(it holds \[\]\)"):
        chameleon_sdk.read_image_tokenizer(tmp_path / "empty")


class ModelOnlyFormat:
    """A format plugin that holds models only."""

    def detect(self, path):
        return False

    def load(self, path, *, registry):
        raise CheckpointError("no")

    def save(self, model, path):
        raise CheckpointError("no")


class ModelOnlyPlugin:
    @plugin_api.hookimpl
    def register_checkpoint_formats(self, register):
        register("model-only", ModelOnlyFormat)


def test_a_format_without_image_tokenizer_methods_is_refused_by_name(registry, registered_plugin, tmp_path):
    registered_plugin(ModelOnlyPlugin(), name="model-only-plugin")
    with pytest.raises(CheckpointError, match=r"'model-only' cannot hold image tokenizers; formats that can: \["):
        chameleon_sdk.save_image_tokenizer(_tokenizer(), tmp_path, format="model-only")
    checkpoint = _tokenizer().to_checkpoint()
    assert isinstance(checkpoint, ImageTokenizerCheckpoint)
    chameleon_sdk.save_image_tokenizer(checkpoint, tmp_path / "plain")  # a checkpoint is accepted as it is
    assert chameleon_sdk.detect_image_tokenizer_format(tmp_path / "plain") == "native"


def test_the_original_vqgan_file_is_mapped_not_read_into_memory(tmp_path, monkeypatch):
    """A released VQGAN is ~270 MB and loading a release reads it twice (architecture, modality)."""
    import chameleon_checkpoint.vqgan as vqgan

    from chameleon_sdk.tiny_release import write_tiny_release

    calls: list[dict] = []
    read = vqgan.read_torch_file

    def recording_read(path, **options):
        calls.append(options)
        return read(path, **options)

    monkeypatch.setattr(vqgan, "read_torch_file", recording_read)
    release = write_tiny_release(tmp_path / "release", "meta")
    checkpoint = chameleon_sdk.read_image_tokenizer(release / "tokenizer", format="original")
    assert calls == [{"mmap": True}] and checkpoint.state_dict
