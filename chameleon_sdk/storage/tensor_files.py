"""Tensor files: safetensors (single, sharded with an index) and ``torch.save`` files read without pickled code.

Errors are :class:`~chameleon_sdk.errors.CheckpointError` naming the file, or the key and both shapes.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.storage.atomic_files import atomic_write_bytes
from chameleon_sdk.storage.json_files import read_json, write_json
from chameleon_sdk.storage.paths import checked_path

__all__ = [
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "read_safetensors",
    "read_safetensors_shapes",
    "read_torch_file",
    "read_torch_weights",
    "write_safetensors",
    "write_torch_file",
]

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"


def _safetensors_files(path: Path) -> dict[str, list[str] | None]:
    """file -> the keys to read from it (None: all), for a file, a directory or an index."""
    if path.is_dir():
        if (path / SAFETENSORS_INDEX_FILE).is_file():
            path = path / SAFETENSORS_INDEX_FILE
        elif (path / SAFETENSORS_FILE).is_file():
            return {str(path / SAFETENSORS_FILE): None}
        else:
            raise CheckpointError(
                f"checkpoint directory {str(path)!r} has neither {SAFETENSORS_FILE!r} nor {SAFETENSORS_INDEX_FILE!r}"
            )
    if path.name.endswith(".index.json"):
        index = read_json(path)
        weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
        if not isinstance(weight_map, Mapping) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"checkpoint index {str(path)!r} has no valid 'weight_map' (key -> shard file)")
        by_file: dict[str, list[str]] = {}
        for key, shard in weight_map.items():
            by_file.setdefault(str(path.parent / shard), []).append(key)
        return dict(by_file)
    return {str(path): None}


def read_safetensors(
    path: str | os.PathLike[str], *, prefix: str | None = None, strip_prefix: bool = False
) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file, a sharded ``*.index.json``, or a directory holding either.

    :param prefix: read only the keys that start with it (the others are never materialised).
    :param strip_prefix: remove ``prefix`` from the returned keys.
    :raises CheckpointError: naming the missing or corrupt file, or the key an index points to in vain.
    """
    from safetensors import SafetensorError, safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file, wanted in _safetensors_files(checked_path(path)).items():
        if not Path(file).is_file():
            raise CheckpointError(f"checkpoint file {file!r} is missing")
        try:
            with safe_open(file, framework="pt") as f:
                present = set(f.keys())
                keys = sorted(present) if wanted is None else wanted
                for key in keys:
                    if prefix is not None and not key.startswith(prefix):
                        continue
                    if key not in present:
                        raise CheckpointError(f"checkpoint file {file!r} lacks tensor {key!r} that its index lists")
                    name = key[len(prefix) :] if strip_prefix and prefix else key
                    tensors[name] = f.get_tensor(key)
        except (SafetensorError, OSError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"checkpoint file {file!r} is not a readable safetensors file: {exc}") from exc
    return tensors


def write_safetensors(
    tensors: Mapping[str, torch.Tensor],
    directory: str | os.PathLike[str],
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_bytes: int | None = None,
) -> list[str]:
    """Write ``tensors`` into ``directory`` as ``model.safetensors``, or as shards plus an index.

    Shards are named ``model-00001-of-0000N.safetensors`` with a ``model.safetensors.index.json``
    (the layout ``transformers`` reads) when ``max_shard_bytes`` is given and the tensors exceed it.
    Every file is written atomically. Returns the written file names.
    """
    from safetensors.torch import save

    directory = checked_path(directory, "directory")
    if not isinstance(tensors, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()
    ):
        raise CheckpointError("write_safetensors: expected a mapping of str names to tensors")
    meta = {"format": "pt", **(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise CheckpointError(f"write_safetensors: metadata must map str to str, got {metadata!r:.80}")
    # safetensors refuses views into shared storage; a contiguous clone of each tensor is cheap here.
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if max_shard_bytes is not None and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensors[key]
        size += nbytes
    if len(shards) == 1:
        atomic_write_bytes(directory / SAFETENSORS_FILE, save(shards[0], metadata=meta))
        return [SAFETENSORS_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        atomic_write_bytes(directory / name, save(shard, metadata=meta))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
    write_json(directory / SAFETENSORS_INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [*names, SAFETENSORS_INDEX_FILE]


def read_torch_file(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """Load a ``torch.save``-d file with ``weights_only=True``: tensors, containers and plain values
    only. A file whose unpickling would import or call anything else is refused, never executed.

    :param mmap: map the file instead of reading it (zip-format files only; ignored for others).
    :raises CheckpointError: naming the file when it is missing, corrupt, or needs pickled code.
    """
    path = checked_path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        why = next((line for line in lines if line.startswith("WeightsUnpickler error")), lines[0] if lines else "")
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it needs pickled code, which is never run "
            f"(only torch.load(weights_only=True) is used). {why.split('. Please use')[0]}"
        ) from exc
    except Exception as exc:  # torch raises many types (zip, runtime, EOF) for a bad file
        raise CheckpointError(f"checkpoint file {str(path)!r} cannot be read as torch data: {exc}") from exc


def write_torch_file(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, where a failed write (a full disk, which torch reports as a
    ``RuntimeError``) is the :class:`OSError` every other write raises. Write into a staging
    directory (:func:`staging_directory`) so that a failure leaves nothing half-written behind."""
    path = checked_path(path, "torch file path")
    with foreign_errors(f"torch file {str(path)!r}", CheckpointError, writing=True):
        torch.save(obj, path)


def read_torch_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict with ``weights_only=True`` (no pickled code runs)."""
    # mmap keeps multi-GB shards out of RAM until used
    data = read_torch_file(path, mmap=True)
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint file {str(path)!r} does not hold a mapping of names to tensors")
    return dict(data)


def read_safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the tensors in a safetensors file, index or directory, from the headers
    alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file, wanted in _safetensors_files(checked_path(path)).items():
        if not Path(file).is_file():
            raise CheckpointError(f"checkpoint file {file!r} is missing")
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys() if wanted is None else wanted:
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint file {file!r} is not a readable safetensors file: {exc}") from exc
    return shapes
