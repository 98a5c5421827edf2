"""Directories that appear whole or not at all: a staging folder swapped into place by one rename."""

from __future__ import annotations

import contextlib
import ctypes
import errno as _errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chameleon_sdk.storage.manifest import write_manifest
from chameleon_sdk.storage.sync import fsync_directory

__all__ = ["replace_directory", "staging_directory"]


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
        fsync_directory(target.parent)
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
