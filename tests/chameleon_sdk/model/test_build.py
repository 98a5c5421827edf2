"""build_model resolves plugin names; the model itself takes built parts and knows no registry."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.plugin_api import ModelParts, build_parts

CONFIG = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64, max_seq_len=32, dropout=0.1)
STABILITY = ("qk-norm", "z-loss", "dropout")


def test_build_model_equals_the_model_of_its_parts():
    torch.manual_seed(0)
    built = cs.build_model(CONFIG, stability=STABILITY)
    torch.manual_seed(0)
    parts = build_parts(CONFIG, stability=STABILITY)
    plain = cs.ChameleonModel(CONFIG, parts)
    assert isinstance(parts, ModelParts) and [s.name for s in parts.stability_specs] == list(STABILITY)
    for (key, a), (_, b) in zip(built.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.equal(a, b), key


def test_the_model_needs_no_registry_once_its_parts_are_built():
    parts = build_parts(CONFIG, stability=STABILITY)
    with cs.use_registry(cs.PluginRegistry(load_entry_points=False)) as empty:
        assert not empty.records()
        model = cs.ChameleonModel(CONFIG, parts)
    ids = torch.randint(0, 64, (2, 8))
    assert model.eval()(ids).logits.shape == (2, 8, 64)


def test_plugins_by_name_on_the_model_still_work_for_one_release():
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="use chameleon_sdk.build_model"):
        old = cs.ChameleonModel(CONFIG, stability=STABILITY)
    torch.manual_seed(0)
    new = cs.build_model(CONFIG, stability=STABILITY)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values(), strict=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attention": "nope"}, "no attention plugin named 'nope'"),
        ({"stability": ["qk-norm", "qk-norm"]}, "listed once each"),
        ({"stability": []}, "no stability trick applies it"),
    ],
)
def test_build_parts_refuses_what_does_not_fit(kwargs, message):
    with pytest.raises((cs.ConfigError, cs.PluginNotFoundError), match=message):
        build_parts(CONFIG, **kwargs)
