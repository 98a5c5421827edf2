"""Built-in ``mot``: modality-aware experts (Mixture-of-Transformers, arXiv 2411.04996).

A stability-kind architecture option: it acts only through the core's per-token parameter routing
extension point (:meth:`chameleon_sdk.StabilityTrick.parameter_groups`).
"""

from __future__ import annotations

import chameleon_sdk
from chameleon_mot.trick import MixtureOfTransformers, MoTOptions

__all__ = ["MixtureOfTransformers", "MoTOptions"]


@chameleon_sdk.hookimpl
def register_stability_tricks(register):
    register("mot", MixtureOfTransformers, options=MoTOptions)
