"""The batcher's forward pass: compiled at a few row counts, padded with idle rows, and giving what
decoding each request alone gives."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.errors import ConfigError
from chameleon_sdk.model import KVCache
from chameleon_sdk.serve.batch_forward import BatchForward, row_counts
from chameleon_sdk.serve.batcher import ContinuousBatcher

from .test_batcher import REQUESTS, Collector


@given(max_rows=st.integers(1, 300))
def test_every_batch_size_runs_at_the_next_row_count_with_fewer_idle_rows_than_live_ones(max_rows):
    counts = row_counts(max_rows)
    assert counts == sorted(set(counts)) and counts[0] == 1 and counts[-1] == max_rows
    for live in range(1, max_rows + 1):
        rows = next(count for count in counts if count >= live)
        assert rows - live < live


def _recorded(batcher: ContinuousBatcher) -> list[int]:
    """The row count of every compiled pass ``batcher`` runs from now on."""
    counts: list[int] = []
    steps = batcher._forward._steps
    for rows, step in list(steps.items()):

        def recording(input_ids, *, cache, step=step, rows=rows):
            assert input_ids.shape == (rows, 1) and cache.batch == rows
            counts.append(rows)
            return step(input_ids, cache=cache)

        steps[rows] = recording
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("compile", [True, "frozen"])
def test_compiled_batches_match_decoding_each_request_alone_and_compile_nothing_after_the_start(served_pipe, compile):
    torch._dynamo.reset()  # this test's row counts each need an entry under dynamo's recompile limit
    max_rows = 5  # rows at 1, 2, 4 and 5: a guided image takes 3, so passes pad 3 rows to 4
    batcher = ContinuousBatcher(served_pipe.model, max_rows=max_rows, max_context=256, max_queue=8, compile=compile)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    counts = _recorded(batcher)
    assert batcher.cache.lengths.eq(0).all()  # the compiles' passes left nothing behind

    @settings(max_examples=4 if compile == "frozen" else 8, deadline=None)
    @example(picks=[2, 0])  # a guided image (3 rows) and a 1-row request: 4 rows, one of them idle
    @given(picks=st.lists(st.sampled_from(range(len(REQUESTS))), min_size=1, max_size=4))
    def check(picks):
        expected = [served_pipe.generate(REQUESTS[i][0], sampler="greedy", **REQUESTS[i][1]) for i in picks]
        sinks = [Collector() for _ in picks]
        for i, sink in zip(picks, sinks):
            prompt, options = REQUESTS[i]
            batcher.submit(served_pipe.prepare_stream(prompt, sampler="greedy", **options), sink, timeout=60)
        assert [s.document() for s in sinks] == expected

    try:
        check()
    finally:
        batcher.close()
    assert set(counts) <= set(row_counts(max_rows)) and 4 in counts
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
def test_idle_rows_are_emptied_before_a_padded_pass_whatever_they_held():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = cs.build_model(cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=64, max_seq_len=16)).eval()
    cache, eager = model.new_cache(4, 16), model.new_cache(3, 16)
    forward = BatchForward(model, cache, True)
    prompt, tokens = torch.randint(0, 64, (3, 5)), torch.tensor([4, 8, 2])
    with torch.no_grad():
        forward.compile_steps()  # 1, 2 and 4 rows
        model(prompt, cache=cache.first_rows(3))
        model(prompt, cache=eager)
        cache.lengths[3] = cache.next_position[3] = 16  # a full row, left by a request that ended
        logits = forward(tokens)
        expected = model(tokens.unsqueeze(1), cache=eager).logits[:, -1]
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert cache.lengths.tolist() == [6, 6, 6, 1]


def test_compiling_off_the_cpu_is_refused_before_anything_compiles():
    config = cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=64, max_seq_len=16)
    model = cs.build_model(config)
    with pytest.raises(ConfigError, match=r"serve.*on a CPU.*meta"):
        BatchForward(model, KVCache(config, batch=2, max_len=8, device="meta"), True)
    BatchForward(model, KVCache(config, batch=2, max_len=8, device="meta"), False)  # eager runs anywhere


def test_more_row_counts_than_dynamo_keeps_graphs_for_are_refused():
    config = cs.ModelConfig(dim=32, num_layers=1, num_heads=4, vocab_size=64, max_seq_len=16)
    model = cs.build_model(config)
    # (not monkeypatch: its undo deletes the setting from torch's config module)
    with torch._dynamo.config.patch(recompile_limit=3):  # 1, 2, 4 and 5 rows are 4
        with pytest.raises(ConfigError, match=r"max_rows=5.*4 row counts.*3"):
            BatchForward(model, model.new_cache(5, 8), "frozen")
        BatchForward(model, model.new_cache(4, 8), "frozen")
    assert torch._dynamo.config.recompile_limit > 3
