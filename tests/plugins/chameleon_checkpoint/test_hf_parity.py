"""Parity with ``transformers``' ChameleonForConditionalGeneration, an independent implementation.

transformers writes its logits for every image-code id as the dtype minimum (it cannot generate
images); our model returns real logits there, so the comparison covers every other column and
checks that those are exactly the masked ones.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import CheckpointError, plugin_api
from chameleon_sdk.token_names import image_name

transformers = pytest.importorskip("transformers")

VOCAB = 64
NUM_CODES = 8
CODE_OFFSET = 4
TOLERANCE = 1e-4


def vocabulary_map() -> dict[str, int]:
    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    names |= {image_name(c): CODE_OFFSET + c for c in range(NUM_CODES)}
    after = CODE_OFFSET + NUM_CODES
    return names | {"<eoss>": after, "<racm3:break>": after + 1, "<reserved08706>": after + 2, "<image>": after + 3}


TINY_VQ = {
    "embed_dim": 4,
    "num_embeddings": NUM_CODES,
    "latent_channels": 4,
    "base_channels": 32,
    "channel_multiplier": [1],
    "num_res_blocks": 1,
    "resolution": 8,
    "attn_resolutions": [],
}
IMAGE_COLUMNS = torch.zeros(VOCAB, dtype=torch.bool)
IMAGE_COLUMNS[CODE_OFFSET : CODE_OFFSET + NUM_CODES] = True


def hf_model(*, heads=4, kv_heads=2, head_dim=8, layers=2, swin=False, seed=0, shared_qk=False):
    """A random tiny HF Chameleon; every parameter random (QK-norm rows differ per head unless ``shared_qk``)."""
    config = transformers.ChameleonConfig(
        vocab_size=VOCAB,
        hidden_size=heads * head_dim,
        intermediate_size=3 * head_dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        swin_norm=swin,
        vocabulary_map=vocabulary_map(),
        vq_config=TINY_VQ,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        attn_implementation="sdpa",
    )
    model = transformers.ChameleonForConditionalGeneration(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = torch.randn(param.shape, generator=generator) * 0.3
            if shared_qk and ("q_norm" in name or "k_norm" in name):
                value = value[:1].expand_as(param)
            param.copy_(value + (1.0 if name.endswith("norm.weight") else 0.0))
    return model


def hf_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def our_logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def assert_parity(theirs: torch.Tensor, ours: torch.Tensor) -> None:
    minimum = torch.finfo(theirs.dtype).min
    assert bool((theirs[..., IMAGE_COLUMNS] == minimum).all()), "transformers masks the image-code columns"
    assert bool(torch.isfinite(ours).all()) and bool((ours[..., IMAGE_COLUMNS] > minimum).all())
    torch.testing.assert_close(ours[..., ~IMAGE_COLUMNS], theirs[..., ~IMAGE_COLUMNS], rtol=0, atol=TOLERANCE)


SHAPES = st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4), (6, 3), (6, 2)])


@settings(max_examples=10, deadline=None)
@given(
    heads_kv=SHAPES,
    head_dim=st.sampled_from([4, 8, 16]),
    layers=st.integers(1, 3),
    swin=st.booleans(),
    seed=st.integers(0, 1000),
    length=st.integers(1, 12),
)
def test_logits_match_transformers(registry, tmp_path_factory, heads_kv, head_dim, layers, swin, seed, length):
    heads, kv_heads = heads_kv
    theirs = hf_model(heads=heads, kv_heads=kv_heads, head_dim=head_dim, layers=layers, swin=swin, seed=seed)
    directory = tmp_path_factory.mktemp("hf")
    theirs.save_pretrained(directory)
    ours = chameleon_sdk.load_model(directory)
    assert chameleon_sdk.detect_format(directory) == "hf"
    assert ours.layout == ("reordered" if swin else "pre_norm")
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(seed))
    assert_parity(hf_logits(theirs, ids), our_logits(ours, ids))


@pytest.mark.parametrize(
    ("heads", "kv_heads", "swin"), [(4, 4, False), (4, 2, False), (4, 2, True)], ids=["mha", "gqa", "swin"]
)
def test_our_hf_save_loads_in_transformers_with_equal_logits(registry, tmp_path, heads, kv_heads, swin):
    theirs = hf_model(heads=heads, kv_heads=kv_heads, swin=swin)
    theirs.save_pretrained(tmp_path / "source")
    ours = chameleon_sdk.load_model(tmp_path / "source")
    chameleon_sdk.save_model(ours, tmp_path / "ours", format="hf")
    reloaded = transformers.ChameleonForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    ids = torch.randint(0, VOCAB, (3, 10))
    torch.testing.assert_close(hf_logits(reloaded, ids), hf_logits(theirs, ids), rtol=0, atol=0)
    # the image tokenizer's weights and config survive the trip
    for key, value in theirs.state_dict().items():
        if key.startswith("model.vqmodel."):
            torch.testing.assert_close(reloaded.state_dict()[key], value, rtol=0, atol=0, msg=key)
    written = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert written["vocabulary_map"] == vocabulary_map()
    assert written["swin_norm"] is swin


@settings(max_examples=6, deadline=None)
@given(
    heads_kv=SHAPES,
    sharing=st.sampled_from(["layer", "head", "group"]),
    reorder=st.booleans(),
    seed=st.integers(0, 1000),
    shard=st.one_of(st.none(), st.integers(2000, 20000)),
)
def test_models_built_here_run_identically_in_transformers(
    registry, make_model, tmp_path_factory, heads_kv, sharing, reorder, seed, shard
):
    heads, kv_heads = heads_kv
    groups = kv_heads if sharing == "group" else None
    qk = {"name": "qk-norm", "options": {"sharing": sharing, "num_groups": groups} if groups else {"sharing": sharing}}
    stability = [qk, "z-loss", *(["norm-reorder"] if reorder else [])]
    shape = {"dim": heads * 8, "num_heads": heads, "num_kv_heads": kv_heads, "vocab_size": VOCAB}
    ours = make_model(stability=stability, seed=seed, **shape)
    vocabulary = chameleon_sdk.Vocabulary.appended(text_size=45, bos_id=0, eos_id=1, pad_id=2, modalities={"image": 16})
    ours.vocabulary = vocabulary
    directory = tmp_path_factory.mktemp("hf") / "ckpt"
    chameleon_sdk.save_model(ours, directory, format="hf", options={"max_shard_bytes": shard})
    total_bytes = sum(t.numel() * t.element_size() for t in ours.state_dict().values())
    assert (directory / "model.safetensors.index.json").is_file() == (shard is not None and total_bytes > shard)
    theirs = transformers.ChameleonForConditionalGeneration.from_pretrained(directory).eval()
    image = torch.zeros(VOCAB, dtype=torch.bool)
    image[ours.vocabulary.blocks["image"].code_ids] = True
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))
    expected, got = our_logits(ours, ids), hf_logits(theirs, ids)
    assert bool((got[..., image] == torch.finfo(got.dtype).min).all())
    torch.testing.assert_close(got[..., ~image], expected[..., ~image], rtol=0, atol=TOLERANCE)
    # and back: our hf reader restores the vocabulary we wrote (all but the layout's name)
    restored = chameleon_sdk.load_model(directory).vocabulary.to_json()
    assert restored.pop("layout") == "hf"
    assert restored == {k: v for k, v in vocabulary.to_json().items() if k != "layout"}


def test_auto_sharing_recovers_one_norm_per_layer(registry, tmp_path):
    theirs = hf_model(heads=4, kv_heads=2, shared_qk=True)
    theirs.save_pretrained(tmp_path)
    per_head = chameleon_sdk.load_model(tmp_path)
    shared = chameleon_sdk.load_model(tmp_path, options={"qk_norm_sharing": "auto"})
    assert per_head.state_dict()["layers.0.attention.q_norm.weight"].shape == (4, 8)
    assert per_head.state_dict()["layers.0.attention.k_norm.weight"].shape == (2, 8)
    assert shared.stability_specs[0].options == {"sharing": "layer"}
    assert shared.state_dict()["layers.0.attention.q_norm.weight"].shape == (1, 8)
    ids = torch.randint(0, VOCAB, (2, 6))
    assert_parity(hf_logits(theirs, ids), our_logits(shared, ids))
    # rows that differ per head stay per head under "auto"
    hf_model(heads=4, kv_heads=2).save_pretrained(tmp_path / "distinct")
    auto = chameleon_sdk.load_model(tmp_path / "distinct", options={"qk_norm_sharing": "auto"})
    assert auto.stability_specs[0].options == {"sharing": "head"}


def test_vocabulary_is_parsed_from_the_config(registry, tmp_path):
    hf_model().save_pretrained(tmp_path)
    vocab = chameleon_sdk.load_model(tmp_path).vocabulary
    assert vocab.specials["bos"] == 0 and vocab.specials["eos"] == 2 and vocab.specials["pad"] == 1
    assert vocab.specials["<image>"] == CODE_OFFSET + NUM_CODES + 3
    assert vocab.code_mask("image").tolist() == IMAGE_COLUMNS.tolist()
    assert vocab.blocks["image"].begin_id == CODE_OFFSET + NUM_CODES + 1


def test_unsupported_hf_features_are_refused(registry, tmp_path):
    hf_model().save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps(config | {"attention_bias": True}))
    with pytest.raises(CheckpointError, match="attention_bias is true"):
        chameleon_sdk.load_model(tmp_path)
    config_file.write_text(json.dumps(config | {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}))
    with pytest.raises(CheckpointError, match="rope scaling"):
        chameleon_sdk.load_model(tmp_path)
    config_file.write_text(json.dumps(config | {"intermediate_size": 7}))
    with pytest.raises(
        CheckpointError, match=r"feed_forward\.w[13]\.weight' has shape \[24, 32\], the model expects \[7, 32\]"
    ):
        chameleon_sdk.load_model(tmp_path)


def test_models_hf_cannot_express_are_refused(registry, make_model, tmp_path):
    with pytest.raises(CheckpointError, match="always applies QK-norm"):
        chameleon_sdk.save_model(make_model(), tmp_path / "a", format="hf")
    assert not (tmp_path / "a").exists()


def test_sharded_transformers_checkpoints_load(registry, tmp_path):
    theirs = hf_model(heads=4, kv_heads=2, swin=True)
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = chameleon_sdk.load_model(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 8))
    assert_parity(hf_logits(theirs, ids), our_logits(ours, ids))
    vq = plugin_api.read_safetensors(tmp_path, prefix="model.vqmodel.", strip_prefix=True)
    torch.testing.assert_close(vq["quantize.embedding.weight"], theirs.model.vqmodel.quantize.embedding.weight.detach())
