"""ModalityStates: rows that can never be in a block skip the block bookkeeping, with the same results."""

from __future__ import annotations

import torch
from hypothesis import example, given
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.generation import ModalityStates

VOCAB = cs.Vocabulary.appended(
    text_size=40, bos_id=0, eos_id=2, pad_id=1, modalities={"image": 12}, block_lengths={"image": 6}
)


def _states(modes, stop_ids, general=False):
    states = ModalityStates(VOCAB, modes, stop_ids=stop_ids, max_new_tokens=12)
    if general:  # the bookkeeping every step, as for rows that may open a block
        states._text_allowed = None
    return states


@given(
    rows=st.integers(1, 3),
    stop_ids=st.lists(st.integers(0, VOCAB.size - 1), max_size=3),
    draws=st.lists(st.integers(0, 2**16), min_size=1, max_size=12),
)
@example(rows=2, stop_ids=[VOCAB.block("image").begin_id], draws=[0])  # a stop id that only a block may sample
def test_text_rows_skip_the_block_bookkeeping_and_agree_with_it(rows, stop_ids, draws):
    fast, general = _states(["text"] * rows, stop_ids), _states(["text"] * rows, stop_ids, general=True)
    assert fast.text_only and not general.text_only
    for draw in draws:
        allowed = fast.allowed()
        assert torch.equal(allowed, general.allowed())
        # each row samples one of its allowed tokens (never a begin token: text rows may not open a block)
        choices = [torch.nonzero(row).flatten() for row in allowed]
        tokens = torch.stack([c[(draw + r) % len(c)] for r, c in enumerate(choices)])
        assert torch.equal(fast.is_stop(tokens), general.is_stop(tokens))
        assert torch.equal(fast.update(tokens), general.update(tokens))
        assert torch.equal(fast.open_block, general.open_block) and torch.equal(fast.generated, general.generated)
    allowed[:] = False  # a caller's copy: writing it changes nothing for the next step
    assert torch.equal(fast.allowed(), general.allowed())


def test_rows_that_may_open_a_block_keep_the_bookkeeping():
    for modes in (["interleaved"], ["image"], ["text", "interleaved"], ["text", "image"]):
        assert not _states(modes, [2]).text_only
