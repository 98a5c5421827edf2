"""The synthetic mixed-modal stream: pure in the step, the structure it documents, typed errors."""

from __future__ import annotations

import math

import pytest
import torch
from chameleon_apps.lab import SyntheticMix, SyntheticMixConfig
from chameleon_apps.lab.synthetic import BOI, BOS, EOI, EOS
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError

SMALL = SyntheticMixConfig(text_vocab=16, image_codes=40, palette_size=8, num_palettes=4, image_length=5, p_image=0.2)


def test_batches_are_a_pure_function_of_the_step():
    data = SyntheticMix(SMALL, batch_size=3, seq_len=40, seed=1)
    first, again, other = data.batch_at(7), data.batch_at(7), data.batch_at(8)
    assert torch.equal(first.input_ids, again.input_ids) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.input_ids, other.input_ids)
    assert not torch.equal(first.input_ids, data.eval_batch(7).input_ids)
    assert data.stage(3) == 1 and data.counters == {}


@given(seed=st.integers(0, 2**16), step=st.integers(0, 10_000))
def test_rows_follow_the_documented_grammar(seed, step):
    data = SyntheticMix(SMALL, batch_size=2, seq_len=60, seed=seed)
    batch = data.batch_at(step)
    text_lo, image_lo = data.text_offset, data.image_offset
    for row_ids, row_docs, row_targets in zip(batch.input_ids, batch.document_ids, batch.targets):
        ids, docs = row_ids.tolist(), row_docs.tolist()
        assert ids[0] == BOS and docs[0] == 0
        previous_text = None
        t = 1
        while t < len(ids):
            token = ids[t]
            assert docs[t] == docs[t - 1] + (token == BOS)
            if token == BOI:  # exactly image_length codes of one palette, chosen by the text before boi
                codes = ids[t + 1 : t + 1 + SMALL.image_length]
                assert all(image_lo <= c < image_lo + SMALL.image_codes for c in codes)
                if previous_text is not None:
                    palette = set((data.palettes[(previous_text - text_lo) % SMALL.num_palettes] + image_lo).tolist())
                    assert set(codes) <= palette
                end = t + 1 + SMALL.image_length
                if end < len(ids):
                    assert ids[end] == EOI
                t = end + 1
                continue
            assert token in (BOS, EOS) or text_lo <= token < image_lo
            if ids[t - 1] == EOS:
                assert token == BOS
            previous_text = token if text_lo <= token < image_lo else (None if token == BOS else previous_text)
            t += 1
        # targets are the next token, except across a document boundary
        crossing = row_docs[1:] != row_docs[:-1]
        assert torch.equal(row_targets[:-1] == -100, crossing)
        assert torch.equal(row_targets[:-1][~crossing], row_ids[1:][~crossing])


def test_text_and_image_entropies_differ_as_documented():
    data = SyntheticMix(SyntheticMixConfig(), batch_size=1, seq_len=8)
    entropy = data.entropies()
    probs = torch.diff(data.text_cdf.double(), dim=1, prepend=torch.zeros(data.config.text_vocab, 1)).clamp(min=0)
    row_entropy = -(probs * probs.clamp(min=1e-30).log()).sum(dim=1)
    assert torch.allclose(row_entropy, torch.full_like(row_entropy, entropy["text"]), atol=1e-3)
    assert entropy["image"] == pytest.approx(math.log(128))
    assert entropy["text"] < entropy["image"] - 2  # low-entropy text-like tokens, high-entropy codes


@pytest.mark.parametrize(
    "changes",
    [
        {"text_vocab": 1},
        {"palette_size": 600},
        {"p_image": 0.0},
        {"p_image": 0.6, "p_end": 0.5},
        {"image_length": 0},
    ],
)
def test_bad_configs_raise_config_error(changes):
    with pytest.raises(ConfigError, match="SyntheticMixConfig"):
        SyntheticMixConfig(**changes)
    with pytest.raises(ConfigError, match="batch_size"):
        SyntheticMix(SMALL, batch_size=0, seq_len=8)
