"""Built-in stability tricks from the Chameleon paper: ``qk-norm``, ``norm-reorder``, ``dropout``, ``z-loss``.

They act only through the extension points of :class:`chameleon_sdk.StabilityTrick`.
"""

from __future__ import annotations

import chameleon_sdk
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


@chameleon_sdk.hookimpl
def register_stability_tricks(register):
    register("qk-norm", QKNorm, options=QKNormOptions)
    register("norm-reorder", NormReorder)
    register("dropout", Dropout, options=DropoutOptions)
    register("z-loss", ZLoss, options=ZLossOptions)
