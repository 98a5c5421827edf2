"""The ``native`` checkpoint format: exact round trips, detection, and errors that name what is wrong."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import CheckpointError, Vocabulary, plugin_api


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


STABILITY_SETS = [
    (),
    ("qk-norm",),
    ({"name": "qk-norm", "options": {"sharing": "group", "num_groups": 2}}, "norm-reorder", "z-loss"),
    ({"name": "qk-norm", "options": {"sharing": "head"}}, {"name": "z-loss", "options": {"coef": 1e-3}}),
]


@pytest.mark.parametrize("stability", STABILITY_SETS, ids=["plain", "qk-layer", "qk-group-reorder", "qk-head"])
def test_round_trip_is_exact(registry, make_model, tmp_path, stability):
    model = make_model(stability=stability)
    model.vocabulary = Vocabulary.appended(text_size=30, bos_id=0, eos_id=1, pad_id=2, modalities={"image": 16})
    chameleon_sdk.save_model(model, tmp_path / "ckpt")
    assert chameleon_sdk.detect_format(tmp_path / "ckpt") == "native"
    loaded = chameleon_sdk.load_model(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.stability_specs == model.stability_specs
    assert loaded.attention_spec == model.attention_spec
    assert loaded.vocabulary == model.vocabulary
    assert loaded.checkpoint_info.format == "native"
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        torch.testing.assert_close(restored[key], original[key], rtol=0, atol=0, msg=key)
    ids = torch.randint(0, 48, (2, 7))
    torch.testing.assert_close(_logits(loaded, ids), _logits(model, ids), rtol=0, atol=0)


@settings(max_examples=8, deadline=None)
@given(
    heads_kv=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 1), (4, 2), (4, 4)]),
    head_dim=st.sampled_from([4, 8]),
    layers=st.integers(1, 2),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_round_trip_over_shapes_and_dtypes(registry, make_model, tmp_path_factory, heads_kv, head_dim, layers, dtype):
    heads, kv = heads_kv
    model = make_model(dim=heads * head_dim, num_heads=heads, num_kv_heads=kv, num_layers=layers, stability=["qk-norm"])
    model = model.to(dtype)
    target = tmp_path_factory.mktemp("native") / "ckpt"
    chameleon_sdk.save_model(model, target)
    loaded = chameleon_sdk.load_model(target, dtype=dtype)
    for key, value in model.state_dict().items():
        assert loaded.state_dict()[key].dtype == dtype
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_attention_backend_can_be_overridden_at_load(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(), tmp_path / "ckpt")
    loaded = chameleon_sdk.load_model(tmp_path / "ckpt", options={"attention": "eager"})
    assert loaded.attention_spec.name == "eager"


def test_missing_weights_file_is_named(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"ckpt/model\.safetensors' is missing \(listed in manifest\.json\)"):
        chameleon_sdk.load_model(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"ckpt' has neither 'model\.safetensors'"):
        chameleon_sdk.load_model(tmp_path / "ckpt", verify=False)


def test_corrupt_weights_file_is_named(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(), tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is truncated or altered: 100 bytes"):
        chameleon_sdk.load_model(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is not a readable safetensors file"):
        chameleon_sdk.load_model(tmp_path / "ckpt", verify=False)


def test_shape_mismatch_names_the_key_and_both_shapes(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(), tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    meta = json.loads(config_file.read_text())
    meta["model"]["ffn_dim"] = 24
    config_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json' is (truncated or altered|corrupt)"):
        chameleon_sdk.load_model(tmp_path / "ckpt")
    plugin_api.write_manifest(tmp_path / "ckpt")  # a consistent checkpoint of another shape
    with pytest.raises(
        CheckpointError, match=r"'layers\.0\.feed_forward\.w1\.weight' has shape \[40, 32\], .*\[24, 32\]"
    ):
        chameleon_sdk.load_model(tmp_path / "ckpt")


def test_bad_config_is_named(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(), tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    meta = json.loads(config_file.read_text())
    meta["model"]["dimm"] = 3
    config_file.write_text(json.dumps(meta))
    plugin_api.write_manifest(tmp_path / "ckpt")  # hand-edited, then re-listed: the format's own checks
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown key 'dimm'"):
        chameleon_sdk.load_model(tmp_path / "ckpt")
    meta["model"].pop("dimm")
    meta["format_version"] = 99
    config_file.write_text(json.dumps(meta))
    plugin_api.write_manifest(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="format_version 99"):
        chameleon_sdk.load_model(tmp_path / "ckpt")


def test_formats_claim_only_their_own_directories(registry, make_model, tmp_path):
    chameleon_sdk.save_model(make_model(stability=["qk-norm"]), tmp_path / "native")
    chameleon_sdk.save_model(make_model(stability=["qk-norm"]), tmp_path / "hf", format="hf")
    assert chameleon_sdk.detect_format(tmp_path / "native") == "native"
    assert chameleon_sdk.detect_format(tmp_path / "hf") == "hf"
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match=r"no checkpoint format recognises .*\['config\.json'\]"):
        chameleon_sdk.load_model(llama)
