"""Built-in attention backends: ``eager`` (the reference), ``sdpa``, ``flex`` and ``flash``.

Each registers with the trait ``mask_kinds``; the model refuses masks a backend does not declare.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_attention.backends import EagerAttention, FlashAttention, FlexAttention, SdpaAttention

__all__ = ["EagerAttention", "FlashAttention", "FlexAttention", "SdpaAttention"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)

# mask kinds as plain strings (plugin_api.MaskKind is a StrEnum of them), so registering imports no torch
ALL_KINDS = frozenset({"causal", "document", "bidirectional", "offset"})


@plugin_api.hookimpl
def register_attention_backends(register):
    register("eager", "chameleon_attention.backends:EagerAttention", mask_kinds=ALL_KINDS)
    register("sdpa", "chameleon_attention.backends:SdpaAttention", mask_kinds=ALL_KINDS)
    register(
        "flex",
        "chameleon_attention.backends:FlexAttention",
        options="chameleon_attention.backends:FlexOptions",
        mask_kinds=ALL_KINDS,
    )
    register(
        "flash",
        "chameleon_attention.backends:FlashAttention",
        mask_kinds=frozenset({"causal", "offset"}),
        needs_cuda=True,
    )
