"""Handing the memory a burst of requests freed back to the operating system, and bounding a cache
that would otherwise keep growing with the shapes a server sees.

A request's tensors are freed when it ends, but glibc's ``malloc`` keeps freed heap memory for
later allocations, and with many threads and tensors of every size it is left in holes the
operating system never gets back. ``malloc_trim(0)`` returns every free page of every arena; the
batcher calls it when its batch empties, so an idle server shrinks back. In the serve benchmark's
soak (600 requests from 16 clients, bf16 weights) the server's resident memory after each half was
709 and 736 MiB with it, 763 and 865 MiB without.

torch's CPU bf16 matmuls keep what they build for each shape in two caches of 1,024 entries:
oneDNN's primitives (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``) and ideep's (``LRU_CACHE_CAPACITY``). A
server's prefills bring a new shape with every prompt length: 800 bf16 matmuls of distinct shapes
grew a process by 602 MiB, by 232 MiB with oneDNN's cache at 16, and by 83 MiB with both at 64 (83
MiB after 1,600 too). :func:`bound_kernel_caches` sets both for ``chameleon serve``.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

__all__ = ["KERNEL_CACHE_CAPACITY", "bound_kernel_caches", "release_free_memory"]

#: entries each cache keeps: a decode step of one batch size needs one per weight shape (5 in a
#: block), so several batch sizes fit; an evicted entry is rebuilt in microseconds
KERNEL_CACHE_CAPACITY = 64
_KERNEL_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library or OS)."""
    try:
        return ctypes.CDLL(None).malloc_trim  # the C library this process already runs on
    except (AttributeError, OSError):
        return None


def release_free_memory() -> bool:
    """Give the heap's free pages back to the operating system; returns whether any were (False
    where the C library has no ``malloc_trim``). Takes milliseconds: call it when idle."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> dict[str, str]:
    """Cap oneDNN's and ideep's caches of built matmuls at ``capacity`` entries, each unless the
    environment already sets it; returns the values in effect. The libraries read them at the
    process's first matmul, so call this before running a model."""
    return {name: os.environ.setdefault(name, str(capacity)) for name in _KERNEL_CACHE_VARIABLES}
