"""The building blocks of the decoder: RMSNorm, rotary embedding, SwiGLU, attention, the block.

Module and parameter names follow the Meta/Llama layout (``attention.wq``, ``feed_forward.w1``,
``attention_norm``...) because checkpoint converters rely on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chameleon_sdk.config import ModelConfig
from chameleon_sdk.contracts.stability import ResidualLayout, StabilityTrick
from chameleon_sdk.model.cache import KVCache
from chameleon_sdk.model.masking import MaskSpec
from chameleon_sdk.model.routing import GroupedLinear, GroupedRMSNorm, ParameterGroups, TokenRoute, routed

__all__ = ["Attention", "DecoderBlock", "FeedForward", "RMSNorm", "apply_rotary", "linear", "rms_norm", "rotary_tables"]


class RMSNorm(nn.Module):
    """Root-mean-square norm, normalised in fp32 and cast back before the (learned) gain."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            # the same math in one fused kernel, which also saves fewer tensors for backward
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos``, ``sin`` of shape ``[B, T, 1, Dh]`` (fp32) for integer ``positions`` ``[B, T]``.

    Rotate-half form: frequency ``i`` rotates the pair (``i``, ``i + Dh/2``).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32).unsqueeze(-1) * inv_freq  # [B, T, Dh/2]
    angles = torch.cat([freqs, freqs], dim=-1).unsqueeze(2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, T, heads, Dh]`` by the tables of :func:`rotary_tables` (in fp32)."""
    x32 = x.float()
    first, second = x32.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


def linear(in_features: int, out_features: int, groups: int) -> nn.Linear | GroupedLinear:
    """A bias-free projection: ``nn.Linear``, or ``groups`` copies when the part is untied (``groups > 0``)."""
    if groups:
        return GroupedLinear(in_features, out_features, groups)
    return nn.Linear(in_features, out_features, bias=False)


def rms_norm(dim: int, eps: float, groups: int) -> RMSNorm | GroupedRMSNorm:
    """An :class:`RMSNorm`, or one gain per parameter group when ``groups`` (untied norms)."""
    return GroupedRMSNorm(dim, eps, groups) if groups else RMSNorm(dim, eps)


def untied(groups: ParameterGroups | None, part: str) -> int:
    """The number of copies ``part`` holds under ``groups``: 0 when it is shared (a plain module)."""
    return groups.count if groups is not None and part in groups.untie else 0


class FeedForward(nn.Module):
    """SwiGLU: ``w2(silu(w1 x) * w3 x)``; ``groups`` copies when the feed-forward is untied."""

    def __init__(self, dim: int, hidden_dim: int, groups: int = 0) -> None:
        super().__init__()
        self.w1 = linear(dim, hidden_dim, groups)
        self.w3 = linear(dim, hidden_dim, groups)
        self.w2 = linear(hidden_dim, dim, groups)

    def forward(self, x: torch.Tensor, route: TokenRoute | None = None) -> torch.Tensor:
        gate, up = routed(self.w1, x, route), routed(self.w3, x, route)
        return routed(self.w2, F.silu(gate) * up, route)


def max_attention_logit(q: torch.Tensor, k: torch.Tensor, mask: MaskSpec, scale: float) -> torch.Tensor:
    """The largest pre-softmax logit over allowed (query, key) pairs; a monitor, O(Tq * Tk) memory."""
    batch, heads, q_len, _ = q.shape
    k = k.repeat_interleave(heads // k.shape[1], dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    allowed = mask.allowed(batch, q_len, k.shape[2], q.device).unsqueeze(1)
    return scores.masked_fill(~allowed, float("-inf")).amax()


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embedding, calling a pluggable backend."""

    def __init__(
        self,
        config: ModelConfig,
        layer_idx: int,
        backend: Any,
        tricks: Sequence[StabilityTrick],
        groups: int = 0,
    ) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.kv_heads, config.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.wq = linear(config.dim, self.num_heads * self.head_dim, groups)
        self.wk = linear(config.dim, self.num_kv_heads * self.head_dim, groups)
        self.wv = linear(config.dim, self.num_kv_heads * self.head_dim, groups)
        self.wo = linear(self.num_heads * self.head_dim, config.dim, groups)
        self.backend = backend
        self.qk_tricks = tuple(tricks)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: MaskSpec,
        cache: KVCache | None,
        slots: torch.Tensor | None,
        stats: dict[str, list[torch.Tensor]] | None,
        route: TokenRoute | None = None,
    ) -> torch.Tensor:
        batch, q_len, _ = x.shape
        q = routed(self.wq, x, route).view(batch, q_len, self.num_heads, self.head_dim)
        k = routed(self.wk, x, route).view(batch, q_len, self.num_kv_heads, self.head_dim)
        v = routed(self.wv, x, route).view(batch, q_len, self.num_kv_heads, self.head_dim)
        for trick in self.qk_tricks:
            q, k = trick.transform_qk(self, q, k)
        cos, sin = rotary
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None and slots is not None:
            k, v = cache.write_kv(self.layer_idx, slots, k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # no-op unless autocast computes in another dtype
        out = self.backend(q, k, v, mask, self.scale)
        if stats is not None:
            stats["max_attention_logit"].append(max_attention_logit(q, k, mask, self.scale).detach())
        return routed(self.wo, out.transpose(1, 2).reshape(batch, q_len, self.num_heads * self.head_dim), route)


class DecoderBlock(nn.Module):
    """One transformer block; the residual layout is ``pre_norm`` unless a trick asks otherwise.

    With ``groups`` (per-token parameter routing), the parts it unties hold one copy per group.
    """

    def __init__(
        self,
        config: ModelConfig,
        layer_idx: int,
        backend: Any,
        *,
        layout: ResidualLayout,
        qk_tricks: Sequence[StabilityTrick],
        branch_tricks: Sequence[StabilityTrick],
        groups: ParameterGroups | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        norms = untied(groups, "norms")
        self.attention_norm = rms_norm(config.dim, config.norm_eps, norms)
        self.attention = Attention(config, layer_idx, backend, qk_tricks, untied(groups, "attention"))
        self.ffn_norm = rms_norm(config.dim, config.norm_eps, norms)
        self.feed_forward = FeedForward(config.dim, config.hidden_dim, untied(groups, "ffn"))
        self.branch_tricks = tuple(branch_tricks)

    def _branch(self, name: str, out: torch.Tensor) -> torch.Tensor:
        for trick in self.branch_tricks:
            out = trick.transform_branch(self, name, out)  # type: ignore[arg-type]
        return out

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: MaskSpec,
        cache: KVCache | None,
        slots: torch.Tensor | None,
        stats: dict[str, list[torch.Tensor]] | None,
        route: TokenRoute | None = None,
    ) -> torch.Tensor:
        def attend(a: torch.Tensor) -> torch.Tensor:
            return self.attention(a, rotary, mask, cache, slots, stats, route)

        def attention_norm(a: torch.Tensor) -> torch.Tensor:
            return routed(self.attention_norm, a, route)

        def ffn_norm(a: torch.Tensor) -> torch.Tensor:
            return routed(self.ffn_norm, a, route)

        if self.layout == "reordered":
            h = x + self._branch("attention", attention_norm(attend(x)))
            return h + self._branch("feed_forward", ffn_norm(self.feed_forward(h, route)))
        h = x + self._branch("attention", attend(attention_norm(x)))
        return h + self._branch("feed_forward", self.feed_forward(ffn_norm(h), route))
