"""The extension points through which stability tricks (kind ``stability``) change the model.

A trick is any object deriving from :class:`StabilityTrick` and overriding some of its methods;
the model calls only the methods a trick overrides, so an unused point costs nothing. The core
knows no trick by name: it builds each one from the registry and consults these points.

Call order inside one decoder block (``x`` is the block input)::

    q, k, v = wq(a), wk(a), wv(a)         # a = attention_norm(x) in the pre-norm layout, else x
    q, k = trick.transform_qk(attention, q, k)   # [B, T, H, Dh], [B, T, KV, Dh]; before RoPE
    q, k = rope(q), rope(k); o = wo(attend(q, k, v))
    o = trick.transform_branch(block, "attention", o)   # after the layout's norm, before the residual add
    h = x + o  ... and the same for the feed-forward branch with "feed_forward"

then ``logits = trick.transform_logits(output(norm(h)))`` and
``loss = cross_entropy + sum(trick.extra_loss(logits, targets, mask).values())``; with
``per_position = True`` a trick lets the model do that last step a chunk of positions at a time.

Before the blocks are built, ``trick.parameter_groups(config, vocabulary)`` may route tokens to
parameter groups: the blocks then hold one copy of the untied parts per group (modality-aware
experts); see :mod:`chameleon_sdk.model.routing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch
    from torch import nn

    from chameleon_sdk.config import ModelConfig
    from chameleon_sdk.model.routing import ParameterGroups
    from chameleon_sdk.vocabulary import Vocabulary

__all__ = ["Branch", "ResidualLayout", "StabilityTrick", "overrides"]


ResidualLayout = Literal["pre_norm", "reordered"]
"""``pre_norm``: h = x + f(norm(x)) (Llama, Chameleon-7B). ``reordered``: h = x + norm(f(x)) (Swin v2,
Chameleon-34B). The norms are the block's ``attention_norm`` and ``ffn_norm`` in both layouts."""


Branch = Literal["attention", "feed_forward"]


class StabilityTrick:
    """Base class of stability tricks: every method is an optional extension point (a no-op here).

    Parameters a trick adds belong to the modules it is given in the ``setup_*`` methods (so they
    appear in ``state_dict`` under that module's name); the trick object itself holds options only.
    """

    #: the block layout this trick requires, or None for "no opinion"
    residual_layout: ResidualLayout | None = None
    #: True when the trick applies ``ModelConfig.dropout`` (the model refuses dropout > 0 otherwise)
    uses_config_dropout: bool = False
    #: True when ``transform_logits`` acts on each position's logits alone and every ``extra_loss``
    #: term is a mean over the counted targets. Then ``model(input_ids, targets=...)`` may compute the
    #: loss a chunk of positions at a time, never holding all the logits; a trick that overrides
    #: either point without setting this makes the model hold them (same result, more memory).
    per_position: bool = False

    def parameter_groups(self, config: ModelConfig, vocabulary: Vocabulary | None) -> ParameterGroups | None:
        """Route tokens to parameter groups (see :mod:`chameleon_sdk.model.routing`), or None (no routing).

        Called once while the model is built, before any ``setup_*``; at most one trick of a model may
        return groups. ``vocabulary`` is the model's token space when the builder knows it.
        """
        return None

    def setup_attention(self, attention: nn.Module, layer_idx: int, config: ModelConfig) -> None:
        """Add submodules/parameters to one layer's attention module (named ``layers.{i}.attention``)."""

    def setup_block(self, block: nn.Module, layer_idx: int, config: ModelConfig) -> None:
        """Add submodules/parameters to one decoder block (named ``layers.{i}``)."""

    def transform_qk(self, attention: nn.Module, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Change queries ``[B, T, H, Dh]`` and keys ``[B, T, KV, Dh]`` before rotary embedding."""
        return q, k

    def transform_branch(self, block: nn.Module, branch: Branch, out: torch.Tensor) -> torch.Tensor:
        """Change a branch's output ``[B, T, D]`` right before it is added to the residual stream."""
        return out

    def transform_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Change the output logits ``[B, T, V]`` (for example soft-capping)."""
        return logits

    def extra_loss(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra scalar loss terms by name; ``mask`` ``[B, T]`` marks the target tokens that count."""
        return {}


def overrides(trick: StabilityTrick, method: str) -> bool:
    """Whether ``trick`` overrides the extension point ``method`` of :class:`StabilityTrick`."""
    return getattr(type(trick), method) is not getattr(StabilityTrick, method)
