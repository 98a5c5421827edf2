"""Kind ``image_tokenizer_loss``: an extra term of an image tokenizer's training loss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

__all__ = ["ImageLossInputs", "ImageTokenizerLoss"]


@attrs.frozen(kw_only=True)
class ImageLossInputs:
    """What an :class:`ImageTokenizerLoss` sees at one training step.

    :param pixels: the batch, ``[B, 3, R, R]`` in ``[-1, 1]``.
    :param reconstruction: the decoder's output for it (attached to the graph in ``loss``, detached
        in ``update``).
    :param step: the optimiser step being taken (0-based).
    :param reconstruction_loss: the pixel loss plus the terms of the losses listed before this one
        (what an adaptive weight balances against; attached to the graph in ``loss``).
    :param last_layer: the decoder's last weight, for gradient-norm based adaptive weights.
    """

    pixels: torch.Tensor
    reconstruction: torch.Tensor
    step: int
    reconstruction_loss: torch.Tensor
    last_layer: torch.Tensor


@runtime_checkable
class ImageTokenizerLoss(Protocol):
    """An extra term of the image tokenizer's training loss (kind ``image_tokenizer_loss``).

    - ``loss(inputs) -> (term, stats)``: the weighted scalar term the tokenizer's optimiser minimises
      this step (``0`` when inactive, e.g. before an adversarial start step), and floats to report.
    - ``update(inputs) -> stats``: called after the tokenizer's step, to train the loss's own
      parameters (a discriminator); return ``{}`` when there is nothing to train.
    - ``state_dict()`` / ``load_state_dict(state)``: everything needed to resume training exactly
      (weights and the loss's own optimiser); tensors, numbers, strings and containers of them.
    - ``to(device)``: move any network to the tokenizer's device.
    """

    def loss(self, inputs: ImageLossInputs) -> tuple[torch.Tensor, dict[str, float]]: ...

    def update(self, inputs: ImageLossInputs) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def to(self, device: torch.device) -> Any: ...
