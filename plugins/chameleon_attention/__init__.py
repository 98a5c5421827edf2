"""Built-in attention backends: ``eager`` (the reference), ``sdpa``, ``flex`` and ``flash``.

Each registers with the trait ``mask_kinds``; the model refuses masks a backend does not declare.
"""

from __future__ import annotations

import chameleon_sdk
from chameleon_attention.backends import EagerAttention, FlashAttention, FlexAttention, SdpaAttention
from chameleon_sdk import MaskKind

__all__ = ["EagerAttention", "FlashAttention", "FlexAttention", "SdpaAttention"]

ALL_KINDS = frozenset(MaskKind)


@chameleon_sdk.hookimpl
def register_attention_backends(register):
    register("eager", EagerAttention, mask_kinds=ALL_KINDS)
    register("sdpa", SdpaAttention, mask_kinds=ALL_KINDS)
    register("flex", FlexAttention, mask_kinds=ALL_KINDS)
    register("flash", FlashAttention, mask_kinds=frozenset({MaskKind.CAUSAL, MaskKind.OFFSET}), needs_cuda=True)
