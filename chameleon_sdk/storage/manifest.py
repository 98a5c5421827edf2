"""``manifest.json``: the SHA-256 and size of every file of a checkpoint, written last and verified on load."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.storage.json_files import read_json, write_json
from chameleon_sdk.storage.paths import checked_path
from chameleon_sdk.storage.sync import fsync_directory, sha256_file

__all__ = ["MANIFEST_FILE", "read_manifest", "verify_manifest", "write_manifest"]

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "chameleon-sdk/manifest"
MANIFEST_VERSION = 1


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
    directory = checked_path(directory, "directory")
    paths = [directory / f for f in files] if files is not None else _manifest_entries(directory)
    entries: dict[str, dict[str, Any]] = {}
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"cannot list {str(path)!r} in the manifest: it is not a file")
        digest, size = sha256_file(path, sync=sync)
        entries[path.relative_to(directory).as_posix()] = {"sha256": digest, "size": size}
    target = directory / MANIFEST_FILE
    write_json(target, {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION, "files": entries})
    if sync:
        sha256_file(target, sync=True)
        fsync_directory(directory)
    return target


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, dict[str, Any]] | None:
    """``{relative path: {"sha256", "size"}}`` from ``directory/manifest.json``, or None without one.

    A ``manifest.json`` counts as ours when it carries any of our keys (``format``, ``format_version``,
    ``files``) or a ``format`` close to ours; one of another tool (none of that) counts as none. Ours
    must then match the schema exactly, so damage cannot make it look like another tool's and switch
    verification off: a flipped bit anywhere is a :class:`CheckpointError`, as is a file that does
    not parse.
    """
    path = checked_path(directory, "directory") / MANIFEST_FILE
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
    directory = checked_path(directory, "directory")
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
        digest, _ = sha256_file(path)
        if digest != entry["sha256"]:
            raise CheckpointError(
                f"checkpoint file {str(path)!r} is corrupt: its SHA-256 does not match {MANIFEST_FILE} "
                f"({digest[:12]}... vs {entry['sha256'][:12]}...)"
            )
        if recursive and path.name == MANIFEST_FILE and path.parent != directory:
            verify_manifest(path.parent, recursive=True)
    return True
