"""Built-in stability tricks from the Chameleon paper: ``qk-norm``, ``norm-reorder``, ``dropout``, ``z-loss``.

They act only through the extension points of :class:`plugin_api.StabilityTrick`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

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
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_stability_tricks(register):
    register("qk-norm", "chameleon_stability.tricks:QKNorm", options="chameleon_stability.tricks:QKNormOptions")
    register("norm-reorder", "chameleon_stability.tricks:NormReorder")
    register("dropout", "chameleon_stability.tricks:Dropout", options="chameleon_stability.tricks:DropoutOptions")
    register("z-loss", "chameleon_stability.tricks:ZLoss", options="chameleon_stability.tricks:ZLossOptions")
