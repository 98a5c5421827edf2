"""Writing Meta's ``original`` layout (what ``OriginalFormat.save`` does), for users of Meta's inference code.

One unsharded checkpoint, as the released 7B is laid out:

- ``params.json``: ``{"model_parallel_size": 1, "model": {...}}`` with the fields of Meta's
  ``ModelArgs`` (``dim``, ``n_layers``, ``n_heads``, ``n_kv_heads``, ``vocab_size``, ``multiple_of``,
  ``ffn_dim_multiplier``, ``norm_eps``, ``rope_theta``, ``qk_normalization``, ``swin_norm``) plus
  ``max_seq_len``, which Meta's loader ignores and ours reads. Meta's loader merges ``params["model"]``
  into the top level, which is why the fields are nested.
- ``consolidate_params.json``: ``{"model_parallel_size": 1}`` (Meta's loader opens it unconditionally).
- ``consolidated.pth``: ``torch.save`` of the state dict under Meta's names, rotary rows of ``wq``/``wk``
  in interleaved-pair order and one ``q_normalization``/``k_normalization`` LayerNorm per layer.

Meta's FFN width is not stored but computed from ``dim``, ``multiple_of`` and ``ffn_dim_multiplier``;
the writer picks values that reproduce the model's width (256 and none for the released shapes).
Refused with a :class:`~chameleon_sdk.CheckpointError`: stability tricks the layout has no place for,
and QK-norm tables whose rows differ (per-head or per-group norms cannot be one norm per layer).
The vocabulary is not written: the release keeps its tokenizer apart, in ``tokenizer/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from chameleon_checkpoint.layout import (
    INFERENCE_NEUTRAL,
    NORM_REORDER,
    QK_NORM,
    half_to_interleaved,
    require_chameleon_model,
    stability_names,
)
from chameleon_sdk import CheckpointError, ModelConfig, plugin_api

PARAMS_FILE = "params.json"
CONSOLIDATE_PARAMS_FILE = "consolidate_params.json"
WEIGHTS_FILE = "consolidated.pth"
_QK_NORM_NAMES = {"q_norm": "q_normalization", "k_norm": "k_normalization"}
_PLAIN = {
    "attention.wv.weight",
    "attention.wo.weight",
    "attention_norm.weight",
    "ffn_norm.weight",
    "feed_forward.w1.weight",
    "feed_forward.w2.weight",
    "feed_forward.w3.weight",
}


def meta_ffn_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None) -> int:
    """The FFN width Meta's ``FeedForward`` computes from its ``ModelArgs`` (hidden_dim = 4 * dim)."""
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def ffn_params(config: ModelConfig) -> tuple[int, float | None]:
    """``(multiple_of, ffn_dim_multiplier)`` with which Meta's formula gives ``config.hidden_dim``."""
    width, base = config.hidden_dim, int(8 * config.dim / 3)
    # Meta's own rounding when it fits, else a multiplier that lands int(multiplier * base) on width
    # (half a unit above it, far from the floating-point error of the product)
    for multiple_of, multiplier in ((256, None), (config.ffn_multiple_of, None), (1, (width + 0.5) / base)):
        if meta_ffn_dim(config.dim, multiple_of, multiplier) == width:
            return multiple_of, multiplier
    raise CheckpointError(f"the original layout cannot express an FFN width of {width} for dim {config.dim}")


def write_original(model: nn.Module, path: Path) -> None:
    """Write ``model`` into the empty directory ``path`` in Meta's layout (see the module docstring)."""
    require_chameleon_model(model, "original")
    config: ModelConfig = model.config
    unsupported = [n for n in stability_names(model) if n not in {QK_NORM, NORM_REORDER, *INFERENCE_NEUTRAL}]
    if unsupported:
        raise CheckpointError(f"the original layout cannot express the stability trick(s) {unsupported}")
    multiple_of, multiplier = ffn_params(config)
    state = meta_state_dict(model.state_dict(), config)
    params: dict[str, Any] = {
        "dim": config.dim,
        "n_layers": config.num_layers,
        "n_heads": config.num_heads,
        "n_kv_heads": config.kv_heads,
        "vocab_size": config.vocab_size,
        "multiple_of": multiple_of,
        "ffn_dim_multiplier": multiplier,
        "norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "qk_normalization": any(".q_normalization." in key for key in state),
        "swin_norm": getattr(model, "layout", "pre_norm") == "reordered",
        "max_seq_len": config.max_seq_len,
    }
    plugin_api.write_json(path / PARAMS_FILE, {"model_parallel_size": 1, "model": params})
    plugin_api.write_json(path / CONSOLIDATE_PARAMS_FILE, {"model_parallel_size": 1})
    plugin_api.write_torch_file(state, path / WEIGHTS_FILE)


def meta_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict under Meta's names: rotary rows interleaved, one QK-norm vector per layer."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        layer, _, suffix = key.removeprefix("layers.").partition(".")
        if key in ("tok_embeddings.weight", "norm.weight", "output.weight") or (
            key.startswith("layers.") and suffix in _PLAIN
        ):
            out[key] = value
        elif suffix == "attention.wq.weight":
            out[key] = half_to_interleaved(value, config.num_heads)
        elif suffix == "attention.wk.weight":
            out[key] = half_to_interleaved(value, config.kv_heads)
        elif suffix.startswith(("attention.q_norm.", "attention.k_norm.")):
            norm, _, param = suffix.removeprefix("attention.").partition(".")
            out[f"layers.{layer}.attention.{_QK_NORM_NAMES[norm]}.{param}"] = half_to_interleaved(
                _one_row(value, key), 1
            )
        else:
            raise CheckpointError(f"the original layout has no place for tensor {key!r}")
    # torch.save writes a view's whole storage: give each tensor exactly its own bytes
    return {k: v.detach().clone() if v.untyped_storage().nbytes() != v.nbytes else v.detach() for k, v in out.items()}


def _one_row(table: torch.Tensor, key: str) -> torch.Tensor:
    """The single LayerNorm vector of a ``[G, Dh]`` QK-norm table whose rows are all equal."""
    if not torch.equal(table, table[:1].expand_as(table)):
        raise CheckpointError(
            f"{key}: its {table.shape[0]} QK-norm rows differ, but the original layout written here has one "
            "shard, so one QK-norm per layer; save per-head or per-group norms as 'hf' or 'native'"
        )
    return table[0]
