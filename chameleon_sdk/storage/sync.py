"""Flushing to disk: file digests computed while syncing, and directory entries."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["fsync_directory", "sha256_file"]


def sha256_file(path: Path, *, sync: bool = False) -> tuple[str, int]:
    """The SHA-256 hex digest and size of ``path`` (flushed to disk on the way with ``sync``)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return digest.hexdigest(), size


def fsync_directory(path: Path) -> None:
    """Flush ``path``'s entries (a rename into it) to disk, where the file system can."""
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
