"""JSON files of a checkpoint: bounded reads and atomic writes, errors naming the file."""

from __future__ import annotations

import json
import os
from typing import Any

from chameleon_sdk.bounded_read import MAX_JSON_BYTES, read_bounded
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import CheckpointError
from chameleon_sdk.storage.atomic_files import atomic_write_bytes
from chameleon_sdk.storage.paths import checked_path

__all__ = ["read_json", "write_json"]


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; :class:`CheckpointError` names the file when it is missing or corrupt."""
    path = checked_path(path, "JSON file path")
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
    path = checked_path(path, "JSON file path")
    try:
        text = json.dumps(data, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot write {str(path)!r}: the data is not JSON-serialisable ({exc})") from exc
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))
