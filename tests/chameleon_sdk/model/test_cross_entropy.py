"""The model's per-token cross entropy must agree with ``F.cross_entropy`` in value and gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from chameleon_sdk.model.cross_entropy import per_token_cross_entropy


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 70),
    vocab=st.sampled_from([2, 7, 40, 2**14 + 3]),  # the largest spans several logsumexp chunks
    scale=st.sampled_from([0.1, 1.0, 30.0]),
    ignored=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_values_and_gradients_match_torch(rows: int, vocab: int, scale: float, ignored: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=generator) * scale
    targets = torch.randint(0, vocab, (rows,), generator=generator)
    targets[torch.rand(rows, generator=generator) < ignored] = -100
    upstream = torch.randn(rows, generator=generator)

    ours_in = logits.clone().requires_grad_()
    ours = per_token_cross_entropy(ours_in, targets, -100)
    (ours * upstream).sum().backward()
    theirs_in = logits.clone().requires_grad_()
    theirs = F.cross_entropy(theirs_in, targets, ignore_index=-100, reduction="none")
    (theirs * upstream).sum().backward()

    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=1e-5, rtol=1e-5)


def test_other_ignore_index_and_strided_logits() -> None:
    wide = torch.randn(6, 10, requires_grad=True)
    logits = wide[:, ::2]  # not contiguous
    targets = torch.tensor([0, 4, 7, 2, 7, 1])
    ours = per_token_cross_entropy(logits, targets, 7)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets, ignore_index=7, reduction="none"))
    assert ours[2] == 0 and ours[4] == 0
    ours.sum().backward()
    assert wide.grad is not None and torch.all(wide.grad[:, 1::2] == 0)


def test_traces_without_graph_breaks() -> None:
    compiled = torch.compile(per_token_cross_entropy, fullgraph=True, backend="eager")
    logits = torch.randn(5, 9, requires_grad=True)
    targets = torch.tensor([1, -100, 8, 0, 3])
    torch.testing.assert_close(compiled(logits, targets, -100), per_token_cross_entropy(logits, targets, -100))
