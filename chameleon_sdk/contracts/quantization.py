"""Kind ``quantization``: an inference weight format applied to a loaded model."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Quantization"]


@runtime_checkable
class Quantization(Protocol):
    """A weight format for inference (kind ``quantization``), applied to a loaded model.

    :func:`chameleon_sdk.quantize_model` (and ``load_model(..., quantize=...)``) calls it once per
    model, on the device the model will run on, in eval mode.
    """

    def quantize(self, model: torch.nn.Module) -> torch.nn.Module:
        """Rewrite ``model``'s weights (in place or not) and return the model to use. The result
        takes the same inputs and returns logits of the same shape and dtype as before."""
