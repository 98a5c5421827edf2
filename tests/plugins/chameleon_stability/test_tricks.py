"""The paper's stability tricks, and a new trick (Gemma-2 logit soft-capping) defined right here."""

from __future__ import annotations

import attrs
import pytest
import torch
import torch.nn.functional as F
from chameleon_stability.tricks import GroupedLayerNorm
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import ChameleonModel, ComponentSpec, ConfigError, ModelConfig, build_model, plugin_api
from chameleon_sdk.plugin_api import MaskSpec, StabilityTrick, rotary_tables

TINY = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64, ffn_dim=48, max_seq_len=32)
IDS = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))


def model(*stability, config: ModelConfig = TINY, seed: int = 0) -> ChameleonModel:
    torch.manual_seed(seed)
    return build_model(config, attention="eager", stability=stability).eval()


def same_weights(target: ChameleonModel, source: ChameleonModel) -> ChameleonModel:
    target.load_state_dict(source.state_dict(), strict=False)
    return target


def test_builtin_tricks_are_registered():
    names = {r.name for r in chameleon_sdk.available_plugins("stability")}
    assert {"qk-norm", "norm-reorder", "dropout", "z-loss"} <= names


# -- qk-norm --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "q_rows", "k_rows"),
    [({}, 1, 1), ({"sharing": "head"}, 4, 2), ({"sharing": "group", "num_groups": 2}, 2, 2)],
)
def test_qk_norm_sharing_modes_have_documented_shapes(options, q_rows, k_rows):
    m = model(ComponentSpec(name="qk-norm", options=options))
    attention = m.layers[1].attention
    assert attention.q_norm.weight.shape == attention.q_norm.bias.shape == (q_rows, 8)
    assert attention.k_norm.weight.shape == attention.k_norm.bias.shape == (k_rows, 8)
    assert attention.q_norm.eps == TINY.norm_eps


def test_qk_norm_option_errors():
    with pytest.raises(ConfigError, match="num_groups"):
        model(ComponentSpec(name="qk-norm", options={"sharing": "group"}))
    with pytest.raises(ConfigError, match="divide"):
        model(ComponentSpec(name="qk-norm", options={"sharing": "group", "num_groups": 4}))  # 2 kv heads
    with pytest.raises(ConfigError):
        model(ComponentSpec(name="qk-norm", options={"sharing": "everything"}))


@settings(max_examples=20)
@given(groups=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16))
def test_grouped_layer_norm_is_layer_norm_per_head_with_the_group_row(groups, seed):
    gen = torch.Generator().manual_seed(seed)
    norm = GroupedLayerNorm(heads=4, groups=groups, head_dim=8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(groups, 8, generator=gen))
        norm.bias.copy_(torch.randn(groups, 8, generator=gen))
    x = torch.randn(2, 3, 4, 8, generator=gen)
    for head in range(4):
        row = head // (4 // groups)
        expected = F.layer_norm(x[:, :, head], (8,), norm.weight[row], norm.bias[row], eps=1e-5)
        torch.testing.assert_close(norm(x)[:, :, head], expected)


def test_per_head_norms_with_equal_rows_equal_the_shared_norm():
    shared = model(ComponentSpec(name="qk-norm", options={"sharing": "layer"}))
    with torch.no_grad():
        for block in shared.layers:
            for norm in (block.attention.q_norm, block.attention.k_norm):
                norm.weight.normal_()
                norm.bias.normal_()
    per_head = model(ComponentSpec(name="qk-norm", options={"sharing": "head"}))
    state = shared.state_dict()
    for key, value in list(state.items()):
        if "_norm." in key and ".attention." in key:
            rows = 4 if "q_norm" in key else 2
            state[key] = value.expand(rows, -1).clone()
    per_head.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(per_head(IDS).logits, shared(IDS).logits)


def test_qk_norm_sees_queries_before_rotary_and_changes_the_output():
    seen = {}

    class Spy(StabilityTrick):
        def transform_qk(self, attention, q, k):
            seen.setdefault(attention.layer_idx, (q, k))
            return q, k

    class SpyPlugin:
        @plugin_api.hookimpl
        def register_stability_tricks(self, register):
            register("spy", Spy)

    registry = chameleon_sdk.PluginRegistry()
    registry.register(SpyPlugin(), name="spy")
    torch.manual_seed(0)
    m = build_model(TINY, attention="eager", stability=["spy"], registry=registry).eval()
    with torch.no_grad():
        m(IDS)
        block = m.layers[0]
        x = block.attention_norm(m.tok_embeddings(IDS))
        torch.testing.assert_close(seen[0][0], block.attention.wq(x).view(2, 7, 4, 8))
        torch.testing.assert_close(seen[0][1], block.attention.wk(x).view(2, 7, 2, 8))
        with_norm = same_weights(model("qk-norm"), m)
        for layer in with_norm.layers:
            layer.attention.q_norm.weight.data.fill_(3.0)
        assert not torch.allclose(with_norm(IDS).logits, m(IDS).logits)


# -- norm-reorder ---------------------------------------------------------------------------------


def test_norm_reorder_block_is_swin_style():
    m = model("norm-reorder")
    assert m.layout == "reordered"
    block = m.layers[0]
    x = torch.randn(2, 7, 32)
    rotary = rotary_tables(torch.arange(7).expand(2, 7), 8, TINY.rope_theta)
    mask = MaskSpec()
    with torch.no_grad():
        h = x + block.attention_norm(block.attention(x, rotary, mask, None, None, None))
        expected = h + block.ffn_norm(block.feed_forward(h))
        torch.testing.assert_close(block(x, rotary, mask, None, None, None), expected)
        pre = model(seed=0).layers[0]
        pre.load_state_dict(block.state_dict())
        assert not torch.allclose(pre(x, rotary, mask, None, None, None), expected)


# -- dropout --------------------------------------------------------------------------------------


def test_dropout_acts_in_training_only():
    m = model(ComponentSpec(name="dropout", options={"p": 0.5}))
    base = same_weights(model(), m)
    with torch.no_grad():
        torch.testing.assert_close(m(IDS).logits, base(IDS).logits)
        m.train()  # without gradients (generation) a model in training mode applies no dropout either
        torch.testing.assert_close(m(IDS).logits, base(IDS).logits)
    torch.manual_seed(1)
    first = m(IDS).logits
    torch.manual_seed(2)
    assert not torch.allclose(first, m(IDS).logits)


def test_dropout_takes_model_config_dropout_when_p_is_none():
    m = model("dropout", config=attrs.evolve(TINY, dropout=0.25))
    assert m.tricks[0].p == 0.25
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        model(ComponentSpec(name="dropout", options={"p": 1.5}))


def test_dropout_with_p_zero_is_a_no_op_in_training():
    m = model(ComponentSpec(name="dropout", options={"p": 0.0})).train()
    base = same_weights(model(), m).train()
    with torch.no_grad():
        torch.testing.assert_close(m(IDS).logits, base(IDS).logits)


# -- z-loss ---------------------------------------------------------------------------------------


@settings(max_examples=20)
@given(coef=st.sampled_from([1e-5, 1e-2, 0.5]), seed=st.integers(0, 2**16))
def test_z_loss_is_added_and_reported_on_its_own(coef, seed):
    m = model(ComponentSpec(name="z-loss", options={"coef": coef}))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 64, generator=gen) * 3
    targets = torch.randint(0, 64, (2, 5), generator=gen)
    targets[1, 2:] = -100
    out = m.loss(logits, targets)
    counted = targets != -100
    expected_z = coef * torch.logsumexp(logits, -1)[counted].square().mean()
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.terms["z_loss"], expected_z)
    torch.testing.assert_close(out.terms["cross_entropy"], ce)
    torch.testing.assert_close(out.loss, ce + expected_z)


def test_z_loss_gradient_shrinks_log_z():
    m = model(ComponentSpec(name="z-loss", options={"coef": 1.0}))
    logits = (torch.randn(1, 4, 64) + 5).requires_grad_()
    m.loss(logits, torch.full((1, 4), -100)).loss.backward()  # no counted target: no term pulls
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0
    logits.grad = None
    terms = model(ComponentSpec(name="z-loss", options={"coef": 1.0})).loss(logits, torch.zeros(1, 4, dtype=torch.long))
    terms.loss.backward()
    assert float(logits.grad.sum()) > 0  # d(lse^2)/dlogits sums to 2*lse > 0 (CE part sums to 0)


# -- a new trick through the same extension points ------------------------------------------------


@attrs.frozen(kw_only=True)
class SoftCapOptions:
    cap: float = 30.0


class LogitSoftCap(StabilityTrick):
    """Gemma 2's final-logit soft-capping: ``cap * tanh(logits / cap)``."""

    def __init__(self, options: SoftCapOptions) -> None:
        self.cap = options.cap

    def transform_logits(self, logits):
        return self.cap * torch.tanh(logits / self.cap)


class SoftCapPlugin:
    @plugin_api.hookimpl
    def register_stability_tricks(self, register):
        register("soft-cap", LogitSoftCap, options=SoftCapOptions)


def test_a_trick_defined_outside_the_core_plugs_in_by_name(registered_plugin):
    registered_plugin(SoftCapPlugin(), name="soft-cap-test")
    capped = model(ComponentSpec(name="soft-cap", options={"cap": 0.05}), "qk-norm")
    plain = same_weights(model("qk-norm"), capped)
    with torch.no_grad():
        got, raw = capped(IDS).logits, plain(IDS).logits
    assert float(got.abs().max()) < 0.05
    torch.testing.assert_close(got, 0.05 * torch.tanh(raw / 0.05))
    with torch.no_grad():  # the capped logits are what the cache path returns too
        cache = capped.new_cache(2, 16)
        torch.testing.assert_close(capped(IDS, cache=cache).logits, got)
