"""What the checkpoint converters share: building a model from specs, QK-norm row layouts, rotary order.

QK-norm parameters are ``[G, Dh]`` tables in our model (``G`` = 1 shared by all heads, one per head,
or one per contiguous group of heads). External layouts store either one row per head (``transformers``)
or one vector per model-parallel shard (Meta's release); :func:`expand_rows` and :func:`collapse_rows`
move between the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import chameleon_sdk
from chameleon_sdk import CheckpointError, ComponentSpec, ModelConfig, PluginRegistry, plugin_api

QK_NORM = "qk-norm"
NORM_REORDER = "norm-reorder"
#: tricks that change nothing at inference time, so every format can carry a model that uses them
INFERENCE_NEUTRAL = frozenset({"z-loss", "dropout"})


def json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is missing, unreadable or not an object.

    What format detection needs: a folder that is not ours is an answer (False), not an error.
    """
    if not path.is_file():
        return None
    try:
        data = plugin_api.read_json(path)
    except CheckpointError:
        return None
    return data if isinstance(data, dict) else None


def qk_norm_spec(groups: int, num_heads: int) -> ComponentSpec:
    """The ``qk-norm`` spec whose query table has ``groups`` rows (1, ``num_heads``, or a divisor)."""
    if groups == 1:
        return ComponentSpec(name=QK_NORM, options={"sharing": "layer"})
    if groups == num_heads:
        return ComponentSpec(name=QK_NORM, options={"sharing": "head"})
    return ComponentSpec(name=QK_NORM, options={"sharing": "group", "num_groups": groups})


def build_model(
    config: ModelConfig,
    *,
    attention: str | ComponentSpec,
    stability: Iterable[ComponentSpec],
    registry: PluginRegistry,
    vocabulary: chameleon_sdk.Vocabulary | None = None,
    file_shapes: Mapping[str, tuple[int, ...]] | None = None,
    source: str = "checkpoint",
) -> nn.Module:
    """A model of this shape whose parameters are meta placeholders, for ``plugin_api.load_weights``
    to fill (nothing is allocated or initialised twice).

    :param file_shapes: the checkpoint's tensor shapes: compared with the config's first, on a model
        built wholly on the meta device, so a config claiming a huge model over small weights is
        refused before its constructors ask for memory.
    """
    stability = tuple(stability)
    if config.vocab_size is None:  # a pipeline's config may leave it to its tokenizers; weights' may not
        raise CheckpointError(f"checkpoint {source!r}: its config gives no vocab_size (null)")
    if file_shapes is not None:
        _check_layer_count(config, file_shapes, source)
        probe = _on_meta(config, attention=attention, stability=stability, registry=registry, vocabulary=vocabulary)
        expected = {k: tuple(v.shape) for k, v in probe.state_dict().items()}
        plugin_api.check_shapes(expected, file_shapes, source=source)
    with plugin_api.parameters_on_meta():
        return chameleon_sdk.build_model(
            config, attention=attention, stability=stability, registry=registry, vocabulary=vocabulary
        )


def load_into_new_model(
    config: ModelConfig,
    state: Mapping[str, torch.Tensor],
    *,
    attention: str | ComponentSpec,
    stability: Iterable[ComponentSpec],
    registry: PluginRegistry,
    source: str,
    dtype: torch.dtype | None,
) -> nn.Module:
    """A model of ``config`` holding ``state``, whose shapes are checked against the config's before
    anything is allocated (:func:`build_model`)."""
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    model = build_model(
        config, attention=attention, stability=stability, registry=registry, file_shapes=shapes, source=source
    )
    plugin_api.load_weights(model, state, source=source, dtype=dtype)
    return model


def _check_layer_count(config: ModelConfig, file_shapes: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Refuse a config whose layer count differs from the weights' before the meta probe is built: on
    the meta device every layer still costs its Python objects, so a config claiming 65,536 layers
    took minutes and gigabytes before the shape check could refuse it."""
    found = {key.split(".")[1] for key in file_shapes if key.startswith("layers.")}
    if found and len(found) != config.num_layers:
        raise CheckpointError(
            f"checkpoint {source!r}: the config says {config.num_layers} layers, the weights hold {len(found)}"
        )


def _on_meta(config: ModelConfig, **parts: Any) -> nn.Module:
    """The model wholly on the meta device: its state's shapes, with nothing allocated."""
    with torch.device("meta"):
        return chameleon_sdk.build_model(config, **parts)


def require_chameleon_model(model: nn.Module, format_name: str) -> None:
    """:class:`CheckpointError` unless ``model`` is a ChameleonModel-style model this layout can describe."""
    if not isinstance(getattr(model, "config", None), ModelConfig) or not hasattr(model, "attention_spec"):
        raise CheckpointError(
            f"the {format_name} format saves ChameleonModel-style models (with .config and .attention_spec), "
            f"got {type(model).__name__}"
        )


def stability_names(model: nn.Module) -> list[str]:
    return [spec.name for spec in getattr(model, "stability_specs", ())]


def expand_rows(table: torch.Tensor, rows: int, key: str) -> torch.Tensor:
    """``[G, Dh]`` -> ``[rows, Dh]``: each group's row repeated for the heads of its contiguous group."""
    groups = table.shape[0]
    if rows % groups:
        raise CheckpointError(f"{key}: {groups} QK-norm groups do not divide {rows} heads")
    return table.repeat_interleave(rows // groups, dim=0)


def collapse_rows(table: torch.Tensor, groups: int, key: str) -> torch.Tensor:
    """``[rows, Dh]`` -> ``[groups, Dh]``, refusing when the rows of a group differ."""
    rows, dim = table.shape
    if rows % groups:
        raise CheckpointError(f"{key}: {groups} QK-norm groups do not divide {rows} rows")
    grouped = table.reshape(groups, rows // groups, dim)
    if not torch.equal(grouped, grouped[:, :1].expand_as(grouped)):
        raise CheckpointError(f"{key}: rows differ within a group, so it cannot be shared by {groups} group(s)")
    return grouped[:, 0].clone()


def table_rows(key: str, groups: int, config: ModelConfig) -> int:
    """Rows of the QK-norm table ``key`` when queries use ``groups`` groups.

    One shared norm (1) and one per group (``groups``) apply to keys alike; per head means one per
    query head and one per key/value head.
    """
    if groups == config.num_heads and ".k_norm." in key:
        return config.kv_heads
    return groups


def shareable(state: Mapping[str, torch.Tensor], config: ModelConfig, groups: int) -> bool:
    """Whether every per-head QK-norm table of ``state`` has equal rows within ``groups`` contiguous groups."""
    for key, table in state.items():
        if ".q_norm." not in key and ".k_norm." not in key:
            continue
        rows = table_rows(key, groups, config)
        if table.shape[0] % rows:
            return False
        grouped = table.reshape(rows, table.shape[0] // rows, -1)
        if not torch.equal(grouped, grouped[:, :1].expand_as(grouped)):
            return False
    return True


def interleaved_to_half(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's output rows from interleaved rotary pairs (0,1),(2,3).. to rotate-half.

    Works on ``[heads * Dh, D]`` projection weights and on ``[heads * Dh]`` vectors alike: within a
    head, row ``2i`` (real part of pair ``i``) moves to ``i`` and row ``2i+1`` to ``Dh/2 + i``.
    """
    rest = weight.shape[1:]
    head_dim = weight.shape[0] // heads
    return weight.reshape(heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(heads * head_dim, *rest)


def half_to_interleaved(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of :func:`interleaved_to_half`: each head's rows ``i`` and ``Dh/2 + i`` become ``2i``, ``2i+1``."""
    rest = weight.shape[1:]
    head_dim = weight.shape[0] // heads
    return weight.reshape(heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(heads * head_dim, *rest)
