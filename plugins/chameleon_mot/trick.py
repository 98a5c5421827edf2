"""``mot``: every untied part of a block gets one copy per modality; attention stays global.

Text ids, structural tokens (bos, eos, begin/end markers) and ids past the vocabulary are group 0;
each modality named in ``modalities`` gets the next group, in order; the codes of a modality not
named stay in group 0. One group (``modalities=[]``) is the dense model.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from chameleon_sdk import ConfigError, ModelConfig, Vocabulary
from chameleon_sdk.plugin_api import UNTIE_PARTS, ParameterGroups, StabilityTrick

__all__ = ["MixtureOfTransformers", "MoTOptions"]


def _names(value: object, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"mot: {what} must be a list of names, got {value!r}")
    if len(set(value)) != len(value):
        raise ConfigError(f"mot: {what} lists a name twice: {list(value)}")
    return tuple(value)


def _untie(value: object) -> tuple[str, ...]:
    names = _names(value, "untie") or ()
    unknown = sorted(set(names) - set(UNTIE_PARTS))
    if unknown:
        raise ConfigError(f"mot: untie holds unknown parts {unknown}; expected some of {list(UNTIE_PARTS)}")
    return names


@attrs.frozen(kw_only=True)
class MoTOptions:
    """Options of ``mot``.

    :param untie: which parts of every block hold one copy per group: some of ``attention`` (the
        q/k/v/o projections), ``ffn`` (the SwiGLU), ``norms`` (the block's two RMSNorm gains). The
        paper unties all three; the embeddings, the final norm and the LM head stay shared.
    :param modalities: the modalities that get their own group, in group order; ``None``: every
        modality of the model's vocabulary.
    """

    untie: tuple[str, ...] = attrs.field(default=UNTIE_PARTS, converter=_untie)
    modalities: tuple[str, ...] | None = attrs.field(default=None, converter=lambda v: _names(v, "modalities"))


class MixtureOfTransformers(StabilityTrick):
    """Routes each token to its modality's parameter group (see the module docstring)."""

    def __init__(self, options: MoTOptions | None = None) -> None:
        self.options = options or MoTOptions()

    def parameter_groups(self, config: ModelConfig, vocabulary: Vocabulary | None) -> ParameterGroups:
        if vocabulary is None:
            raise ConfigError(
                "mot routes tokens by modality, so the model needs its vocabulary: build it with "
                "Pipeline.build_model or build_model(..., vocabulary=...)"
            )
        size = config.vocab_size or vocabulary.size
        if size < vocabulary.size:
            raise ConfigError(f"mot: the model's vocab_size {size} is smaller than its vocabulary ({vocabulary.size})")
        modalities = self.options.modalities if self.options.modalities is not None else vocabulary.modalities
        missing = [m for m in modalities if m not in vocabulary.modalities]
        if missing:
            raise ConfigError(
                f"mot: the vocabulary has no modality {missing[0]!r} (it has {vocabulary.modalities or 'none'})"
            )
        # derived from the vocabulary, not a weight: on the CPU even while a loader builds on the meta device
        table = torch.zeros(size, dtype=torch.long, device="cpu")
        for group, modality in enumerate(modalities, start=1):
            table[: vocabulary.size][vocabulary.code_mask(modality)] = group
        return ParameterGroups(token_group=table, count=1 + len(modalities), untie=frozenset(self.options.untie))
