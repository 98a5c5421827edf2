"""KVCache.write_kv: new keys and values land at their rows' slots and nowhere else."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.model import KVCache

CONFIG = cs.ModelConfig(dim=32, num_layers=3, num_heads=4, num_kv_heads=2, vocab_size=50, max_seq_len=64)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    q_len=st.integers(1, 4),
    starts=st.lists(st.integers(0, 12), min_size=3, max_size=3),
    layer=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_write_kv_puts_each_row_at_its_slots(batch, q_len, starts, layer, seed):
    generator = torch.Generator().manual_seed(seed)
    cache = KVCache(CONFIG, batch=batch, max_len=16)
    before = [t.clone() for t in cache.keys + cache.values]
    slots = torch.tensor(starts[:batch]).unsqueeze(1) + torch.arange(q_len)
    k = torch.randn(batch, CONFIG.kv_heads, q_len, CONFIG.head_dim, generator=generator)
    v = torch.randn(batch, CONFIG.kv_heads, q_len, CONFIG.head_dim, generator=generator)
    keys, values = cache.write_kv(layer, slots, k, v)
    expected_keys, expected_values = before[layer].clone(), before[CONFIG.num_layers + layer].clone()
    for b in range(batch):
        for t in range(q_len):
            expected_keys[b, :, slots[b, t]] = k[b, :, t]
            expected_values[b, :, slots[b, t]] = v[b, :, t]
    assert keys is cache.keys[layer] and values is cache.values[layer]
    assert torch.equal(keys, expected_keys) and torch.equal(values, expected_values)
    untouched = [i for i in range(2 * CONFIG.num_layers) if i not in (layer, CONFIG.num_layers + layer)]
    assert all(torch.equal((cache.keys + cache.values)[i], before[i]) for i in untouched)


def test_each_layer_has_its_own_buffer():
    # a compiled step writes a layer's new key in place only when the layer's buffer is not a view
    # of a tensor shared with the other layers
    cache = KVCache(CONFIG, batch=2, max_len=8)
    pointers = {t.untyped_storage().data_ptr() for t in cache.keys + cache.values}
    assert len(pointers) == 2 * CONFIG.num_layers
    assert cache.keys[0].shape == (2, CONFIG.kv_heads, 8, CONFIG.head_dim)
    assert (cache.batch, cache.max_len, cache.dtype) == (2, 8, torch.float32)


@settings(max_examples=30, deadline=None)
@given(count=st.integers(1, 16), lengths=st.lists(st.integers(0, 12), min_size=2, max_size=2), seed=st.integers(0, 99))
def test_first_slots_is_a_window_onto_the_same_buffers(count, lengths, seed):
    cache = KVCache(CONFIG, batch=2, max_len=16, documents=True, spans=True)
    cache.lengths.copy_(torch.tensor(lengths))
    view = cache.first_slots(count)
    assert view.max_len == count and view.batch == 2
    assert all(v.shape[2] == count and v.data_ptr() == c.data_ptr() for v, c in zip(view.keys, cache.keys, strict=True))
    assert view.document_ids.shape == (2, count) and view.span_ids.shape == (2, count)
    # writes through the view, lengths and positions included, land in the cache
    slots = view.lengths.clamp(max=count - 1).unsqueeze(1)
    k = torch.randn(2, CONFIG.kv_heads, 1, CONFIG.head_dim, generator=torch.Generator().manual_seed(seed))
    view.write_kv(1, slots, k, k)
    assert torch.equal(cache.keys[1][torch.arange(2), :, slots[:, 0]], k[:, :, 0])
    view.advance(1, torch.zeros(2, 1, dtype=torch.long))
    assert cache.lengths.tolist() == [n + 1 for n in lengths]


def test_first_slots_refuses_a_count_outside_the_capacity():
    cache = KVCache(CONFIG, batch=1, max_len=8)
    for bad in (0, 9, True, 2.0):
        with pytest.raises(cs.ConfigError, match="first_slots"):
            cache.first_slots(bad)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 16), min_size=1, max_size=3), new=st.integers(1, 4))
def test_written_slots_reach_the_longest_row_after_the_new_tokens_and_no_further(lengths, new):
    cache = KVCache(CONFIG, batch=len(lengths), max_len=16)
    cache.lengths.copy_(torch.tensor(lengths))
    if max(lengths) + new > 16:
        with pytest.raises(cs.ConfigError, match=rf"cache overflow: a row holds {max(lengths)} of 16 slots"):
            cache.written_slots(new)
        return
    view = cache.written_slots(new)
    assert view.max_len == max(lengths) + new and view.batch == len(lengths)
    assert view.keys[0].data_ptr() == cache.keys[0].data_ptr()
