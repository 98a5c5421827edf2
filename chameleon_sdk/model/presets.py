"""Named model shapes: a CPU-seconds ``debug`` model and the paper's 7B and 34B.

``model_preset(name)`` returns a :class:`ModelPreset` (the :class:`ModelConfig` plus the stability
tricks the paper trained that shape with)::

    preset = chameleon_sdk.model_preset("7b")
    model = chameleon_sdk.build_model(preset.model, stability=preset.stability)

7B: 32 layers, dim 4096, 32 heads (MHA), FFN 11008, QK-norm shared by all heads of a layer (the
released checkpoint), dropout 0.1, z-loss 1e-5. 34B: 48 layers, dim 8192, 64 heads, 8 kv heads,
FFN 22016, norm reordering, no dropout, QK-norm with one LayerNorm per model-parallel group (8
groups: an assumption from the 8-way sharded release), z-loss 1e-5. Both: vocabulary 65,536,
context 4096, RoPE theta 10,000, RMSNorm eps 1e-5.
"""

from __future__ import annotations

import attrs

from chameleon_sdk.config import ComponentSpec, ModelConfig
from chameleon_sdk.errors import ConfigError

__all__ = ["MODEL_PRESETS", "ModelPreset", "model_preset"]


@attrs.frozen(kw_only=True)
class ModelPreset:
    """A model shape and the stability tricks (registry specs) that go with it."""

    model: ModelConfig
    stability: tuple[ComponentSpec, ...]


_CHAMELEON_VOCAB = 65536

MODEL_PRESETS: dict[str, ModelPreset] = {
    "debug": ModelPreset(
        model=ModelConfig(
            dim=64, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=512, ffn_dim=128, max_seq_len=256
        ),
        stability=(ComponentSpec(name="qk-norm"), ComponentSpec(name="z-loss")),
    ),
    "7b": ModelPreset(
        model=ModelConfig(
            dim=4096,
            num_layers=32,
            num_heads=32,
            vocab_size=_CHAMELEON_VOCAB,
            ffn_dim=11008,
            max_seq_len=4096,
            dropout=0.1,
        ),
        stability=(
            ComponentSpec(name="qk-norm", options={"sharing": "layer"}),
            ComponentSpec(name="dropout"),
            ComponentSpec(name="z-loss", options={"coef": 1e-5}),
        ),
    ),
    "34b": ModelPreset(
        model=ModelConfig(
            dim=8192,
            num_layers=48,
            num_heads=64,
            num_kv_heads=8,
            vocab_size=_CHAMELEON_VOCAB,
            ffn_dim=22016,
            max_seq_len=4096,
        ),
        stability=(
            ComponentSpec(name="qk-norm", options={"sharing": "group", "num_groups": 8}),
            ComponentSpec(name="norm-reorder"),
            ComponentSpec(name="z-loss", options={"coef": 1e-5}),
        ),
    ),
}


def model_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (``"debug"``, ``"7b"`` or ``"34b"``)."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"no model preset named {name!r}; presets: {sorted(MODEL_PRESETS)}") from None
