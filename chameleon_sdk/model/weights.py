"""Filling a model from a state dict: names and shapes compared first, each tensor materialised once.

What checkpoint formats load with; it lives beside :mod:`.meta_device`, whose placeholders it fills.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.model.meta_device import meta_tensor_names

__all__ = ["check_shapes", "load_weights"]


def check_shapes(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], *, source: str) -> None:
    """Refuse a checkpoint whose tensor names or shapes (``found``) differ from the model's (``expected``).

    Compare before building a model from a checkpoint's config: a config claiming a huge shape over
    small weights is refused here, before anything is allocated (see :func:`read_safetensors_shapes`).

    :raises CheckpointError: naming missing or unexpected keys, or a key with both shapes.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint {source!r} lacks {len(missing)} tensor(s) the model needs: {missing[:8]}")
    if unexpected:
        raise CheckpointError(
            f"checkpoint {source!r} has {len(unexpected)} tensor(s) the model does not know: {unexpected[:8]}"
        )
    for key, shape in sorted(found.items()):
        if tuple(shape) != tuple(expected[key]):
            raise CheckpointError(
                f"checkpoint {source!r}: tensor {key!r} has shape {list(shape)}, "
                f"the model expects {list(expected[key])}"
            )


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype | None = None,
) -> None:
    """Fill ``model`` from ``state_dict``: every key must exist on both sides with the same shape.

    Keys and shapes are compared first, before any tensor is read or allocated. A model built inside
    :func:`~chameleon_sdk.plugin_api.parameters_on_meta` then takes each tensor as its parameter (converted once
    to ``dtype``, or to the placeholder's dtype; no copy when it already has it), so a memory-mapped
    checkpoint is materialised once; any other model gets the values copied into its parameters.

    :param source: the checkpoint being read, named in errors.
    :param dtype: the dtype floating-point tensors get on a meta-built model (default: the model's).
    :raises CheckpointError: naming missing or unexpected keys, or a key with both shapes.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"checkpoint {source!r}: expected a mapping of names to tensors")
    expected = model.state_dict()
    check_shapes(
        {k: tuple(v.shape) for k, v in expected.items()},
        {k: tuple(v.shape) for k, v in state_dict.items()},
        source=source,
    )
    if not any(t.is_meta for t in expected.values()):
        model.load_state_dict(dict(state_dict), strict=True)
        return
    taken: set[int] = set()
    assigned = {}
    for key, tensor in state_dict.items():
        target = dtype if dtype is not None and expected[key].is_floating_point() else expected[key].dtype
        value = tensor.to(target)
        # two keys holding one tensor (tied embeddings) must not become one parameter
        assigned[key] = value.clone() if id(value) in taken else value
        taken.add(id(value))
    model.load_state_dict(assigned, strict=True, assign=True)
    if left := meta_tensor_names(model):
        raise CheckpointError(f"checkpoint {source!r}: the model still has placeholder tensors {left[:8]}")
