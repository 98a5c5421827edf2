"""Trainer step folders (``step-NNNNNNNN``) and the global RNG state a resumed run restores."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["global_rng_state", "prune_step_directories", "set_global_rng_state", "step_directories", "step_directory"]


def step_directory(root: Path, step: int) -> Path:
    """``root/step-NNNNNNNN``: where a trainer writes its checkpoint of ``step``."""
    return Path(root) / f"step-{step:08d}"


def step_directories(root: Path) -> list[tuple[int, Path]]:
    """The ``step-NNNNNNNN`` folders under ``root`` as ``(step, path)``, oldest first (none if
    ``root`` does not exist). Each was renamed into place whole (:func:`staging_directory`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(p.name[5:]), p) for p in root.iterdir() if p.is_dir() and _is_step_name(p.name)]
    return sorted(found)


def prune_step_directories(root: Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete ``step-NNNNNNNN`` folders under ``root``.

    Also removes what crashed writes left behind (``.step-*.tmp-*``). An old folder is first hidden
    by one atomic rename and only then deleted, so a crash mid-delete never leaves a half-deleted
    checkpoint that looks complete (the next prune removes the rest).
    """
    for stale in root.glob(".step-*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    complete = step_directories(root)
    for _, old in complete[: max(len(complete) - keep_last, 0)]:
        hidden = old.with_name(f".{old.name}.tmp-pruned-{os.getpid()}")
        old.rename(hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def _is_step_name(name: str) -> bool:
    return len(name) == 13 and name.startswith("step-") and name[5:].isdigit()


def global_rng_state() -> dict[str, Any]:
    """PyTorch's global generator states (CPU, and every CUDA device when there is one), for a
    trainer's checkpoint: restoring them with :func:`set_global_rng_state` makes a resumed run draw
    the same numbers (dropout masks, sampling) as one that never stopped."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`global_rng_state` returned (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
