"""release_thread_workers: the calling thread's OpenMP pool goes, other threads' pools stay."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from chameleon_sdk.serve.openmp import _libgomp, release_thread_workers


def _threads() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _gone(threads: set[str]) -> set[str]:
    """Which of ``threads`` have exited, waiting up to 5 s for them to (workers exit on their own)."""
    deadline = time.monotonic() + 5
    while threads & _threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return threads - _threads()


@pytest.mark.skipif(_libgomp() is None, reason="torch does not run on GNU OpenMP (libgomp) here")
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one torch thread: parallel ops start no OpenMP workers")
def test_a_thread_that_ran_parallel_ops_gives_its_workers_back():
    seen: dict[str, object] = {}

    def worker() -> None:
        before = _threads()
        torch.ones(1 << 22).sum()  # large enough to run as a parallel region: this thread's pool starts
        seen["pool"] = _threads() - before
        seen["released"] = release_thread_workers()
        seen["gone"] = _gone(seen["pool"])  # type: ignore[arg-type]
        after = _threads()
        torch.ones(1 << 22).sum()  # a later parallel op still works, on a new pool
        seen["new pool"] = _threads() - after

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["pool"], "the parallel op started no worker thread"
    assert seen["released"] is True and seen["gone"] == seen["pool"]
    assert seen["new pool"]


def test_releasing_a_thread_without_a_pool_is_harmless():
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(release_thread_workers()))
    thread.start()
    thread.join()
    assert result == [_libgomp() is not None]


def test_torch_s_own_libgomp_is_picked_before_another_package_s():
    from chameleon_sdk.serve.openmp import pick_libgomp

    mapped = [
        "/usr/lib/x86_64-linux-gnu/libgomp.so.1",
        "/venv/site-packages/scikit_learn.libs/libgomp-a34b3233.so.1.0.0",
        "/venv/site-packages/torch/lib/libgomp.so.1",
        "/venv/site-packages/torch/lib/libtorch_cpu.so",
    ]
    assert pick_libgomp(mapped, "/venv/site-packages/torch") == "/venv/site-packages/torch/lib/libgomp.so.1"
    assert pick_libgomp(mapped[:1], "/venv/site-packages/torch") == mapped[0]  # torch on the system's
    assert pick_libgomp(["/venv/site-packages/torch/lib/libomp.so"], "/venv/site-packages/torch") is None
