"""Writing Meta's ``original`` layout: round trips through the reader, Meta's FFN formula, and refusals."""

from __future__ import annotations

import json

import pytest
import torch
from chameleon_checkpoint.original_writer import ffn_params, meta_ffn_dim
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import CheckpointError, ModelConfig, plugin_api

from .conftest import logits


def _equal_rows(model: torch.nn.Module) -> torch.nn.Module:
    """Per-head or per-group QK-norm tables with every row equal to the first (one norm per layer in effect)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".q_norm." in name or ".k_norm." in name:
                param.copy_(param[:1].expand_as(param))
    return model


@settings(max_examples=10, deadline=None)
@given(
    heads_kv=st.sampled_from([(4, 4), (4, 2), (4, 1), (2, 2), (8, 2)]),
    head_dim=st.sampled_from([4, 8]),
    sharing=st.sampled_from(["layer", "head", "group", None]),
    reorder=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_a_model_written_as_original_loads_with_equal_logits(
    registry, make_model, tmp_path_factory, heads_kv, head_dim, sharing, reorder, seed
):
    heads, kv_heads = heads_kv
    stability: list = ["norm-reorder"] if reorder else []
    if sharing is not None:
        options = {"sharing": sharing} | ({"num_groups": kv_heads} if sharing == "group" else {})
        stability.append({"name": "qk-norm", "options": options})
    dims = {"dim": heads * head_dim, "num_heads": heads, "num_kv_heads": kv_heads, "ffn_dim": 24 + seed % 9}
    known = _equal_rows(make_model(stability=stability, seed=seed, **dims))
    directory = tmp_path_factory.mktemp("original") / "ckpt"
    chameleon_sdk.save_model(known, directory, format="original")
    assert chameleon_sdk.detect_format(directory) == "original"
    loaded = chameleon_sdk.load_model(directory)
    assert loaded.config == known.config
    assert loaded.layout == known.layout
    assert ("qk-norm" in [s.name for s in loaded.stability_specs]) == (sharing is not None)
    ids = torch.randint(0, known.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(logits(loaded, ids), logits(known, ids))


def test_params_json_has_meta_model_args(registry, make_model, tmp_path):
    known = make_model(stability=["qk-norm", "z-loss"], ffn_dim=None, dim=48, num_heads=4, num_kv_heads=4)
    chameleon_sdk.save_model(known, tmp_path / "ckpt", format="original")
    params = json.loads((tmp_path / "ckpt" / "params.json").read_text())
    assert params["model_parallel_size"] == 1
    model_args = params["model"]
    assert model_args | {"max_seq_len": 0} == {
        "dim": 48,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 4,
        "vocab_size": 48,
        "multiple_of": 256,
        "ffn_dim_multiplier": None,
        "norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "qk_normalization": True,
        "swin_norm": False,
        "max_seq_len": 0,
    }
    assert meta_ffn_dim(48, model_args["multiple_of"], model_args["ffn_dim_multiplier"]) == known.config.hidden_dim
    assert json.loads((tmp_path / "ckpt" / "consolidate_params.json").read_text()) == {"model_parallel_size": 1}
    state = torch.load(tmp_path / "ckpt" / "consolidated.pth", weights_only=True)
    assert state["layers.0.attention.q_normalization.weight"].shape == (12,)
    assert "layers.1.attention.k_normalization.bias" in state


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 300).map(lambda n: 2 * n),
    width=st.integers(1, 5000),
    multiple_of=st.sampled_from([1, 8, 64, 256]),
)
def test_ffn_params_reproduce_every_width(dim, width, multiple_of):
    config = ModelConfig(dim=dim, num_layers=1, num_heads=1, ffn_dim=width, ffn_multiple_of=multiple_of)
    assert meta_ffn_dim(dim, *ffn_params(config)) == width


class _Scaled(plugin_api.StabilityTrick):
    """A trick with no place in Meta's layout."""

    def transform_logits(self, logits):
        return logits * 2


class _ScaledPlugin:
    @plugin_api.hookimpl
    def register_stability_tricks(self, register):
        register("logit-scale", _Scaled)


def test_what_the_layout_cannot_express_is_refused(registry, registered_plugin, make_model, tmp_path):
    per_head = make_model(stability=[{"name": "qk-norm", "options": {"sharing": "head"}}])
    with pytest.raises(CheckpointError, match=r"q_norm\.weight: its 4 QK-norm rows differ.*one QK-norm per layer"):
        chameleon_sdk.save_model(per_head, tmp_path / "a", format="original")
    assert not (tmp_path / "a").exists()  # nothing half-written

    class Shared(torch.nn.Module):
        pass

    with pytest.raises(CheckpointError, match="ChameleonModel-style"):
        chameleon_sdk.save_model(Shared(), tmp_path / "b", format="original")
    registered_plugin(_ScaledPlugin(), name="logit-scale")
    with pytest.raises(CheckpointError, match=r"cannot express the stability trick\(s\) \['logit-scale'\]"):
        chameleon_sdk.save_model(make_model(stability=["qk-norm", "logit-scale"]), tmp_path / "c", format="original")
