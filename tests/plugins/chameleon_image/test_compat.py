"""Released-weight layouts: Hugging Face parity (exact codes) and the original vqgan.yaml + vqgan.ckpt."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import chameleon_sdk
from chameleon_sdk import CheckpointError, ConfigError, load_image_tokenizer

HF_CONFIGS = [
    {
        "resolution": 32,
        "base_channels": 32,
        "channel_multiplier": [1, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [32],
        "latent_channels": 16,
        "embed_dim": 8,
        "num_embeddings": 64,
    },
    {
        "resolution": 32,
        "base_channels": 32,
        "channel_multiplier": [1, 1, 2],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "latent_channels": 32,
        "embed_dim": 16,
        "num_embeddings": 128,
        "attn_type": "none",
    },
    {
        "resolution": 16,
        "base_channels": 64,
        "channel_multiplier": [1, 1],
        "num_res_blocks": 1,
        "attn_resolutions": [8],
        "latent_channels": 8,
        "embed_dim": 4,
        "num_embeddings": 32,
    },
]


def _save_hf(vq_config: dict, directory: Path, seed: int, **save_kwargs):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.ChameleonConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vq_config=vq_config,
        vocabulary_map={"<image>": 90},
    )
    model = transformers.ChameleonForConditionalGeneration(config).eval()
    model.save_pretrained(directory, **save_kwargs)
    return model


@pytest.mark.parametrize("index", range(len(HF_CONFIGS)))
def test_codes_equal_transformers_exactly(index, tmp_path, shapes):
    vq = HF_CONFIGS[index]
    model = _save_hf(vq, tmp_path, seed=index)
    ours = load_image_tokenizer(tmp_path)
    assert ours.options.decoder is False and ours.codebook_size == vq["num_embeddings"]
    torch.manual_seed(100 + index)
    pixels = torch.rand(6, 3, vq["resolution"], vq["resolution"]) * 2 - 1
    pixels[0] = ours.preprocess(shapes[index])
    with torch.no_grad():
        reference = model.model.vqmodel.encode(pixels).image_tokens.view(6, -1)
    codes = ours.encode_batch(pixels)
    assert codes.shape == reference.shape
    assert torch.equal(codes, reference)
    assert len(codes.unique()) > 1  # a degenerate codebook would make the comparison vacuous


def test_sharded_hf_checkpoint_and_missing_decoder(tmp_path):
    vq = HF_CONFIGS[0]
    model = _save_hf(vq, tmp_path, seed=7, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = load_image_tokenizer(tmp_path)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        reference = model.model.vqmodel.encode(pixels).image_tokens.view(2, -1)
    assert torch.equal(ours.encode_batch(pixels), reference)
    with pytest.raises(ConfigError, match="no decoder"):
        ours.decode(torch.zeros(ours.block_length, dtype=torch.long))


def _write_original(tokenizer, directory: Path, extra: dict | None = None, params: dict | None = None) -> None:
    o = tokenizer.options
    config = {
        "model": {
            "target": "taming.models.vqgan.VQModel",
            "params": {
                "embed_dim": o.embed_dim,
                "n_embed": o.codebook_size,
                "ddconfig": {
                    "double_z": False,
                    "z_channels": o.latent_channels,
                    "resolution": o.resolution,
                    "in_channels": 3,
                    "out_ch": 3,
                    "ch": o.base_channels,
                    "ch_mult": list(o.channel_multipliers),
                    "num_res_blocks": o.num_res_blocks,
                    "attn_resolutions": list(o.attn_resolutions),
                    "dropout": 0.0,
                },
                "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"},
                **(params or {}),
            },
        }
    }
    (directory / "vqgan.yaml").write_text(yaml.safe_dump(config))
    state = dict(tokenizer.model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(2, 3, 4, 4)
    state.update(extra or {})
    torch.save({"state_dict": state}, directory / "vqgan.ckpt")


def test_original_release_layout_loads_encoder_and_decoder(tiny_options, shapes, tmp_path):
    source = chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "attn_resolutions": [8]})
    _write_original(source, tmp_path)
    for path in (tmp_path, tmp_path / "vqgan.ckpt"):
        loaded = load_image_tokenizer(path)
        assert loaded.options.architecture() == source.options.architecture()
        assert torch.equal(loaded.encode_batch(shapes[:4]), source.encode_batch(shapes[:4]))
        codes = torch.randint(0, 64, (64,))
        assert loaded.decode(codes).tobytes() == source.decode(codes).tobytes()


class _Payload:
    """Unpickling this would touch a marker file: a stand-in for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_original_checkpoint_needing_pickled_code_is_refused(tiny_tokenizer, tmp_path):
    _write_original(tiny_tokenizer, tmp_path)
    marker = tmp_path / "executed"
    torch.save(
        {"state_dict": tiny_tokenizer.model.state_dict(), "callbacks": _Payload(marker)}, tmp_path / "vqgan.ckpt"
    )
    with pytest.raises(CheckpointError, match=r"refusing to load .*vqgan\.ckpt"):
        load_image_tokenizer(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("extra", "params", "message"),
    [
        ({"quantize.used": torch.zeros(3)}, None, r"unexpected \['quantize.used'\]"),
        ({"model_ema.decay": torch.zeros(())}, None, "unexpected weights"),
        (None, {"remap": "used.npy"}, "remapping"),
    ],
)
def test_unsupported_original_checkpoints_are_refused(tiny_tokenizer, tmp_path, extra, params, message):
    _write_original(tiny_tokenizer, tmp_path, extra=extra, params=params)
    with pytest.raises(CheckpointError, match=message):
        load_image_tokenizer(tmp_path)


def test_missing_or_unknown_checkpoints_are_checkpoint_errors(tiny_tokenizer, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_image_tokenizer(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="holds no image tokenizer checkpoint"):
        load_image_tokenizer(tmp_path)
    _write_original(tiny_tokenizer, tmp_path)
    state = torch.load(tmp_path / "vqgan.ckpt", weights_only=True)["state_dict"]
    del state["decoder.conv_out.weight"]
    torch.save({"state_dict": state}, tmp_path / "vqgan.ckpt")
    with pytest.raises(CheckpointError, match=r"missing \['decoder.conv_out.weight'\]"):
        load_image_tokenizer(tmp_path)


def test_own_saved_layout_loads_through_the_core_function(tiny_tokenizer, shapes, tmp_path):
    tiny_tokenizer.save(tmp_path)
    loaded = load_image_tokenizer(tmp_path, options={"max_image_pixels": 10_000})
    assert loaded.options.max_image_pixels == 10_000
    assert torch.equal(loaded.encode_batch(shapes[:3]), tiny_tokenizer.encode_batch(shapes[:3]))


@pytest.mark.slow
def test_default_chameleon_config_codes_equal_transformers(shapes):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = chameleon_sdk.get_registry().build("modality", "image", {"decoder": False})
    theirs = transformers.ChameleonVQVAE(transformers.ChameleonVQVAEConfig()).eval()
    theirs.load_state_dict(ours.model.state_dict(), strict=True)
    pixels = torch.stack([ours.preprocess(shapes[0]), torch.rand(3, 512, 512) * 2 - 1])
    with torch.no_grad():
        reference = theirs.encode(pixels).image_tokens.view(2, -1)
    codes = ours.encode_batch(pixels)
    assert codes.shape == (2, 1024) and torch.equal(codes, reference)
