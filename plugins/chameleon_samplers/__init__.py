"""Built-in token samplers: ``greedy`` and ``sample`` (temperature, top-k, top-p, min-p, repetition)."""

from __future__ import annotations

import chameleon_sdk
from chameleon_samplers.sampling import GreedySampler, SamplingOptions, TokenSampler

__all__ = ["GreedySampler", "SamplingOptions", "TokenSampler"]


@chameleon_sdk.hookimpl
def register_samplers(register):
    register("greedy", GreedySampler)
    register("sample", TokenSampler, options=SamplingOptions)
