"""Handing the memory a burst of requests freed back to the operating system.

A request's tensors are freed when it ends, but glibc's ``malloc`` keeps freed heap memory for
later allocations, and with many threads and tensors of every size it is left in holes the
operating system never gets back. ``malloc_trim(0)`` returns every free page of every arena; the
batcher calls it when its batch empties, so an idle server shrinks back. In the serve benchmark's
soak (600 requests from 16 clients, bf16 weights) the server's resident memory after each half was
709 and 736 MiB with it, 763 and 865 MiB without.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

__all__ = ["release_free_memory"]


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
