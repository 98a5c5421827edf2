"""Built-in token samplers: ``greedy`` and ``sample`` (temperature, top-k, top-p, min-p, repetition)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_samplers.sampling import GreedySampler, SamplingOptions, TokenSampler

__all__ = ["GreedySampler", "SamplingOptions", "TokenSampler"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_samplers(register):
    register("greedy", "chameleon_samplers.sampling:GreedySampler")
    register(
        "sample", "chameleon_samplers.sampling:TokenSampler", options="chameleon_samplers.sampling:SamplingOptions"
    )
