"""release_free_memory: free pages in the middle of the heap go back to the operating system."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from chameleon_sdk.serve.memory import _malloc_trim, release_free_memory


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_free_pages_held_below_a_live_block_are_given_back():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024  # below glibc's mmap threshold: from the heap
    release_free_memory()
    before = _rss_mib()
    blocks = [libc.malloc(size) for _ in range(3200)]  # 200 MiB
    for block in blocks:
        ctypes.memset(block, 1, size)  # touch every page, so it is resident
    for block in blocks[:-1]:
        libc.free(block)  # the last block stays: the heap's top cannot shrink past it
    held = _rss_mib()
    assert release_free_memory() is True
    released = _rss_mib()
    libc.free(blocks[-1])
    assert held - before > 150, (before, held)  # free() alone kept the pages
    assert held - released > 150, (held, released)
