"""Training checkpoints: model (a native checkpoint), optimizer, RNG, step; atomic, keep-last-K.

A model that carries an adapter (a LoRA run) is saved as its adapter alone (``adapter/``): the base
weights do not change during the run, and resuming loads the base as the run did, then the adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import chameleon_sdk
from chameleon_sdk import CheckpointError, plugin_api

STATE_FILE = "trainer_state.pt"
META_FILE = "meta.json"
MODEL_DIR = "model"
ADAPTER_DIR = "adapter"


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def latest_checkpoint(out_dir: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint (a folder that has its meta file), or None."""
    found = [
        (step, p) for step, p in plugin_api.step_directories(checkpoint_root(out_dir)) if (p / META_FILE).is_file()
    ]
    return found[-1] if found else None


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    meta: dict[str, Any],
    *,
    keep_last: int,
) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` through a temporary folder, a manifest and a rename; prune old ones."""
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = plugin_api.step_directory(root, step)
    with plugin_api.staging_directory(target) as tmp:  # temporary ".step-NNNNNNNN.tmp-*" until complete
        if chameleon_sdk.has_adapter(model):
            chameleon_sdk.save_adapter(model, tmp / ADAPTER_DIR)
        else:
            chameleon_sdk.save_model(model, tmp / MODEL_DIR, format="native")
        state = {"step": step, "optimizer": optimizer.state_dict(), "rng": plugin_api.global_rng_state()}
        plugin_api.write_torch_file({**state, **extra}, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    plugin_api.prune_step_directories(root, keep_last)
    return target


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model weights, optimizer and RNG state from ``path``; returns the saved state dict.

    The files are checked against the checkpoint's manifest first: a damaged checkpoint is a
    :class:`CheckpointError` naming the file, never a silently different run.
    """
    plugin_api.verify_manifest(path, recursive=False)  # model/ and adapter/ are verified by their loaders
    if (path / ADAPTER_DIR).is_dir():
        if not chameleon_sdk.has_adapter(model):
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds only an adapter (a LoRA run): attach the same adapter to the "
                "base model before resuming (the run config's adapter = {...} does)"
            )
        chameleon_sdk.load_adapter(model, path / ADAPTER_DIR)
    else:
        saved = chameleon_sdk.load_model(path / MODEL_DIR, format="native")
        # names a missing or unexpected key, or a key with both shapes
        plugin_api.load_weights(model, saved.state_dict(), source=str(path / MODEL_DIR))
    state = plugin_api.read_torch_file(path / STATE_FILE)  # weights_only: pickled code is refused
    if not isinstance(state, dict) or isinstance(state.get("step"), bool) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{str(path / STATE_FILE)!r} does not hold a trainer state (no integer 'step')")
    try:
        optimizer.load_state_dict(state["optimizer"])
        plugin_api.set_global_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{str(path / STATE_FILE)!r} does not fit this run's optimizer: {exc!r}") from exc
    return state
