"""Samplers: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError, get_registry

logit_rows = st.lists(
    st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=2, max_size=30).filter(
        lambda r: len(set(r)) == len(r)
    ),
    min_size=1,
    max_size=4,
).filter(lambda rows: len({len(r) for r in rows}) == 1)


def _sampler(**options):
    return get_registry().build("sampler", "sample", options)


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, float("-inf")]])
    assert get_registry().build("sampler", "greedy")(logits).tolist() == [1, 0]


@given(
    st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=40), min_size=1, max_size=4).filter(
        lambda rows: len({len(r) for r in rows}) == 1
    ),
    st.sampled_from([torch.float32, torch.bfloat16]),
    st.booleans(),
)
def test_greedy_equals_argmax_and_picks_the_first_of_equal_logits(rows, dtype, with_infinity):
    logits = torch.tensor(rows, dtype=dtype)  # few distinct values: ties in most rows
    if with_infinity:
        logits[:, 0] = float("-inf")
    assert torch.equal(get_registry().build("sampler", "greedy")(logits), logits.argmax(-1))


@given(logit_rows, st.integers(0, 2**31 - 1))
def test_zero_temperature_and_top_k_1_are_greedy(rows, seed):
    logits = torch.tensor(rows)
    g = torch.Generator().manual_seed(seed)
    assert torch.equal(_sampler(temperature=0.0)(logits, generator=g), logits.argmax(-1))
    assert torch.equal(_sampler(top_k=1)(logits, generator=g), logits.argmax(-1))


@given(logit_rows, st.floats(0.01, 1.0), st.floats(0.0, 1.0), st.integers(0, 5))
def test_filters_keep_the_argmax_and_only_allowed_tokens(rows, top_p, min_p, top_k):
    logits = torch.tensor(rows)
    logits[:, -1] = float("-inf")  # a disallowed token stays disallowed
    sampler = _sampler(top_p=top_p, min_p=min_p, top_k=top_k, temperature=0.8)
    for seed in range(3):
        tokens = sampler(logits, generator=torch.Generator().manual_seed(seed))
        assert torch.isfinite(logits.gather(1, tokens[:, None])).all()
    from chameleon_samplers.sampling import filter_logits

    kept = filter_logits(logits, top_k=top_k, top_p=top_p, min_p=min_p)
    assert torch.isfinite(kept.gather(1, logits.argmax(-1, keepdim=True))).all()


def test_top_p_keeps_the_smallest_nucleus():
    from chameleon_samplers.sampling import filter_logits

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.8))
    assert kept.tolist() == [[True, True, False, False]]
    kept = torch.isfinite(filter_logits(probs.log(), top_p=0.81))
    assert kept.tolist() == [[True, True, True, False]]


def test_min_p_drops_unlikely_tokens():
    from chameleon_samplers.sampling import filter_logits

    probs = torch.tensor([[0.6, 0.3, 0.06, 0.04]])
    assert torch.isfinite(filter_logits(probs.log(), min_p=0.09)).tolist() == [[True, True, True, False]]


def test_repetition_penalty_ctrl_rule():
    from chameleon_samplers.sampling import apply_repetition_penalty

    logits = torch.tensor([[2.0, -2.0, 2.0]])
    seen = torch.tensor([[True, True, False]])
    assert apply_repetition_penalty(logits, seen, 2.0).tolist() == [[1.0, -4.0, 2.0]]


def test_seeded_draws_reproduce_and_follow_the_distribution():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]]).repeat(4000, 1)
    sampler = _sampler()
    a = sampler(logits, generator=torch.Generator().manual_seed(7))
    b = sampler(logits, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=3).float() / len(a)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


probabilities = st.sampled_from([0.0, 0.0, 1e-30, 1e-7, 0.01, 0.3, 1.0, 7.5])
probability_rows = st.lists(probabilities, min_size=1, max_size=12).filter(lambda r: sum(r) > 0)


@given(probability_rows, st.floats(0.0, 1.0, exclude_max=True, width=32))
def test_the_picked_token_is_the_one_whose_interval_holds_the_uniform_number(row, u):
    from chameleon_samplers.sampling import pick_by_uniform

    probs = torch.tensor([row])
    token = int(pick_by_uniform(probs, torch.tensor([[u]])))
    assert probs[0, token] > 0
    # exact arithmetic: the interval [cdf before, cdf through) of the token holds u * total, or the
    # scaled number rounded up to the total and the token is the last one that can be drawn
    before, through = math.fsum(row[:token]), math.fsum(row[: token + 1])
    target = u * math.fsum(row)
    last = max(i for i, p in enumerate(row) if p > 0)
    assert target >= before * (1 - 1e-6)
    assert target < through * (1 + 1e-6) or token == last


def test_a_uniform_number_that_rounds_up_to_the_total_picks_the_last_possible_token():
    from chameleon_samplers.sampling import pick_by_uniform

    probs = torch.tensor([[0.25, 0.5, 0.25, 0.0, 0.0]])
    assert pick_by_uniform(probs, torch.tensor([[1.0]])).tolist() == [2]
    assert pick_by_uniform(probs, torch.tensor([[0.0]])).tolist() == [0]


@given(st.integers(0, 2**31 - 1))
def test_draw_never_picks_an_impossible_token(seed):
    from chameleon_samplers.sampling import draw

    probs = torch.zeros(6, 50)
    probs[:, ::7] = torch.rand(6, 8, generator=torch.Generator().manual_seed(seed)) + 1e-3
    tokens = draw(probs, torch.Generator().manual_seed(seed))
    assert (probs.gather(1, tokens[:, None]) > 0).all()


def test_temperature_sharpens():
    logits = torch.tensor([[1.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    cold = _sampler(temperature=0.25)(logits, generator=g).eq(0).float().mean()
    hot = _sampler(temperature=4.0)(logits, generator=g).eq(0).float().mean()
    assert cold > 0.95 and 0.5 < hot < 0.65


@pytest.mark.parametrize(("field", "value"), [("temperature", -1.0), ("top_p", 1.5), ("min_p", -0.1), ("top_k", -1)])
def test_bad_options(field, value):
    with pytest.raises(ConfigError, match=field):
        _sampler(**{field: value})
