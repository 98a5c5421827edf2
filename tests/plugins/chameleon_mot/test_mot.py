"""``mot``: modality-aware experts against the dense model, a per-token reference and the formats."""

from __future__ import annotations

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk import CheckpointError, ConfigError, plugin_api
from chameleon_sdk.model.routing import GroupedLinear, GroupedRMSNorm, TokenRoute

MOT = {"name": "mot", "options": {}}


def with_stability(pipe: cs.Pipeline, stability) -> cs.Pipeline:
    pipe.config = attrs.evolve(pipe.config, stability=stability)
    return pipe


def build(pipe: cs.Pipeline, stability, seed: int = 0) -> cs.ChameleonModel:
    with_stability(pipe, stability)
    torch.manual_seed(seed)
    return pipe.build_model().eval()


def mixed_ids(pipe: cs.Pipeline, length: int, seed: int) -> torch.Tensor:
    """A row of text ids and image codes in random order."""
    vocabulary = pipe.vocabulary
    text = vocabulary.text_mask().nonzero().flatten()
    codes = vocabulary.code_mask("image").nonzero().flatten()
    gen = torch.Generator().manual_seed(seed)
    pick_text = torch.rand(length, generator=gen) < 0.5
    return torch.where(
        pick_text,
        text[torch.randint(len(text), (length,), generator=gen)],
        codes[torch.randint(len(codes), (length,), generator=gen)],
    )


def test_routing_follows_the_vocabulary(tiny_image_pipe):
    model = build(tiny_image_pipe, ["qk-norm", MOT])
    groups = model.parameter_groups
    assert groups is not None and groups.count == 2 and groups.untie == {"attention", "ffn", "norms"}
    vocabulary = tiny_image_pipe.vocabulary
    assert torch.equal(groups.token_group[: vocabulary.size] == 1, vocabulary.code_mask("image"))
    assert int(groups.token_group[vocabulary.specials["bos"]]) == 0
    block = model.blocks[0]
    assert isinstance(block.attention.wq, GroupedLinear) and block.attention.wq.weight.shape[0] == 2
    assert isinstance(block.feed_forward.w2, GroupedLinear) and isinstance(block.ffn_norm, GroupedRMSNorm)


def test_one_group_equals_the_dense_model_bit_for_bit(tiny_image_pipe):
    dense = build(tiny_image_pipe, ["qk-norm"])
    single = build(tiny_image_pipe, ["qk-norm", {"name": "mot", "options": {"modalities": []}}])
    assert single.parameter_groups is not None and single.parameter_groups.count == 1
    for (name, a), (_, b) in zip(dense.state_dict().items(), single.state_dict().items(), strict=True):
        assert torch.equal(a, b.reshape(a.shape)), name
    ids = mixed_ids(tiny_image_pipe, 40, seed=0).unsqueeze(0)
    targets = ids.roll(-1, 1)
    dense.train(), single.train()
    a, b = dense(ids, targets=targets).loss, single(ids, targets=targets).loss
    assert torch.equal(a.loss, b.loss)
    a.loss.backward(), b.loss.backward()
    for (name, p), (_, q) in zip(dense.named_parameters(), single.named_parameters(), strict=True):
        assert torch.equal(p.grad, q.grad.reshape(p.grad.shape)), name


def per_token_forward(self, x, route):
    """The naive reference for both grouped modules: one token at a time, with its group's weights."""
    flat = x.reshape(-1, x.shape[-1])
    rows = []
    for token, group in zip(flat, route.groups.tolist(), strict=True):
        if isinstance(self, GroupedLinear):
            rows.append(self.weight[group] @ token)
        else:
            rows.append(torch.nn.functional.rms_norm(token, (token.shape[-1],), self.weight[group], self.eps))
    return torch.stack(rows).view(*x.shape[:-1], -1)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), split=st.integers(1, 15), untie=st.sets(st.sampled_from(plugin_api.UNTIE_PARTS)))
def test_grouped_routing_equals_a_per_token_reference_with_packing_and_cached_decode(
    tiny_image_pipe, monkeypatch, seed, split, untie
):
    model = build(tiny_image_pipe, ["qk-norm", {"name": "mot", "options": {"untie": sorted(untie)}}], seed)
    for module in model.modules():  # distinct gains, so that a wrong norm group shows
        if isinstance(module, GroupedRMSNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.2)
    ids = torch.stack([mixed_ids(tiny_image_pipe, 16, seed), mixed_ids(tiny_image_pipe, 16, seed + 1)])
    documents = (torch.arange(16) >= split).long().expand(2, 16)
    with torch.no_grad():
        packed = model(ids, document_ids=documents).logits
        cache = model.new_cache(2, 16)
        steps = [model(ids[:, :split], cache=cache).logits]
        steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(split, 16)]
        with monkeypatch.context() as patch:
            patch.setattr(GroupedLinear, "forward", per_token_forward)
            patch.setattr(GroupedRMSNorm, "forward", per_token_forward)
            reference_packed = model(ids, document_ids=documents).logits
            reference_causal = model(ids).logits
    torch.testing.assert_close(packed, reference_packed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(steps, 1), reference_causal, atol=1e-5, rtol=1e-5)


def test_a_compiled_one_token_step_equals_eager(tiny_image_pipe):
    torch._dynamo.reset()  # this test's static-shape compilation must not mark later tests' shapes dynamic
    model = build(tiny_image_pipe, ["qk-norm", MOT])
    ids = torch.stack([mixed_ids(tiny_image_pipe, 12, 3), mixed_ids(tiny_image_pipe, 12, 4)])
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        eager_cache, compiled_cache = model.new_cache(2, 16), model.new_cache(2, 16)
        model(ids[:, :8], cache=eager_cache), model(ids[:, :8], cache=compiled_cache)
        for t in range(8, 12):
            expected = model(ids[:, t : t + 1], cache=eager_cache).logits
            got = compiled(ids[:, t : t + 1], cache=compiled_cache).logits
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch._dynamo.reset()


def test_parameters_grow_with_groups_and_active_ones_do_not(tiny_image_pipe):
    dense = build(tiny_image_pipe, ["qk-norm"])
    mot = build(tiny_image_pipe, ["qk-norm", MOT])
    shared = {"tok_embeddings.weight", "norm.weight", "output.weight"}
    per_block = sum(p.numel() for n, p in dense.named_parameters() if n not in shared and "q_norm" not in n)
    per_block -= sum(p.numel() for n, p in dense.named_parameters() if "k_norm" in n)
    total = sum(p.numel() for p in dense.parameters())
    assert sum(p.numel() for p in mot.parameters()) == total + per_block  # one more copy of the untied parts


def test_generation_works_unchanged_text_image_and_guidance(tiny_image_pipe):
    with_stability(tiny_image_pipe, ["qk-norm", MOT])
    torch.manual_seed(0)
    tiny_image_pipe.model = tiny_image_pipe.build_model()
    text = tiny_image_pipe.generate("a red circle", max_new_tokens=6, seed=0)
    assert isinstance(text, cs.Document) and text.segments
    for guidance in (None, cs.Guidance(scale_text=3.0)):
        drawn = tiny_image_pipe.generate("draw:", mode="image", max_new_tokens=80, guidance=guidance, seed=0)
        assert any(isinstance(segment, cs.Image) for segment in drawn.segments)
    mixed = tiny_image_pipe.generate("a red circle", mode="interleaved", max_new_tokens=90, seed=1)
    assert isinstance(mixed, cs.Document)


def test_native_round_trip_and_layouts_that_cannot_hold_it(tiny_image_pipe, tmp_path):
    model = build(tiny_image_pipe, ["qk-norm", MOT])
    cs.save_model(model, tmp_path / "native")
    loaded = cs.load_model(tmp_path / "native")
    ids = mixed_ids(tiny_image_pipe, 20, 5).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert torch.equal(loaded.token_group, model.token_group)
    for layout in ("hf", "original"):
        with pytest.raises(CheckpointError, match="mot"):
            cs.save_model(model, tmp_path / layout, format=layout)
        assert not (tmp_path / layout).exists()


def test_bad_options_and_a_missing_vocabulary_are_clear_errors(tiny_image_pipe):
    with pytest.raises(ConfigError, match="unknown parts"):
        build(tiny_image_pipe, [{"name": "mot", "options": {"untie": ["embeddings"]}}])
    with pytest.raises(ConfigError, match="no modality 'audio'"):
        build(tiny_image_pipe, [{"name": "mot", "options": {"modalities": ["audio"]}}])
    with pytest.raises(ConfigError, match="modalities"):
        build(tiny_image_pipe, [{"name": "mot", "options": {"modalities": "image"}}])
    config = attrs.evolve(tiny_image_pipe.config.model, vocab_size=tiny_image_pipe.vocabulary.size)
    with pytest.raises(ConfigError, match="needs its vocabulary"):
        cs.build_model(config, stability=["mot"])


def test_route_is_built_once_per_forward(tiny_image_pipe, monkeypatch):
    model = build(tiny_image_pipe, ["qk-norm", MOT])
    built = []
    original = TokenRoute.__init__

    def counting(self, groups, count):
        built.append(groups.shape)
        original(self, groups, count)

    monkeypatch.setattr(TokenRoute, "__init__", counting)
    with torch.no_grad():
        model(mixed_ids(tiny_image_pipe, 10, 0).unsqueeze(0))
    assert built == [torch.Size([1, 10])]
