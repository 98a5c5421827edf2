"""LoRA on some output rows of a linear layer: the LM head's image-code rows (Anole's target, low-rank).

peft adapts whole modules, so it cannot limit an update to a subset of the head's rows; this module
does: ``y = W x`` and then ``y[..., rows] += (alpha / rank) * B A x`` with ``B`` of ``[len(rows), rank]``.
Merging adds ``(alpha / rank) * B A`` to those rows of ``W`` and leaves the plain ``nn.Linear``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RowLoRA(nn.Module):
    """``base`` (an ``nn.Linear`` without bias) plus a low-rank update of the output rows ``rows``."""

    def __init__(self, base: nn.Linear, rows: torch.Tensor, *, rank: int, alpha: float, dropout: float) -> None:
        super().__init__()
        weight = base.weight
        self.base_layer = base
        self.register_buffer("rows", rows.to(device=weight.device, dtype=torch.long), persistent=False)
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        # as peft initialises LoRA: A uniform (kaiming, a=sqrt(5)), B zero, so the update starts at zero
        self.rows_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.rows_B = nn.Parameter(torch.zeros(len(rows), rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.rows_A, a=math.sqrt(5))

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, as peft's wrapped layers expose theirs: readers take the head's shape from
        it (the decoder's vocabulary size); the update is not folded in."""
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        update = (self.dropout(x) @ self.rows_A.t() @ self.rows_B.t()) * self.scaling
        return out.index_add_(-1, self.rows, update.to(out.dtype))  # in place: no second [tokens, vocab] tensor

    def merged(self) -> nn.Linear:
        """Fold the update into the base weight's rows (in place) and return the base layer."""
        with torch.no_grad():
            delta = (self.rows_B.float() @ self.rows_A.float()) * self.scaling
            self.base_layer.weight.index_add_(0, self.rows, delta.to(self.base_layer.weight.dtype))
        return self.base_layer
