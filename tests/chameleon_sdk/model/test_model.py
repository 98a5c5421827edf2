"""The model core: parameter layout, init, packed documents, KV cache, compile, presets, loss, refusals."""

from __future__ import annotations

import math
import shutil

import attrs
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import (
    ChameleonModel,
    ComponentSpec,
    ConfigError,
    ModelConfig,
    Pipeline,
    PipelineConfig,
    UnsupportedMaskError,
    build_model,
    model_preset,
    plugin_api,
)
from chameleon_sdk.plugin_api import KVCache, MaskKind, StabilityTrick, document_positions

TINY = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64, ffn_dim=48, max_seq_len=64)


def tiny_model(config: ModelConfig = TINY, **kwargs) -> ChameleonModel:
    torch.manual_seed(0)
    kwargs.setdefault("attention", "eager")
    return build_model(config, **kwargs).eval()


# -- parameter layout and init ------------------------------------------------------------------


def test_state_dict_keys_and_shapes_follow_the_fixed_layout():
    model = tiny_model(stability=[ComponentSpec(name="qk-norm", options={"sharing": "head"})])
    d, h, kv, dh, f, v = 32, 4, 2, 8, 48, 64
    expected = {"tok_embeddings.weight": (v, d), "norm.weight": (d,), "output.weight": (v, d)}
    for i in range(2):
        p = f"layers.{i}."
        expected |= {
            p + "attention_norm.weight": (d,),
            p + "attention.wq.weight": (h * dh, d),
            p + "attention.wk.weight": (kv * dh, d),
            p + "attention.wv.weight": (kv * dh, d),
            p + "attention.wo.weight": (d, h * dh),
            p + "attention.q_norm.weight": (h, dh),
            p + "attention.q_norm.bias": (h, dh),
            p + "attention.k_norm.weight": (kv, dh),
            p + "attention.k_norm.bias": (kv, dh),
            p + "ffn_norm.weight": (d,),
            p + "feed_forward.w1.weight": (f, d),
            p + "feed_forward.w3.weight": (f, d),
            p + "feed_forward.w2.weight": (d, f),
        }
    assert {k: tuple(t.shape) for k, t in model.state_dict().items()} == expected


def test_init_uses_std_and_scaled_residual_projections():
    config = ModelConfig(dim=256, num_layers=8, num_heads=4, vocab_size=512, ffn_dim=512)
    torch.manual_seed(0)
    model = build_model(config, attention="eager")
    assert model.layers[0].attention.wq.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.tok_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual = 0.02 / math.sqrt(2 * 8)
    assert model.layers[3].attention.wo.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert model.layers[3].feed_forward.w2.weight.std().item() == pytest.approx(residual, rel=0.05)
    assert torch.equal(model.norm.weight, torch.ones(256))


def test_forward_shapes_and_dtype():
    model = tiny_model()
    out = model(torch.randint(0, 64, (3, 7)))
    assert out.logits.shape == (3, 7, 64)
    assert out.cache is None and out.stats == {}


# -- positions and packed documents -------------------------------------------------------------


def test_document_positions_restart_per_document():
    docs = torch.tensor([[0, 0, 0, 1, 1, 2], [5, 5, 5, 5, 5, 5]])
    assert document_positions(docs).tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]]
    continued = document_positions(
        torch.tensor([[2, 2, 3]]), previous_document=torch.tensor([2]), next_position=torch.tensor([4])
    )
    assert continued.tolist() == [[4, 5, 0]]


@settings(max_examples=15)
@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_packed_documents_equal_separate_forwards(lengths, seed):
    model = tiny_model(stability=["qk-norm"])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (1, sum(lengths)), generator=gen)
    docs = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)).unsqueeze(0)
    with torch.no_grad():
        packed = model(ids, document_ids=docs).logits
        separate = torch.cat([model(chunk).logits for chunk in ids.split(lengths, dim=1)], dim=1)
    torch.testing.assert_close(packed, separate, atol=1e-5, rtol=1e-5)


# -- KV cache -----------------------------------------------------------------------------------


@settings(max_examples=15)
@given(
    prompt=st.integers(1, 8),
    steps=st.integers(1, 5),
    kv_heads=st.sampled_from([1, 2, 4]),
    seed=st.integers(0, 2**16),
)
def test_prefill_then_steps_equal_full_forward(prompt, steps, kv_heads, seed):
    config = attrs.evolve(TINY, num_kv_heads=kv_heads)
    model = tiny_model(config, stability=["qk-norm"])
    ids = torch.randint(0, 64, (2, prompt + steps), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(2, 16)
        parts = [model(ids[:, :prompt], cache=cache).logits]
        parts += [model(ids[:, t : t + 1], cache=cache).logits for t in range(prompt, prompt + steps)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [prompt + steps] * 2


@settings(max_examples=20)
@given(
    length=st.integers(1, 8),
    keep=st.integers(1, 3),
    cached=st.booleans(),
    stability=st.sampled_from([[], ["qk-norm", "z-loss"]]),
    seed=st.integers(0, 2**16),
)
def test_logits_at_equal_the_full_logits_at_those_positions(length, keep, cached, stability, seed):
    model = tiny_model(stability=stability)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (3, length), generator=gen)
    at = torch.randint(0, length, (3, keep), generator=gen)
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(3, 16) if cached else None
        kept = model(ids, logits_at=at, cache=cache).logits
    assert kept.shape == (3, keep, 64)
    torch.testing.assert_close(kept, full.gather(1, at.unsqueeze(-1).expand(-1, -1, 64)), atol=1e-5, rtol=1e-5)
    if cache is not None:
        assert cache.lengths.tolist() == [length] * 3  # the cache holds every position, not only the kept ones


def test_logits_at_refusals():
    model = tiny_model()
    ids = torch.zeros(2, 4, dtype=torch.long)
    for bad in (torch.zeros(2, dtype=torch.long), torch.zeros(3, 1, dtype=torch.long), torch.zeros(2, 1), [[0], [1]]):
        with pytest.raises(ConfigError, match=r"logits_at must be an integer tensor \[B=2, K\]"):
            model(ids, logits_at=bad)
    for position in (-1, 4):
        with pytest.raises(ConfigError, match=r"outside the 4 input positions"):
            model(ids, logits_at=torch.tensor([[0], [position]]))
    with pytest.raises(ConfigError, match="cannot be combined with logits_at"):
        model(ids, targets=ids, logits_at=torch.zeros(2, 1, dtype=torch.long))


def test_rows_of_different_lengths_decode_independently():
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 64, (9,), generator=gen), torch.randint(0, 64, (9,), generator=gen)]
    true_lengths = [3, 6]
    padded = torch.stack([torch.cat([r[:n], torch.zeros(6 - n, dtype=torch.long)]) for r, n in zip(rows, true_lengths)])
    with torch.no_grad():
        cache = model.new_cache(2, 16)
        model(padded, cache=cache)
        cache.truncate(torch.tensor(true_lengths))
        steps = []
        for t in range(3):
            token = torch.stack([r[n + t] for r, n in zip(rows, true_lengths)]).unsqueeze(1)
            steps.append(model(token, cache=cache).logits[:, 0])
        for b, (row, n) in enumerate(zip(rows, true_lengths)):
            full = model(row[: n + 3].unsqueeze(0)).logits[0, n:]
            torch.testing.assert_close(torch.stack([s[b] for s in steps]), full, atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [6, 9]


def test_eager_attention_reads_only_up_to_the_longest_row_not_the_capacity():
    model = tiny_model()
    seen: list[int] = []

    def recording(backend):
        def attend(q, k, v, mask, scale):
            seen.append(k.shape[2])
            return backend(q, k, v, mask, scale)

        return attend

    for block in model.layers:
        block.attention.backend = recording(block.attention.backend)
    with torch.no_grad():
        cache = model.new_cache(2, 64)
        model(torch.zeros(2, 5, dtype=torch.long), cache=cache)
        cache.truncate(torch.tensor([3, 5]))
        model(torch.zeros(2, 1, dtype=torch.long), cache=cache)
    layers = len(model.layers)
    assert seen == [5] * layers + [6] * layers  # the prompt's 5 slots, then the longer row's 5 + 1
    assert cache.lengths.tolist() == [4, 6] and cache.max_len == 64


def test_cache_with_packed_documents_matches_full_forward():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 9), generator=torch.Generator().manual_seed(2))
    docs = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2]])
    with torch.no_grad():
        full = model(ids, document_ids=docs).logits
        cache = model.new_cache(1, 16, documents=True)
        prefill = model(ids[:, :5], document_ids=docs[:, :5], cache=cache).logits
        step_same_doc = model(ids[:, 5:6], cache=cache).logits  # continues document 1
        step_rest = model(ids[:, 6:], document_ids=docs[:, 6:], cache=cache).logits
    torch.testing.assert_close(torch.cat([prefill, step_same_doc, step_rest], 1), full, atol=1e-5, rtol=1e-5)


def test_cache_refuses_overflow_and_wrong_batch():
    model = tiny_model()
    cache = model.new_cache(2, 4)
    with pytest.raises(ConfigError, match="overflow"):
        model(torch.zeros(2, 5, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="rows"):
        model(torch.zeros(3, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="documents=True"):
        model(torch.zeros(2, 1, dtype=torch.long), document_ids=torch.zeros(2, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ConfigError, match="truncate"):
        cache.truncate(torch.tensor([1, 1]))


def test_bidirectional_spans_let_a_prefix_see_ahead():
    model = tiny_model()
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(3))
    spans = torch.tensor([[0, 0, 0, -1, -1, -1]])
    changed = ids.clone()
    changed[0, 2] = (ids[0, 2] + 1) % 64
    with torch.no_grad():
        a, b = model(ids, span_ids=spans).logits, model(changed, span_ids=spans).logits
        causal_a, causal_b = model(ids).logits, model(changed).logits
    assert not torch.allclose(a[0, 0], b[0, 0])  # position 0 sees token 2 inside the span
    torch.testing.assert_close(causal_a[0, :2], causal_b[0, :2])  # causal: it does not


# -- torch.compile ------------------------------------------------------------------------------


def _compile_check(backend: str, *, variants: bool = True) -> None:
    preset = model_preset("debug")
    torch.manual_seed(0)
    model = build_model(preset.model, attention="sdpa", stability=preset.stability).eval()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    ids = torch.randint(0, preset.model.vocab_size, (2, 12))
    docs = torch.tensor([[0] * 5 + [1] * 7, [0] * 12])
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
        if not variants:
            return
        torch.testing.assert_close(
            compiled(ids, document_ids=docs).logits, model(ids, document_ids=docs).logits, atol=1e-5, rtol=1e-5
        )
        cache = model.new_cache(2, 16)
        got = [compiled(ids[:, :8], cache=cache).logits, compiled(ids[:, 8:9], cache=cache).logits]
        torch.testing.assert_close(torch.cat(got, 1), model(ids[:, :9]).logits, atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_has_no_graph_breaks():
    _compile_check("eager")  # dynamo tracing only: fullgraph=True raises on any graph break


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_compile_fullgraph_with_inductor():
    _compile_check("inductor", variants=False)  # one compilation: inductor on CPU is slow to compile


# -- presets ------------------------------------------------------------------------------------


def test_debug_preset_builds_and_runs():
    preset = model_preset("debug")
    model = build_model(preset.model, stability=preset.stability)
    assert model(torch.zeros(1, 4, dtype=torch.long)).logits.shape == (1, 4, preset.model.vocab_size)


def test_paper_presets_have_the_paper_shapes():
    seven, big = model_preset("7b"), model_preset("34b")
    assert (seven.model.num_layers, seven.model.dim, seven.model.num_heads, seven.model.kv_heads) == (32, 4096, 32, 32)
    assert seven.model.hidden_dim == 11008 and seven.model.dropout == 0.1
    assert (big.model.num_layers, big.model.dim, big.model.num_heads, big.model.kv_heads) == (48, 8192, 64, 8)
    assert big.model.hidden_dim == 22016 and big.model.dropout == 0.0
    assert "norm-reorder" in [s.name for s in big.stability]
    assert "dropout" not in [s.name for s in big.stability]
    with pytest.raises(ConfigError, match="presets"):
        model_preset("13b")


@pytest.mark.parametrize(("name", "billions"), [("7b", 7.0), ("34b", 34.3)])
def test_paper_presets_build_on_meta_with_the_right_size(name, billions):
    preset = model_preset(name)
    with torch.device("meta"):
        model = build_model(preset.model, stability=preset.stability)
    assert model.layout == ("reordered" if name == "34b" else "pre_norm")
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.03)


# -- loss ---------------------------------------------------------------------------------------


def test_loss_is_cross_entropy_over_counted_targets():
    model = tiny_model()
    logits = torch.randn(2, 5, 64)
    targets = torch.randint(0, 64, (2, 5))
    targets[0, :3] = -100
    out = model.loss(logits, targets)
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert set(out.terms) == {"cross_entropy"}
    nothing = model.loss(logits, torch.full((2, 5), -100))
    assert nothing.loss.item() == 0.0
    with pytest.raises(ConfigError, match="targets"):
        model.loss(logits, targets[:, :4])


# -- refusals -----------------------------------------------------------------------------------


class _CausalOnly:
    """A test backend declaring only plain causal masks."""

    def __call__(self, q, k, v, mask, scale):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=True)


class _CausalOnlyPlugin:
    @plugin_api.hookimpl
    def register_attention_backends(self, register):
        register("causal-only", _CausalOnly, mask_kinds=frozenset({MaskKind.CAUSAL}))


def test_model_refuses_masks_the_backend_cannot_do(registered_plugin):
    registered_plugin(_CausalOnlyPlugin(), name="causal-only")
    model = tiny_model(attention="causal-only")
    ids = torch.zeros(1, 4, dtype=torch.long)
    assert model(ids).logits.shape == (1, 4, 64)
    with pytest.raises(UnsupportedMaskError, match="document"):
        model(ids, document_ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(UnsupportedMaskError, match="offset"):
        model(ids, cache=model.new_cache(1, 8))


def test_config_refusals():
    with pytest.raises(ConfigError, match="vocab_size"):
        build_model(attrs.evolve(TINY, vocab_size=None))
    with pytest.raises(ConfigError, match="dropout"):
        build_model(attrs.evolve(TINY, dropout=0.1))
    with pytest.raises(chameleon_sdk.PluginNotFoundError):
        build_model(TINY, stability=["qk-nrom"])
    with pytest.raises(ConfigError, match="once"):
        build_model(TINY, stability=["qk-norm", "qk-norm"])
    with pytest.raises(ConfigError, match="input_ids"):
        tiny_model()(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="shape"):
        tiny_model()(torch.zeros(1, 4, dtype=torch.long), document_ids=torch.zeros(1, 3, dtype=torch.long))


class _PreNormAsker(StabilityTrick):
    residual_layout = "pre_norm"


class _PreNormPlugin:
    @plugin_api.hookimpl
    def register_stability_tricks(self, register):
        register("pre-norm-asker", _PreNormAsker)


def test_conflicting_residual_layouts_are_refused(registered_plugin):
    registered_plugin(_PreNormPlugin(), name="pre-norm-asker")
    with pytest.raises(ConfigError, match="conflicting"):
        build_model(TINY, stability=["pre-norm-asker", "norm-reorder"])


# -- monitors -----------------------------------------------------------------------------------


def test_stats_report_layer_norms_attention_logits_and_log_z():
    model = tiny_model(stability=["qk-norm"])
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(4))
    seen_logits: list[torch.Tensor] = []
    hidden: list[torch.Tensor] = []
    for block in model.layers:
        reference = block.attention.backend

        def recording(q, k, v, mask, scale, _reference=reference):
            rep = q.shape[1] // k.shape[1]
            scores = q @ k.repeat_interleave(rep, 1).transpose(-1, -2) * scale
            allowed = mask.allowed(q.shape[0], q.shape[2], k.shape[2], q.device).unsqueeze(1)
            seen_logits.append(scores.masked_fill(~allowed, -math.inf).amax())
            return _reference(q, k, v, mask, scale)

        block.attention.backend = recording
        block.register_forward_hook(lambda _m, _i, out: hidden.append(out))
    model.collect_stats = True
    with torch.no_grad():
        out = model(ids)
    assert set(out.stats) == {"layer_output_norm", "max_attention_logit", "mean_log_z"}
    torch.testing.assert_close(out.stats["max_attention_logit"], torch.stack(seen_logits))
    torch.testing.assert_close(out.stats["layer_output_norm"], torch.stack([h.norm(dim=-1).mean() for h in hidden]))
    torch.testing.assert_close(out.stats["mean_log_z"], torch.logsumexp(out.logits, -1).mean())


# -- the pipeline builds the model ----------------------------------------------------------------


class _FakeTokenizer:
    is_trained = True
    vocab_size = 40
    bos_id, eos_id, pad_id = 1, 2, 0


def test_pipeline_build_model_fills_vocab_size_and_plugins():
    config = PipelineConfig(
        model=attrs.evolve(TINY, vocab_size=None), attention="eager", stability=["qk-norm", "z-loss"]
    )
    pipe = Pipeline(config, text_tokenizer=_FakeTokenizer(), modalities={})  # type: ignore[arg-type]
    model = pipe.build_model()
    assert model.output.weight.shape[0] == pipe.vocabulary.size
    assert model.attention_spec.name == "eager"
    assert [s.name for s in model.stability_specs] == ["qk-norm", "z-loss"]
    too_small = attrs.evolve(config, model=attrs.evolve(TINY, vocab_size=8))
    with pytest.raises(ConfigError, match="smaller"):
        Pipeline(too_small, text_tokenizer=_FakeTokenizer(), modalities={}).build_model()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model"):
        Pipeline(PipelineConfig(), text_tokenizer=_FakeTokenizer(), modalities={}).build_model()  # type: ignore[arg-type]


def test_kvcache_validates_its_shape():
    with pytest.raises(ConfigError):
        KVCache(TINY, batch=0, max_len=4)


def test_cache_works_under_bf16_autocast():
    model = tiny_model(attention="sdpa")
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(ids).logits.float()
        cache = model.new_cache(2, 16, dtype=torch.bfloat16)
        parts = [model(ids[:, :5], cache=cache).logits, model(ids[:, 5:], cache=cache).logits]
    assert cache.dtype == torch.bfloat16
    torch.testing.assert_close(torch.cat(parts, 1).float(), full, atol=3e-2, rtol=3e-2)


def test_training_steps_reduce_the_loss_and_reach_every_parameter():
    model = tiny_model(attention="sdpa", stability=["qk-norm", "z-loss"]).train()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model.loss(model(ids[:, :-1]).logits, ids[:, 1:])
        optimizer.zero_grad()
        out.loss.backward()
        if not losses:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]
