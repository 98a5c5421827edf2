"""Releasing a thread's OpenMP workers, so that one thread decodes without a second pool beside it.

torch's Linux CPU builds run parallel ops on GNU OpenMP (libgomp). Every thread that runs such an op
gets its own pool of worker threads, kept for the thread's life. While the pools hold more threads
than the machine has cores, libgomp stops spin-waiting between parallel regions, and every op then
waits for its workers to wake up: on the 2-core development machine a batch-8 decode step of the
bench config took 25 ms on the decode thread instead of 16, because the thread that had loaded the
model still held its pool. ``omp_pause_resource_all`` (OpenMP 5.0) frees the calling thread's pool in
libgomp; the thread gets a new one if it runs a parallel op again.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

__all__ = ["release_thread_workers"]

_OMP_PAUSE_HARD = 2


def pick_libgomp(mapped: list[str], torch_dir: str) -> str | None:
    """Of the libraries in ``mapped`` (paths), the GNU OpenMP runtime torch runs on: the copy inside
    ``torch_dir`` first (another package may have loaded a libgomp of its own), None without one.
    Only GNU's: LLVM's libomp implements a hard pause as a shutdown of the whole runtime."""
    gomp = [path for path in set(mapped) if Path(path).name.startswith("libgomp")]
    return min(gomp, key=lambda path: (not path.startswith(torch_dir), path), default=None)


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The libgomp this process has loaded for torch, or None (another runtime or OS)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    # a line is "address perms offset dev inode [path]", and a path may hold spaces
    fields = [line.split(maxsplit=5) for line in maps.splitlines()]
    path = pick_libgomp([f[5] for f in fields if len(f) == 6], str(Path(torch.__file__).parent))
    return None if path is None else ctypes.CDLL(path)  # already loaded: the same library, no second copy


def release_thread_workers() -> bool:
    """Free the calling thread's OpenMP worker threads (they come back on its next parallel op).
    Returns whether it did (False where torch does not run on libgomp). Call it outside parallel
    work, from a thread that is done with torch for now."""
    library = _libgomp()
    return library is not None and library.omp_pause_resource_all(_OMP_PAUSE_HARD) == 0
