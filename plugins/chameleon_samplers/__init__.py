"""Built-in token samplers: ``greedy`` and ``sample`` (temperature, top-k, top-p, min-p, repetition)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import chameleon_sdk

if TYPE_CHECKING:
    from chameleon_samplers.sampling import GreedySampler, SamplingOptions, TokenSampler

__all__ = ["GreedySampler", "SamplingOptions", "TokenSampler"]
__getattr__ = chameleon_sdk.lazy_module_attributes(__name__, __file__)


@chameleon_sdk.hookimpl
def register_samplers(register):
    register("greedy", "chameleon_samplers.sampling:GreedySampler")
    register(
        "sample", "chameleon_samplers.sampling:TokenSampler", options="chameleon_samplers.sampling:SamplingOptions"
    )
