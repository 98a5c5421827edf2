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
import ctypes
import difflib
import errno as _errno
import functools
import hashlib
import inspect
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs
import torch

from chameleon_sdk.bounded_read import MAX_JSON_BYTES, read_bounded
from chameleon_sdk.config import atomic_write_bytes
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import ChameleonError, CheckpointError
from chameleon_sdk.model.meta_device import meta_tensor_names
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.quantization import QuantizeChoice, quantize_model

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "MANIFEST_FILE",
    "SAFETENSORS_FILE",
    "SAFETENSORS_INDEX_FILE",
    "CheckpointFormat",
    "CheckpointInfo",
    "detect_format",
    "load_model",
    "load_weights",
    "prune_step_directories",
    "read_json",
    "read_manifest",
    "read_safetensors",
    "read_torch_file",
    "read_torch_weights",
    "replace_directory",
    "save_model",
    "staging_directory",
    "verify_dcp_metadata",
    "verify_manifest",
    "write_json",
    "write_manifest",
    "write_safetensors",
]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "chameleon-sdk/manifest"
MANIFEST_VERSION = 1
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
    - ``load(path, registry=..., dtype=None)``: build the model (attention and stability plugins
      come from ``registry``) and fill its weights, floating-point ones in ``dtype`` when given
      (build it inside :func:`~chameleon_sdk.parameters_on_meta` and fill it with
      :func:`load_weights`, so each weight is materialised once); returns the model.
      :func:`load_model` puts it in eval mode (and casts it when a format's ``load`` takes no ``dtype``).
    - ``save(model, path)``: write the model into the existing, empty directory ``path``.
    """

    def detect(self, path: Path) -> bool: ...

    def load(self, path: Path, *, registry: PluginRegistry, dtype: torch.dtype | None = None) -> nn.Module: ...

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


def _checked_path(path: Any, what: str = "checkpoint path") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"{what} must be a str or os.PathLike, got {type(path).__name__}: {path!r:.80}")
    return Path(path)


def detect_format(path: str | os.PathLike[str], *, registry: PluginRegistry | None = None) -> str:
    """The name of the one registered format that recognises ``path``.

    :raises CheckpointError: when ``path`` does not exist, or no format (or more than one) claims it.
    """
    formats = _formats(registry or get_registry())
    return claiming_format(
        path,
        {name: fmt.detect for name, fmt in formats.items()},
        missing="checkpoint {path} does not exist",
        unclaimed="no checkpoint format recognises {path} (it holds {listing}); "
        f"registered formats: {sorted(formats) or 'none'}",
    )


def claiming_format(path: Any, detectors: Mapping[str, Callable[[Path], bool]], *, missing: str, unclaimed: str) -> str:
    """The one name whose detector claims ``path``; :class:`CheckpointError` otherwise.

    ``missing`` and ``unclaimed`` are the messages (``{path}``: the quoted path, ``{listing}``: up to
    ten names the folder holds).
    """
    path = _checked_path(path)
    if not path.exists():
        raise CheckpointError(missing.format(path=repr(str(path))))
    claimed = sorted(name for name, detect in detectors.items() if detect(path))
    if len(claimed) == 1:
        return claimed[0]
    if not claimed:
        listing = sorted(p.name for p in path.iterdir())[:10] if path.is_dir() else [path.name]
        raise CheckpointError(unclaimed.format(path=repr(str(path)), listing=listing))
    raise CheckpointError(f"{str(path)!r} is claimed by several checkpoint formats {claimed}; pass format=...")


def load_model(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    options: Any = None,
    registry: PluginRegistry | None = None,
    dtype: torch.dtype | None = None,
    verify: bool = True,
    quantize: QuantizeChoice | None = None,
) -> nn.Module:
    """Load a model checkpoint, detecting its format unless ``format`` names one.

    :param path: a checkpoint directory (or file, for formats that use one).
    :param format: a ``checkpoint_format`` plugin name (``"native"``, ``"hf"``, ``"original"``).
    :param options: options for that format's plugin (a mapping or its options class).
    :param dtype: the dtype of the loaded model's floating-point weights (default: the model's own,
        float32); the built-in formats read each weight straight into it.
    :param verify: check the files against the directory's ``manifest.json`` first (a directory
        without one, such as a Hugging Face download, is loaded as it is).
    :param quantize: a ``quantization`` plugin (``"int8-weight-only"``, or ``{"name", "options"}``)
        applied after the cast to ``dtype``; see :func:`chameleon_sdk.quantize_model`.
    :returns: the model, in eval mode, with ``model.checkpoint_info`` describing its source.
    :raises CheckpointError: on a missing or corrupt file (named), a shape mismatch (key and both shapes).
    """
    registry = registry or get_registry()
    path = _checked_path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"load_model: dtype must be a torch.dtype such as torch.bfloat16, got {dtype!r}")
    if verify and path.is_dir():
        verify_manifest(path)
    name = format or detect_format(path, registry=registry)
    fmt = registry.build(KIND, name, options)
    with foreign_errors(f"checkpoint {str(path)!r} ({name} format)", CheckpointError, interpreting=True):
        if dtype is not None and _takes_dtype(fmt.load):
            model = fmt.load(path, registry=registry, dtype=dtype)
        else:
            model = fmt.load(path, registry=registry)
    if dtype is not None:
        model = model.to(dtype)  # nothing to do when the format loaded in dtype
    if quantize is not None:
        model = quantize_model(model, quantize, registry=registry)
    return model.eval()


def _takes_dtype(load: Callable[..., Any]) -> bool:
    """Whether a format's ``load`` accepts ``dtype=`` (formats written before it existed do not)."""
    try:
        parameters = inspect.signature(load).parameters
    except (TypeError, ValueError):
        return False
    return "dtype" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


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
    so readers see either the old checkpoint or the complete new one; ``manifest.json`` (SHA-256 and
    size of every file) is written last.
    """
    registry = registry or get_registry()
    if not isinstance(model, torch.nn.Module):
        raise CheckpointError(f"save_model: expected a torch.nn.Module, got {type(model).__name__}")
    fmt = registry.build(KIND, format, options)
    path = _checked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(path) as tmp:
        fmt.save(model, tmp)
    return path


def step_directory(root: Path, step: int) -> Path:
    """``root/step-NNNNNNNN``: where a trainer writes its checkpoint of ``step``."""
    return Path(root) / f"step-{step:08d}"


def step_directories(root: Path) -> list[tuple[int, Path]]:
    """The ``step-NNNNNNNN`` folders under ``root`` as ``(step, path)``, oldest first (none if
    ``root`` does not exist). Each was renamed into place whole (:func:`staging_directory`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(p.name[5:]), p) for p in root.iterdir() if p.is_dir() and _is_step_name(p.name)]
    return sorted(found)


def prune_step_directories(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete ``step-NNNNNNNN`` folders under ``root``.

    Also removes what crashed writes left behind (``.step-*.tmp-*``). An old folder is first hidden
    by one atomic rename and only then deleted, so a crash mid-delete never leaves a half-deleted
    checkpoint that looks complete (the next prune removes the rest).
    """
    for stale in root.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    complete = step_directories(root)
    for _, old in complete[: max(len(complete) - keep_last, 0)]:
        hidden = old.with_name(f".{old.name}.tmp-pruned-{os.getpid()}")
        old.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def _is_step_name(name: str) -> bool:
    return len(name) == 13 and name.startswith("step-") and name[5:].isdigit()


def global_rng_state() -> dict[str, Any]:
    """PyTorch's global generator states (CPU, and every CUDA device when there is one), for a
    trainer's checkpoint: restoring them with :func:`set_global_rng_state` makes a resumed run draw
    the same numbers (dropout masks, sampling) as one that never stopped."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`global_rng_state` returned (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def staging_directory(target: Path, *, manifest: bool = True) -> Iterator[Path]:
    """A fresh temporary sibling of ``target`` that replaces ``target`` when the block succeeds
    (and is removed when it fails): readers never see a half-written directory.

    With ``manifest=True`` the block's files are then listed with their SHA-256 and size in
    ``manifest.json`` (written last, see :func:`write_manifest`) and flushed to disk before the rename,
    so the loaders can tell a complete checkpoint from a damaged one (:func:`verify_manifest`).
    """
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        if manifest:
            write_manifest(tmp, sync=True)
        replace_directory(tmp, target)
        _fsync_directory(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(src: Path, dst: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (_errno.EINVAL, _errno.ENOSYS, _errno.ENOTSUP, _errno.EXDEV, _errno.EPERM):
        return False  # this file system or kernel cannot exchange: fall back to two renames
    raise OSError(errno, os.strerror(errno), str(dst))


@functools.cache
def _libc() -> Any:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    except (OSError, AttributeError):
        return None
    return libc


def replace_directory(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing an existing ``dst`` (a file or directory).

    On Linux the two are exchanged atomically, so ``dst`` always holds the old or the new copy; where
    that is unsupported the old copy is first renamed to ``.NAME.old-PID`` (a crash between the two
    renames leaves it there).
    """
    if not dst.exists():
        os.replace(src, dst)
        return
    if _exchange(src, dst):
        old = src  # after the exchange, src holds the old copy
    else:
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


# -- manifests ---------------------------------------------------------------------------------


def _sha256(path: Path, *, sync: bool = False) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest(), size


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _manifest_entries(directory: Path) -> list[Path]:
    """Every file under ``directory``; a subdirectory with its own manifest is covered by that file."""
    found: list[Path] = []
    for root, dirs, files in os.walk(directory):
        here = Path(root)
        if here != directory and MANIFEST_FILE in files:
            found.append(here / MANIFEST_FILE)
            dirs.clear()
            continue
        dirs.sort()
        found += [here / name for name in sorted(files) if not (here == directory and name == MANIFEST_FILE)]
    return found


def write_manifest(
    directory: str | os.PathLike[str], *, files: Iterable[str] | None = None, sync: bool = False
) -> Path:
    """Write ``manifest.json`` into ``directory``: the SHA-256 and size of each file.

    :param files: the paths (relative to ``directory``) to list; by default every file under it,
        where a subdirectory holding its own ``manifest.json`` is listed by that file alone (its
        manifest covers the rest, so nothing is hashed twice).
    :param sync: flush each file to disk (``fsync``) while hashing it, so the checkpoint survives
        a power cut as well as a crash.
    """
    directory = _checked_path(directory, "directory")
    paths = [directory / f for f in files] if files is not None else _manifest_entries(directory)
    entries: dict[str, dict[str, Any]] = {}
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"cannot list {str(path)!r} in the manifest: it is not a file")
        digest, size = _sha256(path, sync=sync)
        entries[path.relative_to(directory).as_posix()] = {"sha256": digest, "size": size}
    target = directory / MANIFEST_FILE
    write_json(target, {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "files": entries})
    if sync:
        _sha256(target, sync=True)
        _fsync_directory(directory)
    return target


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """``{relative path: {"sha256", "size"}}`` from ``directory/manifest.json``, or None without one.

    A ``manifest.json`` counts as ours when it carries any of our keys (``format``, ``format_version``,
    ``files``) or a ``format`` close to ours; one of another tool (none of that) counts as none. Ours
    must then match the schema exactly, so damage cannot make it look like another tool's and switch
    verification off: a flipped bit anywhere is a :class:`CheckpointError`, as is a file that does
    not parse.
    """
    path = _checked_path(directory, "directory") / MANIFEST_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, Mapping) or not _claims_to_be_ours(data):
        return None
    corrupt = f"manifest {str(path)!r} is corrupt: not a valid {MANIFEST_FORMAT} manifest"
    if set(data) != {"format", "format_version", "files"}:
        raise CheckpointError(f"{corrupt} (keys {sorted(map(str, data))}, expected format, format_version, files)")
    files = data["files"]
    version = data["format_version"]
    if data["format"] != MANIFEST_FORMAT or version != MANIFEST_VERSION or not isinstance(files, Mapping):
        raise CheckpointError(f"{corrupt} (format {data['format']!r}, version {version!r})")
    for name, entry in files.items():
        ok = (
            isinstance(entry, Mapping)
            and set(entry) == {"sha256", "size"}
            and isinstance(entry["sha256"], str)
            and len(entry["sha256"]) == 64
            and isinstance(entry["size"], int)
            and not isinstance(entry["size"], bool)
        )
        if not ok or not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{corrupt}: malformed entry {name!r}")
    return {str(k): dict(v) for k, v in files.items()}


def _claims_to_be_ours(data: Mapping[str, Any]) -> bool:
    if {"format", "format_version", "files"} & set(data):
        fmt = data.get("format")
        if "files" in data or "format_version" in data or not isinstance(fmt, str):
            return True
        return difflib.SequenceMatcher(None, fmt, MANIFEST_FORMAT).ratio() >= 0.8
    return any(difflib.SequenceMatcher(None, str(k), "files").ratio() >= 0.8 for k in data) and len(data) <= 3


def verify_manifest(directory: str | os.PathLike[str], *, recursive: bool = True) -> bool:
    """Check every file ``directory/manifest.json`` lists against its size and SHA-256.

    A directory without a manifest (one downloaded from the Hugging Face Hub, a release) passes:
    returns False. Files the manifest does not list are not checked.

    :param recursive: also verify the manifests of subdirectories that the manifest lists (their
        own loaders do it when False).
    :returns: True when a manifest was found and everything matched.
    :raises CheckpointError: naming the missing, truncated or altered file.
    """
    directory = _checked_path(directory, "directory")
    files = read_manifest(directory)
    if files is None:
        return False
    for name, entry in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {str(path)!r} is missing (listed in {MANIFEST_FILE})")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is truncated or altered: {size} bytes, "
                f"the manifest says {entry['size']}"
            )
        digest, _ = _sha256(path)
        if digest != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is corrupt: its SHA-256 does not match {MANIFEST_FILE} "
                f"({digest[:12]}... vs {entry['sha256'][:12]}...)"
            )
        if recursive and path.name == MANIFEST_FILE and path.parent != directory:
            verify_manifest(path.parent, recursive=True)
    return True


# -- file helpers ------------------------------------------------------------------------------


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; :class:`CheckpointError` names the file when it is missing or corrupt."""
    path = _checked_path(path, "JSON file path")
    if not path.exists():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    raw = read_bounded(path, limit=MAX_JSON_BYTES, what="checkpoint file", error=CheckpointError)
    try:
        with foreign_errors(f"checkpoint file {str(path)!r}", CheckpointError):
            return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint file {str(path)!r} is not valid JSON: {exc}") from exc


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    path = _checked_path(path, "JSON file path")
    try:
        text = json.dumps(data, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write {str(path)!r}: the data is not JSON-serialisable ({exc})") from exc
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


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
    for file, wanted in _safetensors_files(_checked_path(path)).items():
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

    directory = _checked_path(directory, "directory")
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
    path = _checked_path(path)
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
    path = _checked_path(path, "torch file path")
    with foreign_errors(f"torch file {str(path)!r}", CheckpointError, writing=True):
        torch.save(obj, path)


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles ``torch.distributed.checkpoint`` metadata only: its dataclasses and enums, tensor
    sizes, dtypes, layouts, memory formats and paths. Any other global is refused, so no code runs."""

    _DCP = "torch.distributed.checkpoint."
    _PATHS = frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"})

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        import dataclasses
        import enum
        import importlib

        allowed = (
            (module == "torch" and name == "Size")
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in self._PATHS)
            or (module == "collections" and name == "OrderedDict")
        )
        if not allowed and (module == "torch" or module.startswith(self._DCP)):
            try:
                found = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                found = None
            allowed = isinstance(found, (torch.dtype, torch.layout, torch.memory_format)) or (
                module.startswith(self._DCP)
                and isinstance(found, type)
                and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum))
            )
        if not allowed:
            raise CheckpointError(
                f"refusing to load {self.source!r}: it needs {module}.{name}, which is not part of checkpoint "
                "metadata (the file is never unpickled with it)"
            )
        return super().find_class(module, name)


def verify_dcp_metadata(directory: str | os.PathLike[str]) -> None:
    """Check the metadata files of a ``torch.distributed.checkpoint`` directory before ``dcp.load``.

    ``dcp.load`` unpickles ``.metadata`` with plain :mod:`pickle`, which would run any code a crafted
    file holds; this reads every ``*.metadata`` file of ``directory`` with an unpickler that allows
    only the checkpoint-metadata classes, so such a file is refused before it is ever loaded.

    :raises CheckpointError: naming the file and what it needed, or a missing or corrupt file.
    """
    directory = _checked_path(directory, "directory")
    files = sorted(directory.glob("*.metadata")) if directory.is_dir() else []
    if not files:
        raise CheckpointError(f"{str(directory)!r} holds no .metadata file: not a torch.distributed.checkpoint")
    for path in files:
        try:
            with path.open("rb") as f:
                _MetadataUnpickler(f, str(path)).load()
        except CheckpointError:
            raise
        except Exception as exc:  # pickle raises many types for a damaged file
            raise CheckpointError(f"checkpoint metadata {str(path)!r} is corrupt: {exc!r}") from exc


def read_torch_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict with ``weights_only=True`` (no pickled code runs)."""
    # mmap keeps multi-GB shards out of RAM until used
    data = read_torch_file(path, mmap=True)
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"checkpoint file {str(path)!r} does not hold a mapping of names to tensors")
    return dict(data)


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


def read_safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the tensors in a safetensors file, index or directory, from the headers
    alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file, wanted in _safetensors_files(_checked_path(path)).items():
        if not Path(file).is_file():
            raise CheckpointError(f"checkpoint file {file!r} is missing")
        try:
            with safe_open(file, framework="pt") as f:
                for key in f.keys() if wanted is None else wanted:
                    shapes[key] = tuple(f.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"checkpoint file {file!r} is not a readable safetensors file: {exc}") from exc
    return shapes


def load_weights(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    dtype: torch.dtype | None = None,
) -> None:
    """Fill ``model`` from ``state_dict``: every key must exist on both sides with the same shape.

    Keys and shapes are compared first, before any tensor is read or allocated. A model built inside
    :func:`~chameleon_sdk.parameters_on_meta` then takes each tensor as its parameter (converted once
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
