"""Built-in ``mot``: modality-aware experts (Mixture-of-Transformers, arXiv 2411.04996).

A stability-kind architecture option: it acts only through the core's per-token parameter routing
extension point (:meth:`plugin_api.StabilityTrick.parameter_groups`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_mot.trick import MixtureOfTransformers, MoTOptions

__all__ = ["MixtureOfTransformers", "MoTOptions"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_stability_tricks(register):
    register("mot", "chameleon_mot.trick:MixtureOfTransformers", options="chameleon_mot.trick:MoTOptions")
