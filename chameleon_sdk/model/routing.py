"""Per-token parameter routing: a block's weights as groups, each token using its own group's.

This is the extension point behind modality-aware experts (Mixture-of-Transformers, arXiv
2411.04996): a stability trick's :meth:`~chameleon_sdk.plugin_api.StabilityTrick.parameter_groups`
maps every token id to a group, and the blocks then hold one copy of the untied parts (attention
projections, feed-forward network, norms) per group. Attention itself stays global: every token
attends to the whole mixed sequence. The core knows no modality: a group is a number.

A forward computes each untied projection once per group, on that group's tokens only (gather the
tokens by group, one matmul per group, scatter back), so FLOPs per token do not grow with the number
of groups; only the parameters do. Under ``torch.compile`` a one-token step (decoding) computes every
group's projection of its few rows and keeps each row's own: no host sync, so the step compiles as
one graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from chameleon_sdk.errors import ConfigError

__all__ = ["UNTIE_PARTS", "GroupedLinear", "GroupedRMSNorm", "ParameterGroups", "TokenRoute", "routed"]

#: the parts of a block that can hold one copy per group
UNTIE_PARTS = ("attention", "ffn", "norms")


def _token_table(table: object) -> torch.Tensor:
    if not isinstance(table, torch.Tensor) or table.dim() != 1 or table.dtype != torch.long:
        raise ConfigError(f"ParameterGroups.token_group must be a 1-D int64 tensor (group per id), got {table!r}")
    return table


def _parts(parts: Iterable[str]) -> frozenset[str]:
    chosen = frozenset(parts)
    unknown = sorted(chosen - set(UNTIE_PARTS))
    if unknown:
        raise ConfigError(f"ParameterGroups.untie: unknown parts {unknown}; expected a subset of {list(UNTIE_PARTS)}")
    return chosen


@attrs.frozen(kw_only=True, eq=False)
class ParameterGroups:
    """How a model's blocks route tokens to parameter groups.

    :ivar token_group: ``[vocab_size]`` int64, the group of every token id (``0 <= group < count``).
    :ivar count: the number of groups; 1 is the dense model.
    :ivar untie: which parts hold one copy per group: a subset of :data:`UNTIE_PARTS`.
    """

    token_group: torch.Tensor = attrs.field(converter=_token_table)
    count: int = attrs.field()
    untie: frozenset[str] = attrs.field(converter=_parts)

    @count.validator
    def _check_count(self, _: object, count: int) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"ParameterGroups.count must be an integer >= 1, got {count!r}")
        table = self.token_group
        if table.numel() and (int(table.min()) < 0 or int(table.max()) >= count):
            raise ConfigError(f"ParameterGroups.token_group must hold groups in [0, {count})")


class TokenRoute:
    """The groups of one forward's tokens ``[B, T]``, with the order that puts each group's tokens together.

    Built once per forward and shared by every layer. ``sizes`` (tokens per group) is read on the
    host once, except in a compiled one-token step, where :func:`routed` computes every group's rows
    instead (see the module docstring).
    """

    def __init__(self, groups: torch.Tensor, count: int) -> None:
        self.groups = groups.reshape(-1)
        self.count = count
        self.sizes: list[int] | None = None
        self.order = self.inverse = self.groups
        if not (torch.compiler.is_compiling() and groups.shape[-1] == 1):
            self.order = torch.argsort(self.groups, stable=True)
            self.inverse = torch.argsort(self.order)
            self.sizes = torch.bincount(self.groups, minlength=count).tolist()


class GroupedLinear(nn.Module):
    """``count`` bias-free linear maps; token ``i`` goes through map ``route.groups[i]``.

    ``weight`` is ``[count, out_features, in_features]``; with one group it computes exactly what
    ``nn.Linear`` computes with ``weight[0]``.
    """

    def __init__(self, in_features: int, out_features: int, count: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.count = in_features, out_features, count
        self.weight = nn.Parameter(torch.empty(count, out_features, in_features))
        for matrix in self.weight.data:  # nn.Linear's default, per group (and the same draws from the RNG)
            nn.init.kaiming_uniform_(matrix, a=math.sqrt(5))

    def forward(self, x: torch.Tensor, route: TokenRoute) -> torch.Tensor:
        if self.count == 1:
            return F.linear(x, self.weight[0])
        flat = x.reshape(-1, self.in_features)
        if route.sizes is None:
            every = F.linear(flat, self.weight.reshape(-1, self.in_features)).view(-1, self.count, self.out_features)
            index = route.groups.view(-1, 1, 1).expand(-1, 1, self.out_features)
            out = every.gather(1, index).squeeze(1)
        else:
            parts = flat.index_select(0, route.order).split(route.sizes)
            out = torch.cat([F.linear(part, self.weight[g]) for g, part in enumerate(parts)])
            out = out.index_select(0, route.inverse)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, count={self.count}"


class GroupedRMSNorm(nn.Module):
    """RMSNorm with one gain vector per group (``weight`` ``[count, dim]``)."""

    def __init__(self, dim: int, eps: float, count: int) -> None:
        super().__init__()
        self.eps, self.count = eps, count
        self.weight = nn.Parameter(torch.ones(count, dim))

    def forward(self, x: torch.Tensor, route: TokenRoute) -> torch.Tensor:
        if self.count == 1 and x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight[0], self.eps)
        x32 = x.float()
        normed = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        gains = self.weight[0] if self.count == 1 else self.weight[route.groups].view_as(x)
        return gains * normed


def routed(module: nn.Module, x: torch.Tensor, route: TokenRoute | None) -> torch.Tensor:
    """``module(x)``, with the token route for modules that hold one copy per group."""
    if isinstance(module, (GroupedLinear, GroupedRMSNorm)):
        if route is None:
            raise ConfigError(f"{type(module).__name__} needs the forward's token route")
        return module(x, route)
    return module(x)
