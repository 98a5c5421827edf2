"""release_free_memory gives free heap pages back; bound_kernel_caches keeps bf16 matmul caches small."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chameleon_sdk.serve.memory import _KERNEL_CACHE_VARIABLES, _malloc_trim, bound_kernel_caches, release_free_memory


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


def test_bound_kernel_caches_sets_both_capacities_and_keeps_a_users(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "8")
    assert bound_kernel_caches() == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "8"}
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"


_SHAPES_GROWTH = """
import ctypes, sys
from pathlib import Path
from chameleon_sdk.serve.memory import bound_kernel_caches
if sys.argv[1] == "bounded":
    bound_kernel_caches()
import torch
torch.set_num_threads(1)
def rss():
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
weight = torch.randn(1376, 512, dtype=torch.bfloat16)
torch.nn.functional.linear(torch.randn(1, 512, dtype=torch.bfloat16), weight)
ctypes.CDLL(None).malloc_trim(0)
before = rss()
for rows in range(2, 402):  # as a server's prefills: a new shape with every prompt length
    torch.nn.functional.linear(torch.randn(rows, 512, dtype=torch.bfloat16), weight)
ctypes.CDLL(None).malloc_trim(0)
print(rss() - before)
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_bounded_caches_stop_bf16_matmuls_of_new_shapes_from_growing_the_process():
    env = {name: value for name, value in os.environ.items() if name not in _KERNEL_CACHE_VARIABLES}

    def growth(mode: str) -> float:
        done = subprocess.run(
            [sys.executable, "-c", _SHAPES_GROWTH, mode], capture_output=True, text=True, check=True, env=env
        )
        return float(done.stdout.strip())

    unbounded, bounded = growth("unbounded"), growth("bounded")
    if unbounded < 100:
        pytest.skip(f"this torch build's bf16 matmuls kept {unbounded:.0f} MiB for 400 shapes: nothing to bound")
    assert bounded < unbounded / 2, (bounded, unbounded)
