"""quantize_model and load_model(quantize=...): the quantization plugin kind's core side."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk import plugin_api


class HalveHead:
    """A toy quantization: rounds the LM head to 1 decimal in place (enough to see it was applied)."""

    def quantize(self, model):
        with torch.no_grad():
            model.output.weight.copy_(torch.round(model.output.weight * 10) / 10)
        return model


class ReturnsNothing:
    def quantize(self, model):
        return None


class Plugin:
    @plugin_api.hookimpl
    def register_quantizations(self, register):
        register("round-head", HalveHead)
        register("returns-nothing", ReturnsNothing)
        register("not-a-quantization", object)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return cs.build_model(cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=64, max_seq_len=32))


def test_a_registered_quantization_is_applied_and_the_model_left_in_eval(registered_plugin, model):
    registered_plugin(Plugin(), name="toy-quantizations")
    model.train()
    model.vocabulary = "kept"
    out = cs.quantize_model(model, {"name": "round-head"})
    assert out is model and not out.training and out.vocabulary == "kept"
    assert torch.equal(out.output.weight, torch.round(out.output.weight * 10) / 10)


def test_load_model_quantizes_after_the_dtype_cast(registered_plugin, model, tmp_path):
    registered_plugin(Plugin(), name="toy-quantizations")
    cs.save_model(model, tmp_path / "m")
    loaded = cs.load_model(tmp_path / "m", dtype=torch.bfloat16, quantize="round-head")
    assert loaded.output.weight.dtype == torch.bfloat16
    assert torch.equal(loaded.output.weight, torch.round(loaded.output.weight * 10) / 10)
    assert not torch.equal(loaded.output.weight, model.output.weight.bfloat16())


@pytest.mark.parametrize(
    ("choice", "error", "match"),
    [
        ("int9-magic", cs.PluginNotFoundError, "no quantization plugin named 'int9-magic'"),
        (8, cs.ConfigError, "quantize must be a quantization plugin name"),
        ("returns-nothing", cs.ConfigError, "returned NoneType, not a module"),
        ("not-a-quantization", cs.ConfigError, "built object, which has no quantize"),
    ],
)
def test_bad_choices_are_typed_errors(registered_plugin, model, choice, error, match):
    registered_plugin(Plugin(), name="toy-quantizations")
    with pytest.raises(error, match=match):
        cs.quantize_model(model, choice)


def test_the_contract_is_a_runtime_checkable_protocol():
    assert isinstance(HalveHead(), plugin_api.Quantization) and not isinstance(object(), plugin_api.Quantization)
