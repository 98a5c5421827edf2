"""Built-in stability tricks from the Chameleon paper: ``qk-norm``, ``norm-reorder``, ``dropout``, ``z-loss``.

They act only through the extension points of :class:`chameleon_sdk.StabilityTrick`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import chameleon_sdk

if TYPE_CHECKING:
    from chameleon_stability.tricks import (
        Dropout,
        DropoutOptions,
        NormReorder,
        QKNorm,
        QKNormOptions,
        ZLoss,
        ZLossOptions,
    )

__all__ = ["Dropout", "DropoutOptions", "NormReorder", "QKNorm", "QKNormOptions", "ZLoss", "ZLossOptions"]
__getattr__ = chameleon_sdk.lazy_module_attributes(__name__, __file__)


@chameleon_sdk.hookimpl
def register_stability_tricks(register):
    register("qk-norm", "chameleon_stability.tricks:QKNorm", options="chameleon_stability.tricks:QKNormOptions")
    register("norm-reorder", "chameleon_stability.tricks:NormReorder")
    register("dropout", "chameleon_stability.tricks:Dropout", options="chameleon_stability.tricks:DropoutOptions")
    register("z-loss", "chameleon_stability.tricks:ZLoss", options="chameleon_stability.tricks:ZLossOptions")
