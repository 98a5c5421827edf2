"""The LM head and the loss together, a chunk of target rows at a time, without ``[tokens, vocab]`` logits.

Training needs the logits only to turn them into a loss, yet they are the largest tensors of a step:
at Chameleon's 65,536-entry vocabulary and 4,096 tokens the fp32 logits and their gradient take
2 GiB per sequence. :func:`chunked_head_loss` gathers the rows that have a target, and for each
chunk of them computes the logits, the logit tricks, the cross entropy and the per-token loss
tricks, and at once (autograd on the chunk alone) the gradients with respect to the chunk's hidden
rows and the head weight. Backward then only scales those by the upstream gradient. The loss and
the gradients are those of the unchunked path up to rounding, with no extra matmul; rows without a
target (padding, SFT prompts) skip the head altogether.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from chameleon_sdk.model.cross_entropy import rows_within

__all__ = ["chunked_head_loss", "rows_per_chunk"]

#: logits elements per chunk (64 MiB in fp32 on CPU): smaller chunks made the CPU step slower (2**22: +5%)
_CHUNK_ELEMENTS = {"cpu": 2**24}
_DEFAULT_CHUNK_ELEMENTS = 2**26

#: ``chunk_terms(hidden_rows, weight, targets) -> {name: sum over the rows}``: the cross entropy and
#: the trick terms, and optionally ``REPORTED_ONLY`` (a sum of log Z, reported, not added to the loss)
ChunkTerms = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]

REPORTED_ONLY = "_log_z"


def rows_per_chunk(vocab_size: int, device: torch.device) -> int:
    """How many rows of logits one chunk holds on ``device``."""
    return rows_within(_CHUNK_ELEMENTS, _DEFAULT_CHUNK_ELEMENTS, vocab_size, device)


class _ChunkedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        rows: torch.Tensor,
        targets: torch.Tensor,
        chunk_terms: ChunkTerms,
        chunk_rows: int,
        count: int,
        sums: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        grad_hidden = torch.zeros_like(hidden)
        # a frozen head (LoRA, partial fine-tuning) gets no [V, D] gradient buffer
        train_head = weight.requires_grad
        grad_weight = torch.zeros_like(weight) if train_head else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        head = weight.detach().requires_grad_(train_head)
        # no counted row: one empty chunk still names every term (all 0)
        chunks = list(zip(rows.split(chunk_rows), targets.split(chunk_rows))) or [(rows, targets)]
        for index, chunk_targets in chunks:
            chunk = hidden.detach()[index].requires_grad_()
            with torch.enable_grad():
                terms = chunk_terms(chunk, head, chunk_targets)
                loss = torch.stack([v.float() for k, v in terms.items() if k != REPORTED_ONLY]).sum() / count
                grads = torch.autograd.grad(loss, (chunk, head) if train_head else (chunk,))
            grad_hidden.index_add_(0, index, grads[0])
            if grad_weight is not None:
                grad_weight += grads[1]
            total += loss.detach()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        grad_head = None if grad_weight is None else grad_weight * grad
        return grad_hidden * grad, grad_head, None, None, None, None, None, None


def chunked_head_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_terms: ChunkTerms,
    *,
    ignore_index: int,
    chunk_rows: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The mean loss over the counted targets, and every term's mean (detached), from ``hidden`` ``[N, D]``.

    ``targets`` ``[N]`` holds the token each row should predict, or ``ignore_index``. Gradients flow
    to ``hidden`` and ``weight`` (``[V, D]``, the head) only.
    """
    counted = targets != ignore_index
    rows = counted.nonzero().squeeze(1)
    count = max(int(rows.numel()), 1)
    sums: dict[str, torch.Tensor] = {}
    loss = _ChunkedHeadLoss.apply(hidden, weight, rows, targets[rows], chunk_terms, chunk_rows, count, sums)
    terms = {name: value / count for name, value in sums.items()}
    return loss, terms  # type: ignore[return-value]
