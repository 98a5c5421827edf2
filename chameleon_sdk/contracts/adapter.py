"""Kind ``adapter``: parameter-efficient fine-tuning weights added to a frozen model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Adapter"]


@runtime_checkable
class Adapter(Protocol):
    """A parameter-efficient fine-tuning method (kind ``adapter``), built from its options."""

    def attach(self, model: nn.Module) -> None:
        """Add the adapter's weights to ``model`` in place; afterwards only they require gradients."""

    def state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter's tensors in ``model`` (nothing of the base model)."""

    def load_state(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        """Set the adapter's tensors in an attached ``model``; unknown or missing keys are an error."""

    def merge(self, model: nn.Module) -> None:
        """Fold the adapter into the base weights in place and remove its modules."""
