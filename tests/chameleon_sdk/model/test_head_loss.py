"""``model(input_ids, targets=...)``: the loss in chunks of positions must equal ``model.loss(logits, ...)``."""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk.model.head_loss as head_loss
from chameleon_sdk import ChameleonModel, ConfigError, ModelConfig, build_model, plugin_api
from chameleon_sdk.plugin_api import StabilityTrick


@contextlib.contextmanager
def chunk_rows(rows: int, vocab: int):
    """Make every chunk ``rows`` positions long on CPU."""
    saved = dict(head_loss._CHUNK_ELEMENTS)
    head_loss._CHUNK_ELEMENTS["cpu"] = rows * vocab
    try:
        yield
    finally:
        head_loss._CHUNK_ELEMENTS.clear()
        head_loss._CHUNK_ELEMENTS.update(saved)


def tiny(vocab: int = 97, tricks=("qk-norm", "z-loss"), seed: int = 0) -> ChameleonModel:
    torch.manual_seed(seed)
    config = ModelConfig(dim=32, num_layers=2, num_heads=2, vocab_size=vocab, max_seq_len=64)
    return build_model(config, stability=list(tricks))


def grads_of(model: ChameleonModel) -> dict[str, torch.Tensor]:
    out = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def both_ways(model, ids, targets, **kw):
    reference = model.loss(model(ids, **kw).logits, targets)
    reference.loss.backward()
    expected = grads_of(model)
    out = model(ids, targets=targets, **kw)
    out.loss.loss.backward()
    return reference, expected, out, grads_of(model)


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(1, 3),
    length=st.integers(1, 24),
    rows=st.integers(1, 9),
    ignored=st.floats(0.0, 1.0),
    z_loss=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_chunked_loss_and_gradients_equal_the_logits_path(batch, length, rows, ignored, z_loss, seed):
    vocab = 97
    model = tiny(vocab, ("qk-norm", "z-loss") if z_loss else ("qk-norm",), seed=seed % 7)
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    targets = torch.randint(0, vocab, (batch, length), generator=generator)
    targets[torch.rand(batch, length, generator=generator) < ignored] = -100
    with chunk_rows(rows, vocab):
        reference, expected, out, got = both_ways(model, ids, targets)
    assert model.chunked_loss and out.logits is None
    torch.testing.assert_close(out.loss.loss, reference.loss, atol=1e-5, rtol=1e-5)
    assert out.loss.terms.keys() == reference.terms.keys()
    for name, value in reference.terms.items():
        torch.testing.assert_close(out.loss.terms[name], value, atol=1e-5, rtol=1e-5)
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_no_counted_target_gives_zero_loss_terms_and_gradients():
    model = tiny()
    out = model(torch.randint(0, 97, (2, 5)), targets=torch.full((2, 5), -100))
    assert float(out.loss.loss.detach()) == 0.0 and set(out.loss.terms) == {"cross_entropy", "z_loss"}
    out.loss.loss.backward()
    assert all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters() if p.grad is not None)


def test_monitors_report_mean_log_z_over_the_counted_positions():
    model = tiny()
    model.collect_stats = True
    ids, targets = torch.randint(0, 97, (2, 6)), torch.randint(0, 97, (2, 6))
    targets[0, :4] = -100
    with torch.no_grad():
        logits = model(ids).logits
        out = model(ids, targets=targets)
    expected = torch.logsumexp(logits[targets != -100], dim=-1).mean()
    torch.testing.assert_close(out.stats["mean_log_z"], expected)
    assert out.stats["layer_output_norm"].shape == (2,)


class _SoftCap(StabilityTrick):
    def transform_logits(self, logits):
        return 2.0 * torch.tanh(logits / 2.0)


class _PerPositionSoftCap(_SoftCap):
    per_position = True


class _SoftCapPlugin:
    def __init__(self, trick: type[StabilityTrick]) -> None:
        self.trick = trick

    @plugin_api.hookimpl
    def register_stability_tricks(self, register):
        register("soft-cap-test", self.trick)


@pytest.mark.parametrize("trick", [_SoftCap, _PerPositionSoftCap])
def test_a_logit_trick_is_chunked_only_when_it_says_it_acts_per_position(registered_plugin, trick):
    registered_plugin(_SoftCapPlugin(trick), name="soft-cap-test")
    model = tiny(tricks=("soft-cap-test", "z-loss"))
    ids, targets = torch.randint(0, 97, (2, 9)), torch.randint(0, 97, (2, 9))
    with chunk_rows(4, 97):
        reference, expected, out, got = both_ways(model, ids, targets)
    assert model.chunked_loss is trick.per_position
    assert (out.logits is None) is trick.per_position
    torch.testing.assert_close(out.loss.loss, reference.loss, atol=1e-6, rtol=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-4)


def test_bf16_autocast_agrees_with_the_logits_path():
    model = tiny()
    ids, targets = torch.randint(0, 97, (2, 12)), torch.randint(0, 97, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model.loss(model(ids).logits, targets).loss
        chunked = model(ids, targets=targets).loss.loss
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, reference, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    ("targets", "needle"),
    [
        (torch.zeros(2, 3, dtype=torch.long), "shape (2, 4)"),
        (torch.zeros(2, 4), "integer token ids"),
        (torch.full((2, 4), 97), "outside the vocabulary"),
        ("not a tensor", "shape (2, 4)"),
    ],
)
def test_bad_targets_are_named(targets, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        tiny()(torch.zeros(2, 4, dtype=torch.long), targets=targets)


def test_targets_and_a_cache_do_not_mix():
    model, ids = tiny(), torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ConfigError, match="KV cache"):
        model(ids, targets=ids, cache=model.new_cache(1, 8))


def test_a_frozen_head_gets_no_gradient_and_the_rest_the_same():
    """LoRA and partial fine-tuning freeze the head: no [V, D] gradient is computed for it."""
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(5))
    targets = torch.roll(ids, -1, dims=1)
    model = tiny()
    model.output.weight.requires_grad_(False)
    with chunk_rows(5, 97):
        reference, expected, out, got = both_ways(model, ids, targets)
    assert "output.weight" not in got and model.output.weight.grad is None
    assert got.keys() == expected.keys()
    torch.testing.assert_close(out.loss.loss, reference.loss, atol=1e-6, rtol=1e-5)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)
