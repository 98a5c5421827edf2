"""Per-token cross entropy that keeps the logits for backward instead of a log-softmax copy.

``F.cross_entropy`` saves a ``[N, V]`` log-softmax for backward and, in backward, fills another
``[N, V]`` buffer with zeros before scattering the target gradients into it. Here the forward pass
saves the logits themselves (which the caller holds anyway) and a logsumexp per row, and the
backward pass writes ``softmax(logits) * grad`` once and subtracts ``grad`` at each target: the same
gradient with one ``[N, V]`` buffer fewer at the peak and fewer passes over it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["per_token_cross_entropy", "rows_within"]

#: elements per logsumexp call, which allocates a temporary that large: on CPU small enough to stay in
#: cache, elsewhere large enough that few kernel launches are needed
_CHUNK_ELEMENTS = {"cpu": 2**19}
_DEFAULT_CHUNK_ELEMENTS = 2**26


def rows_within(budgets: dict[str, int], default: int, width: int, device: torch.device) -> int:
    """How many rows of ``width`` elements fit the element budget of ``device``'s type (at least 1)."""
    return max(1, budgets.get(device.type, default) // max(1, width))


def _logsumexp_rows(logits: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last dim of ``[N, V]``, a bounded number of rows at a time."""
    rows = rows_within(_CHUNK_ELEMENTS, _DEFAULT_CHUNK_ELEMENTS, logits.shape[-1], logits.device)
    return torch.cat([torch.logsumexp(chunk, dim=-1) for chunk in logits.split(rows)])


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        counted = targets != ignore_index
        safe_targets = torch.where(counted, targets, 0)  # ignored rows gather a real column, then get zeroed
        picked = logits.gather(1, safe_targets.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(logits, safe_targets, counted)
        return torch.where(counted, _logsumexp_rows(logits) - picked, 0.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, safe_targets, counted = ctx.saved_tensors
        row_grad = torch.where(counted, grad, 0.0).unsqueeze(1)
        grad_logits = torch.softmax(logits, dim=-1).mul_(row_grad)
        return grad_logits.scatter_add_(1, safe_targets.unsqueeze(1), -row_grad), None, None


def per_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """``F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="none")`` for ``[N, V]``
    logits and ``[N]`` targets in range (or ``ignore_index``): 0 at ignored targets."""
    return _CrossEntropy.apply(logits, targets, ignore_index)  # type: ignore[no-any-return]
