"""The Chameleon paper's stability tricks, written against the core's extension points."""

from __future__ import annotations

from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from chameleon_sdk import ConfigError, ModelConfig
from chameleon_sdk.plugin_api import StabilityTrick

__all__ = [
    "Dropout",
    "DropoutOptions",
    "GroupedLayerNorm",
    "NormReorder",
    "QKNorm",
    "QKNormOptions",
    "ZLoss",
    "ZLossOptions",
]


class GroupedLayerNorm(nn.Module):
    """LayerNorm over the last dim (head_dim) of ``[B, T, heads, Dh]``, one weight/bias row per group.

    ``weight``/``bias`` have shape ``[groups, Dh]``; consecutive heads ``heads // groups`` at a time
    share a row (``groups == 1``: one norm for all heads; ``groups == heads``: one per head).
    """

    def __init__(self, heads: int, groups: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.heads, self.groups, self.eps = heads, groups, eps
        self.weight = nn.Parameter(torch.ones(groups, head_dim))
        self.bias = nn.Parameter(torch.zeros(groups, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, heads, head_dim = x.shape
        normed = F.layer_norm(x, (head_dim,), eps=self.eps).view(*lead, self.groups, heads // self.groups, head_dim)
        out = normed * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)
        return out.view(*lead, heads, head_dim)


@attrs.frozen(kw_only=True)
class QKNormOptions:
    """Options of ``qk-norm``.

    :param sharing: ``"layer"``: one LayerNorm per layer shared by all heads (the released 7B;
        ``q_norm.weight`` is ``[1, Dh]``); ``"head"``: one per head (the Hugging Face layout; q
        ``[H, Dh]``, k ``[KV, Dh]``); ``"group"``: one per group of heads (model-parallel groups,
        the 34B; q and k ``[num_groups, Dh]``).
    :param num_groups: the group count for ``sharing="group"``; must divide both the head count
        and the kv-head count.
    :param eps: the LayerNorm epsilon. Both releases use LayerNorm's default 1e-5 here whatever the
        model's ``norm_eps`` (which is the RMSNorm's).
    """

    sharing: Literal["layer", "head", "group"] = attrs.field(
        default="layer", validator=attrs.validators.in_(("layer", "head", "group"))
    )
    num_groups: int | None = None
    eps: float = 1e-5

    def __attrs_post_init__(self) -> None:
        if (self.sharing == "group") != (self.num_groups is not None):
            raise ConfigError(f"qk-norm: num_groups is required with sharing='group' and only then; got {self!r}")
        if self.num_groups is not None and self.num_groups <= 0:
            raise ConfigError(f"qk-norm: num_groups must be > 0, got {self.num_groups}")
        if not 0 < self.eps < 1:  # also refuses NaN
            raise ConfigError(f"qk-norm: eps must be in (0, 1), got {self.eps!r}")


class QKNorm(StabilityTrick):
    """QK-norm: LayerNorm (weight and bias) over head_dim on queries and keys, before RoPE.

    Adds ``attention.q_norm`` and ``attention.k_norm`` (``weight``/``bias`` of shape ``[G, Dh]``).
    """

    def __init__(self, options: QKNormOptions | None = None) -> None:
        self.options = options or QKNormOptions()

    def _groups(self, config: ModelConfig) -> tuple[int, int]:
        heads, kv_heads = config.num_heads, config.kv_heads
        if self.options.sharing == "layer":
            return 1, 1
        if self.options.sharing == "head":
            return heads, kv_heads
        groups = self.options.num_groups
        assert groups is not None
        if heads % groups or kv_heads % groups:
            raise ConfigError(
                f"qk-norm: num_groups ({groups}) must divide num_heads ({heads}) and the kv-head count ({kv_heads})"
            )
        return groups, groups

    def setup_attention(self, attention: nn.Module, layer_idx: int, config: ModelConfig) -> None:
        q_groups, k_groups = self._groups(config)
        eps = self.options.eps
        attention.q_norm = GroupedLayerNorm(config.num_heads, q_groups, config.head_dim, eps)
        attention.k_norm = GroupedLayerNorm(config.kv_heads, k_groups, config.head_dim, eps)

    def transform_qk(self, attention: nn.Module, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attention.q_norm(q), attention.k_norm(k)


class NormReorder(StabilityTrick):
    """Swin-v2-style norm reordering (Chameleon-34B): ``h = x + norm(attn(x)); out = h + norm(ffn(h))``."""

    residual_layout = "reordered"


@attrs.frozen(kw_only=True)
class DropoutOptions:
    """Options of ``dropout``.

    :param p: drop probability after attention and after the FFN; ``None`` takes ``ModelConfig.dropout``
        (the paper: 0.1 for 7B pre-training, 0.05 for SFT).
    """

    p: float | None = attrs.field(default=None)

    @p.validator
    def _check(self, attribute: attrs.Attribute, value: float | None) -> None:
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"dropout: p must be in [0, 1), got {value!r}")


class Dropout(StabilityTrick):
    """Dropout on the attention and feed-forward branch outputs, before the residual add (training only)."""

    def __init__(self, options: DropoutOptions | None = None) -> None:
        self.options = options or DropoutOptions()
        self.p = self.options.p or 0.0

    @property
    def uses_config_dropout(self) -> bool:  # type: ignore[override]
        return self.options.p is None

    def setup_block(self, block: nn.Module, layer_idx: int, config: ModelConfig) -> None:
        if self.options.p is None:
            self.p = config.dropout

    def transform_branch(self, block: nn.Module, branch: str, out: torch.Tensor) -> torch.Tensor:
        # only while training with gradients: generation (no_grad) never flips the shared module's mode
        return F.dropout(out, self.p, training=block.training and torch.is_grad_enabled())


@attrs.frozen(kw_only=True)
class ZLossOptions:
    """Options of ``z-loss``: ``coef`` (the paper: 1e-5)."""

    coef: float = attrs.field(default=1e-5)

    @coef.validator
    def _check(self, attribute: attrs.Attribute, value: float) -> None:
        if value < 0:
            raise ConfigError(f"z-loss: coef must be >= 0, got {value!r}")


class ZLoss(StabilityTrick):
    """z-loss: ``coef * logsumexp(logits)^2`` averaged over target tokens, reported as ``z_loss``."""

    per_position = True  # a mean over the counted targets: the model may compute it in chunks

    def __init__(self, options: ZLossOptions | None = None) -> None:
        self.options = options or ZLossOptions()

    def extra_loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        log_z = torch.logsumexp(logits.float(), dim=-1)
        weight = mask.to(log_z.dtype)
        return {"z_loss": self.options.coef * (log_z.square() * weight).sum() / weight.sum().clamp(min=1)}
