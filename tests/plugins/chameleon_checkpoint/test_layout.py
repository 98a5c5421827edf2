"""Every built-in format loads through a meta-device model: no placeholder left, weights in the asked
dtype, logits bit-identical to the saved model cast to that dtype (what loading into an initialised
model and casting it afterwards gave)."""

from __future__ import annotations

import copy

import pytest
import torch

import chameleon_sdk

from .conftest import logits

STABILITY = {
    "native": [{"name": "qk-norm", "options": {"sharing": "group", "num_groups": 2}}, "norm-reorder", "z-loss"],
    "hf": ["qk-norm", "norm-reorder"],
    "original": ["qk-norm", "norm-reorder"],
}


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.bfloat16], ids=["default", "fp32", "bf16"])
@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16], ids=["stored-fp32", "stored-bf16"])
@pytest.mark.parametrize("fmt", ["native", "hf", "original"])
def test_loading_in_a_dtype_equals_casting_the_saved_model(registry, make_model, tmp_path, fmt, stored, dtype):
    known = make_model(stability=STABILITY[fmt]).to(stored)
    chameleon_sdk.save_model(known, tmp_path / fmt, format=fmt)
    loaded = chameleon_sdk.load_model(tmp_path / fmt, dtype=dtype)
    expected = copy.deepcopy(known).to(dtype or torch.float32)
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    assert {p.dtype for p in loaded.parameters()} == {dtype or torch.float32}
    assert not loaded.training
    ids = torch.randint(0, known.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(loaded, ids), logits(expected, ids))


def test_a_shape_mismatch_on_a_meta_model_is_named(registry, make_model, tmp_path):
    known = make_model(stability=["qk-norm"])
    chameleon_sdk.save_model(known, tmp_path / "ckpt", format="hf")
    config_file = tmp_path / "ckpt" / "config.json"
    config_file.write_text(config_file.read_text().replace('"intermediate_size": 40', '"intermediate_size": 44'))
    with pytest.raises(chameleon_sdk.CheckpointError, match=r"has shape \[40, 32\], the model expects \[44, 32\]"):
        chameleon_sdk.load_model(tmp_path / "ckpt", verify=False)
