"""Kind ``attention``: the one call every attention backend implements.

A backend also declares, as the registration trait ``mask_kinds``, which :class:`~chameleon_sdk.plugin_api.MaskKind`
it supports; the core refuses other masks instead of dropping them (see :mod:`chameleon_sdk.model.masking`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from chameleon_sdk.model.masking import MaskSpec

__all__ = ["AttentionBackend"]


@runtime_checkable
class AttentionBackend(Protocol):
    """The one call contract every attention backend implements (see the module docstring)."""

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: MaskSpec, scale: float
    ) -> torch.Tensor: ...
