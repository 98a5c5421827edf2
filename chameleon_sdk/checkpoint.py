"""Model checkpoints: the format contract, format detection, and safe tensor I/O.

A checkpoint format is a plugin of kind ``checkpoint_format`` whose factory builds an object
following :class:`CheckpointFormat`. :func:`load_model` asks every registered format whether it
recognises a path and lets the single one that does load it; :func:`save_model` lets the named
format write into a fresh temporary directory, then swaps that directory into place, so a crash
never leaves a half-written checkpoint behind.

The helpers below (:func:`read_json`, :func:`read_safetensors`, :func:`write_safetensors`,
:func:`read_torch_weights`, :func:`load_weights`) are what format plugins build on. They raise
:class:`~chameleon_sdk.errors.CheckpointError` naming the file, or the key and both shapes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import torch

from chameleon_sdk.errors import ChameleonError, CheckpointError
from chameleon_sdk.plugins import PluginRegistry, get_registry

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "CheckpointFormat",
    "CheckpointInfo",
    "detect_format",
    "load_model",
    "load_weights",
    "read_json",
    "read_safetensors",
    "read_torch_weights",
    "replace_directory",
    "save_model",
    "staging_directory",
    "write_json",
    "write_safetensors",
]

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
KIND = "checkpoint_format"


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """Where a loaded model came from; kept on the model as ``model.checkpoint_info``.

    ``metadata`` holds whatever the format needs to write the checkpoint back faithfully (for the
    ``hf`` format: the original ``config.json``, whose ``vq_config`` the image tokenizer needs).
    """

    format: str
    path: str
    metadata: Mapping[str, Any] = attrs.field(factory=dict)


@runtime_checkable
class CheckpointFormat(Protocol):
    """What a ``checkpoint_format`` plugin's factory returns.

    - ``detect(path)``: True when ``path`` looks like a checkpoint of this format. Cheap (reads at
      most small metadata files) and never raises for a path of another format.
    - ``load(path, registry=...)``: build the model (attention and stability plugins come from
      ``registry``) and fill its weights; returns the model. :func:`load_model` puts it in eval mode.
    - ``save(model, path)``: write the model into the existing, empty directory ``path``.
    """

    def detect(self, path: Path) -> bool: ...

    def load(self, path: Path, *, registry: PluginRegistry) -> nn.Module: ...

    def save(self, model: nn.Module, path: Path) -> None: ...


# -- detection, load, save ---------------------------------------------------------------------


def _formats(registry: PluginRegistry) -> dict[str, CheckpointFormat]:
    """Every format that builds with default options (one needing options can still be named)."""
    formats = {}
    for record in registry.records(KIND):
        try:
            formats[record.name] = record.build()
        except ChameleonError:
            continue
    return formats


def detect_format(path: str | os.PathLike[str], *, registry: PluginRegistry | None = None) -> str:
    """The name of the one registered format that recognises ``path``.

    :raises CheckpointError: when ``path`` does not exist, or no format (or more than one) claims it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    registry = registry or get_registry()
    formats = _formats(registry)
    claimed = [name for name, fmt in formats.items() if fmt.detect(path)]
    if len(claimed) == 1:
        return claimed[0]
    if not claimed:
        listing = sorted(p.name for p in path.iterdir()) if path.is_dir() else [path.name]
        raise CheckpointError(
            f"no checkpoint format recognises {str(path)!r} (it holds {listing[:10]}); "
            f"registered formats: {sorted(formats) or 'none'}"
        )
    raise CheckpointError(f"{str(path)!r} is claimed by several checkpoint formats {claimed}; pass format=...")


def load_model(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    options: Any = None,
    registry: PluginRegistry | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a model checkpoint, detecting its format unless ``format`` names one.

    :param path: a checkpoint directory (or file, for formats that use one).
    :param format: a ``checkpoint_format`` plugin name (``"native"``, ``"hf"``, ``"original"``).
    :param options: options for that format's plugin (a mapping or its options class).
    :param dtype: cast the loaded model to this dtype (default: keep the model's fp32 parameters).
    :returns: the model, in eval mode, with ``model.checkpoint_info`` describing its source.
    :raises CheckpointError: on a missing or corrupt file (named), a shape mismatch (key and both shapes).
    """
    registry = registry or get_registry()
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    name = format or detect_format(path, registry=registry)
    fmt = registry.build(KIND, name, options)
    model = fmt.load(path, registry=registry)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    format: str = "native",
    options: Any = None,
    registry: PluginRegistry | None = None,
) -> Path:
    """Write ``model`` as a checkpoint directory of ``format``, atomically.

    The format writes into a temporary sibling directory that then replaces ``path`` in one rename,
    so readers see either the old checkpoint or the complete new one.
    """
    registry = registry or get_registry()
    fmt = registry.build(KIND, format, options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(path) as tmp:
        fmt.save(model, tmp)
    return path


@contextlib.contextmanager
def staging_directory(target: Path) -> Iterator[Path]:
    """A fresh temporary sibling of ``target`` that replaces ``target`` when the block succeeds
    (and is removed when it fails): readers never see a half-written directory."""
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing an existing ``dst`` (a file or directory)."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


# -- file helpers ------------------------------------------------------------------------------


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; :class:`CheckpointError` names the file when it is missing or corrupt."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {str(path)!r}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint file {str(path)!r} is not valid JSON: {exc}") from exc


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    _atomic_write(Path(path), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    for file, wanted in _safetensors_files(Path(path)).items():
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

    directory = Path(directory)
    meta = {"format": "pt", **(metadata or {})}
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
        _atomic_write(directory / SAFETENSORS_FILE, save(shards[0], metadata=meta))
        return [SAFETENSORS_FILE]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _atomic_write(directory / name, save(shard, metadata=meta))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
    write_json(directory / SAFETENSORS_INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return [*names, SAFETENSORS_INDEX_FILE]


def read_torch_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    try:
        # mmap keeps multi-GB shards out of RAM until used; only the zip format supports it.
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # torch raises many types (pickle, zip, runtime) for a bad file
        raise CheckpointError(f"checkpoint file {str(path)!r} cannot be read as torch weights: {exc}") from exc
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint file {str(path)!r} does not hold a mapping of names to tensors")
    return dict(data)


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Copy ``state_dict`` into ``model``: every key must exist on both sides with the same shape.

    :param source: the checkpoint being read, named in errors.
    :raises CheckpointError: naming missing or unexpected keys, or a key with both shapes.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing:
        raise CheckpointError(f"checkpoint {source!r} lacks {len(missing)} tensor(s) the model needs: {missing[:8]}")
    if unexpected:
        raise CheckpointError(
            f"checkpoint {source!r} has {len(unexpected)} tensor(s) the model does not know: {unexpected[:8]}"
        )
    for key, tensor in sorted(state_dict.items()):
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"checkpoint {source!r}: tensor {key!r} has shape {list(tensor.shape)}, "
                f"the model expects {list(expected[key].shape)}"
            )
    model.load_state_dict(dict(state_dict), strict=True)
