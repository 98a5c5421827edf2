"""The compiled decode step: small matmuls as reductions, CFG rows, and no recompiles between calls."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.errors import GenerationError
from chameleon_sdk.generation import Guidance, generate_tokens
from chameleon_sdk.generation.compiled import (
    _FROZEN,
    REDUCTION_MAX_ROWS,
    _fp32_mm_as_reduction,
    _mm_as_reduction,
    compile_decode_step,
    direct_integer_upcasts,
    int8_upcasts_through_bf16,
)
from chameleon_sdk.plugin_api import KVCache


@given(
    rows=st.integers(1, REDUCTION_MAX_ROWS),
    inner=st.integers(1, 70),
    cols=st.integers(1, 40),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_reduction_equals_the_matmul(rows, inner, cols, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, inner, generator=generator).to(dtype)
    weight = torch.randn(cols, inner, generator=generator).to(dtype)
    got = _mm_as_reduction(a, weight.t())  # the layout nn.Linear hands to aten.mm
    expected = a.float() @ weight.t().float()
    assert got.dtype == dtype and got.shape == (rows, cols)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), expected.to(dtype).float(), rtol=tolerance, atol=tolerance * inner**0.5)


def _upcast_graph(integer_dtype, half_dtype, permuted):
    """``float32([permute](half(w)))`` for an integer ``w``, as inductor's post-grad graph has it."""
    convert, permute = torch.ops.prims.convert_element_type.default, torch.ops.aten.permute.default
    graph = torch.fx.Graph()
    weight = graph.placeholder("w")
    weight.meta["val"] = torch.empty(3, 5, dtype=integer_dtype)
    node = graph.call_function(convert, (weight, half_dtype))
    if permuted:
        node = graph.call_function(permute, (node, [1, 0]))
    out = graph.call_function(convert, (node, torch.float32))
    out.meta["val"] = torch.empty((5, 3) if permuted else (3, 5))
    graph.output(out)
    return graph


@given(
    integer_dtype=st.sampled_from([torch.int8, torch.uint8]),
    half_dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    permuted=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_integer_weights_go_to_fp32_directly_and_every_value_is_unchanged(integer_dtype, half_dtype, permuted, seed):
    info = torch.iinfo(integer_dtype)
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randint(info.min, info.max + 1, (3, 5), generator=generator, dtype=torch.int64).to(integer_dtype)
    before = torch.fx.GraphModule(torch.nn.Module(), _upcast_graph(integer_dtype, half_dtype, permuted))(weight)
    graph = _upcast_graph(integer_dtype, half_dtype, permuted)
    assert direct_integer_upcasts(graph) == 1
    assert [n.args[1] for n in graph.nodes if n.op == "call_function" and "convert" in str(n.target)] == [torch.float32]
    assert torch.equal(torch.fx.GraphModule(torch.nn.Module(), graph)(weight), before)


def _int8_upcast_graph(permuted):
    """``float32([permute](w))`` for an int8 ``w``: an fp32 model's weight-only int8 dequantization."""
    convert, permute = torch.ops.prims.convert_element_type.default, torch.ops.aten.permute.default
    graph = torch.fx.Graph()
    node = weight = graph.placeholder("w")
    weight.meta["val"] = torch.empty(3, 5, dtype=torch.int8)
    if permuted:
        node = graph.call_function(permute, (weight, [1, 0]))
        node.meta["val"] = torch.empty(5, 3, dtype=torch.int8)
    out = graph.call_function(convert, (node, torch.float32))
    out.meta["val"] = torch.empty((5, 3) if permuted else (3, 5))
    graph.output(out)
    return graph


@given(permuted=st.booleans(), seed=st.integers(0, 2**16))
def test_int8_upcasts_go_through_bf16_for_freezing_and_back_after_it_with_every_value_unchanged(permuted, seed):
    weight = torch.randint(-128, 128, (3, 5), generator=torch.Generator().manual_seed(seed)).to(torch.int8)
    run = lambda graph: torch.fx.GraphModule(torch.nn.Module(), graph)(weight)  # noqa: E731
    expected = weight.t().float() if permuted else weight.float()
    graph = _int8_upcast_graph(permuted)
    assert int8_upcasts_through_bf16(graph) == 1
    converts = [n for n in graph.nodes if n.op == "call_function" and "convert" in str(n.target)]
    assert [n.args[1] for n in converts] == [torch.bfloat16, torch.float32]  # what constant folding leaves alone
    assert torch.equal(run(graph), expected)
    assert direct_integer_upcasts(graph) == 1  # the two passes undo each other
    assert torch.equal(run(graph), expected)
    assert int8_upcasts_through_bf16(_upcast_graph(torch.uint8, torch.bfloat16, permuted)) == 0


def test_float_and_wide_integer_upcasts_are_left_alone():
    for source in (torch.float32, torch.int32):  # an int32 does not fit a 16-bit float exactly
        assert direct_integer_upcasts(_upcast_graph(source, torch.bfloat16, permuted=True)) == 0


def test_large_batches_and_integer_matmuls_keep_aten_mm():
    assert _mm_as_reduction(torch.ones(REDUCTION_MAX_ROWS + 1, 3), torch.ones(3, 2)) is NotImplemented
    assert _mm_as_reduction(torch.ones(1, 3, dtype=torch.int64), torch.ones(3, 2, dtype=torch.int64)) is NotImplemented


def test_frozen_steps_reduce_fp32_rows_only():
    # a half-precision weight's conversion to fp32 would be folded into an fp32 copy of it
    half = torch.ones(1, 3, dtype=torch.bfloat16), torch.ones(3, 2, dtype=torch.bfloat16)
    assert _fp32_mm_as_reduction(*half) is NotImplemented
    assert torch.equal(_fp32_mm_as_reduction(torch.ones(1, 3), torch.ones(3, 2)), torch.full((1, 2), 3.0))


@pytest.fixture(scope="module")
def vocab():
    return cs.Vocabulary.appended(
        text_size=40, bos_id=0, eos_id=2, pad_id=1, modalities={"image": 12}, block_lengths={"image": 6}
    )


@pytest.mark.slow
def test_compiled_cfg_image_block_equals_eager_and_is_not_recompiled(vocab):
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64)
    model = cs.build_model(config).eval()  # the default sdpa backend
    options = {"max_new_tokens": 8, "vocabulary": vocab, "mode": "image", "guidance": Guidance()}
    eager = generate_tokens(model, [0, 5, 9], **options)
    compiled = generate_tokens(model, [0, 5, 9], **options, compile=True)
    assert torch.equal(eager, compiled) and compiled.shape == (7,)  # 6 codes and the end token
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    again = generate_tokens(model, [0, 7, 8], **options, compile=True)  # same shapes: the compiled code is reused
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(again, generate_tokens(model, [0, 7, 8], **options))


@pytest.mark.slow
def test_the_cpu_step_attends_over_the_written_slots_with_one_graph_for_every_length(vocab, monkeypatch):
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64)
    model = cs.build_model(config).eval()
    torch._dynamo.reset()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    attended: list[int] = []
    first_slots = KVCache.first_slots

    def recording(cache, count):  # called outside the compiled graph, by the step and by eager forwards
        attended.append(count)
        return first_slots(cache, count)

    for prompt, tokens in (([0, 5, 9], 6), ([0, 5, 9, 11, 4], 9), ([0, 7], 3)):
        eager = generate_tokens(model, prompt, max_new_tokens=tokens, vocabulary=vocab, mode="text")
        monkeypatch.setattr(KVCache, "first_slots", recording)
        attended.clear()
        compiled = generate_tokens(model, prompt, max_new_tokens=tokens, vocabulary=vocab, mode="text", compile=True)
        monkeypatch.setattr(KVCache, "first_slots", first_slots)
        assert torch.equal(eager, compiled)
        # the prompt's eager pass, then one step per further token over the slots written so far
        assert attended == list(range(len(prompt), len(prompt) + len(compiled))), attended
    # one graph for three prompt lengths and cache sizes
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs == 1


@pytest.mark.slow
def test_the_cpu_step_goes_through_dynamo_on_its_first_call_and_at_a_full_cache_only(vocab, monkeypatch):
    torch.manual_seed(0)
    model = cs.build_model(cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64))
    model.eval()
    real_compile = torch.compile
    through_dynamo: list[int] = []  # the slot count of every call that went through dynamo's guards

    def counting_compile(function, **options):
        compiled = real_compile(function, **options)

        def call(model, input_ids, cache):
            through_dynamo.append(cache.keys[0].shape[2])
            return compiled(model, input_ids, cache)

        return call

    monkeypatch.setattr(torch, "compile", counting_compile)
    prompt = torch.tensor([[0, 5, 9]])
    eager_cache, cache = model.new_cache(1, 7), model.new_cache(1, 7)
    with torch.no_grad():
        model(prompt, cache=eager_cache)
        model(prompt, cache=cache)
        step = compile_decode_step(model, cache, torch.device("cpu"))
        for token in (4, 8, 2, 7):  # over 4, 5, 6 and 7 slots: the last call fills the cache
            ids = torch.tensor([[token]])
            expected = model(ids, cache=eager_cache).logits
            torch.testing.assert_close(step(ids, cache=cache).logits, expected, rtol=1e-5, atol=1e-5)
    # the whole buffer is contiguous, unlike the views before it, so that call is checked again
    assert through_dynamo == [4, 7]


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [False, True])
def test_a_step_that_starts_on_an_empty_cache_gives_the_eager_logits_at_every_later_length(vocab, frozen):
    # its first call attends over one slot, which dynamo compiles for that size alone: the step must
    # not go on running that code without guards once the slots grow
    torch.manual_seed(0)
    model = cs.build_model(cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64))
    model.eval()
    eager_cache, cache = model.new_cache(2, 8), model.new_cache(2, 8)
    with torch.no_grad():
        step = compile_decode_step(model, cache, torch.device("cpu"), frozen=frozen)
        for token in (0, 5, 9, 4, 8):  # over 1, 2, 3, 4 and 5 slots
            ids = torch.tensor([[token], [token + 1]])
            expected = model(ids, cache=eager_cache).logits
            torch.testing.assert_close(step(ids, cache=cache).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])  # 3: every matmul stays a matmul; 1: the fp32 ones are reductions
def test_a_frozen_step_gives_the_eager_logits(vocab, dtype, rows):
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64)
    model = cs.build_model(config).eval().to(dtype)
    prompt = torch.tensor([[0, 5, 9], [0, 7, 3], [0, 2, 8]])[:rows]
    eager_cache, cache = model.new_cache(rows, 8), model.new_cache(rows, 8)
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    with torch.no_grad():
        model(prompt, cache=eager_cache)
        model(prompt, cache=cache)
        step = compile_decode_step(model, cache, torch.device("cpu"), frozen=True)
        assert model in _FROZEN  # its own copy of the step function, for its frozen code
        for token in (4, 8, 2):
            ids = torch.full((rows, 1), token)
            expected = model(ids, cache=eager_cache).logits
            torch.testing.assert_close(step(ids, cache=cache).logits, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.slow
def test_frozen_decoding_equals_eager_and_follows_weights_changed_after_it_compiled(vocab):
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=vocab.size, max_seq_len=64)
    model = cs.build_model(config).eval()
    image = {"max_new_tokens": 8, "vocabulary": vocab, "mode": "image", "guidance": Guidance()}
    eager_image = generate_tokens(model, [0, 5, 9], **image)
    assert torch.equal(generate_tokens(model, [0, 5, 9], **image, compile="frozen"), eager_image)
    prompts, text = [[0, 5, 9], [0, 7, 3]], {"max_new_tokens": 6, "mode": "text", "stop_ids": []}
    before = generate_tokens(model, prompts, **text)
    assert torch.equal(generate_tokens(model, prompts, **text, compile="frozen"), before)

    def changed(change):  # frozen code holds the weights it compiled with: it must not keep them
        change()
        eager = generate_tokens(model, prompts, **text)
        assert not torch.equal(eager, before)
        return torch.equal(generate_tokens(model, prompts, **text, compile="frozen"), eager)

    with torch.no_grad():
        assert changed(lambda: model.output.weight.mul_(-1))  # written in place
    assert changed(lambda: setattr(model.output.weight, "data", model.output.weight.data.flip(0).contiguous()))
    # the weights really are in the compiled code: a write through .data, which torch does not count
    # as a write to the parameter, is the one change its steps miss (the documented limit; the
    # prompt's pass, which gives the first token, is eager)
    generate_tokens(model, prompts, **text, compile="frozen")
    model.output.weight.data.mul_(-1)
    eager, stale = generate_tokens(model, prompts, **text), generate_tokens(model, prompts, **text, compile="frozen")
    assert torch.equal(stale[:, 0], eager[:, 0]) and not torch.equal(stale, eager)
    assert torch.equal(generate_tokens(model, prompts, **text, compile=True), eager)


def test_compile_takes_false_true_or_frozen(vocab):
    model = cs.build_model(cs.ModelConfig(dim=16, num_layers=1, num_heads=2, vocab_size=vocab.size, max_seq_len=16))
    with pytest.raises(GenerationError, match="compile='fast': expected False, True or 'frozen'"):
        generate_tokens(model, [0, 5], max_new_tokens=2, compile="fast")


def test_the_prim_that_materializes_activations_exists():
    # without it the compiled CPU step still decodes correctly but recomputes each matmul's input
    # per output row (see chameleon_sdk.generation.compiled._materialized): fail loudly if torch drops it
    import torch._inductor.inductor_prims  # registers inductor's prims

    a = torch.randn(2, 3)
    assert torch.equal(torch.ops.prims.inductor_force_stride_order(a, a.stride()), a)
