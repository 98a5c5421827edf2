"""KVCache.copy_rows and first_rows: a row moved between caches, or decoded through a view of the
first rows, continues exactly as it would have in place."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return cs.build_model(cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=50, max_seq_len=64)).eval()


@settings(max_examples=20)
@given(
    prompt=st.lists(st.integers(0, 49), min_size=1, max_size=12),
    row=st.integers(0, 3),
    steps=st.lists(st.integers(0, 49), min_size=1, max_size=5),
)
def test_a_copied_row_continues_as_in_its_own_cache(model, prompt, row, steps):
    with torch.no_grad():
        alone = model.new_cache(1, 32)
        model(torch.tensor([prompt]), cache=alone)
        shared = model.new_cache(4, 48)
        model(torch.randint(0, 50, (4, 7)), cache=shared)  # other rows hold other content
        shared.copy_rows(torch.tensor([row]), alone, torch.tensor([0]))
        view = shared.first_rows(row + 1)
        for token in steps:
            mine = model(torch.tensor([[token]]), cache=alone).logits[0, -1]
            ids = torch.full((row + 1, 1), 3)
            ids[row, 0] = token
            theirs = model(ids, cache=view).logits[row, -1]
            torch.testing.assert_close(theirs, mine, atol=1e-5, rtol=1e-5)
        assert int(shared.lengths[row]) == len(prompt) + len(steps)  # the view wrote through


def test_rows_move_within_one_cache(model):
    with torch.no_grad():
        cache = model.new_cache(3, 16)
        model(torch.randint(0, 50, (3, 5)), cache=cache)
        keys = [layer[2].clone() for layer in cache.keys]
        cache.copy_rows(torch.tensor([0]), cache, torch.tensor([2]))
        assert all(torch.equal(layer[0], k) for layer, k in zip(cache.keys, keys, strict=True))
        assert int(cache.lengths[0]) == 5


def test_bad_arguments_are_config_errors(model):
    cache = model.new_cache(2, 8)
    with pytest.raises(cs.ConfigError, match="does not fit"):
        cache.copy_rows(torch.tensor([0]), model.new_cache(1, 16), torch.tensor([0]))
    with pytest.raises(cs.ConfigError, match=r"count must be in \[1, 2\]"):
        cache.first_rows(3)
