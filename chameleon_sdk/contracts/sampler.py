"""Kind ``sampler``: the next token of each row, from that row's logits."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Sampler"]


@runtime_checkable
class Sampler(Protocol):
    """A callable the decoder calls once per step for the rows it samples.

    ``logits`` is ``[R, V]`` float32 with the tokens the modality constraints forbid already at
    ``-inf``; ``seen`` (``[R, V]`` bool, or None) marks the tokens each row has produced so far, for
    repetition penalties; ``generator`` is the seeded generator to draw from. Returns ``[R]`` ids,
    each among the allowed tokens.
    """

    def __call__(
        self, logits: torch.Tensor, *, seen: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...
