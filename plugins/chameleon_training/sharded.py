"""Sharded training checkpoints for ``fsdp``, through :mod:`torch.distributed.checkpoint` (DCP).

Same place and lifecycle as the ``local`` checkpoints (:mod:`chameleon_training.state`):
``checkpoints/step-NNNNNNNN/``, complete once ``meta.json`` is in it, written atomically, the last
K kept. Inside, ``dcp/`` replaces ``model/``: every process writes its own shards of the model and
optimizer state there (DCP's format: ``.metadata`` plus one ``.distcp`` file per process), so
neither saving nor loading gathers the model anywhere, and a checkpoint can be loaded on another
number of processes (DCP reshards). ``trainer_state.pt`` holds the step, counters and every rank's
RNG state.

Writing: rank 0 opens a temporary sibling folder and tells the other ranks its name; all ranks write
their shards into it; after a barrier rank 0 adds the trainer state and meta file, lists every file
with its SHA-256 in the manifest and renames the folder into place; a second barrier keeps the
other ranks from going on before the checkpoint exists. The folder must be on a file system every
process sees (trivially so on one machine).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from chameleon_sdk import CheckpointError, has_adapter, plugin_api
from chameleon_training.state import META_FILE, STATE_FILE, checkpoint_root

if TYPE_CHECKING:
    from chameleon_training.loop import CheckpointRequest

DCP_DIR = "dcp"


class ProcessGroup(Protocol):
    """What saving and loading need of the running processes (``ddp``/``fsdp``'s strategy has it)."""

    @property
    def is_main(self) -> bool: ...

    def barrier(self) -> None: ...

    def broadcast(self, value: Any) -> Any: ...

    def rank_rngs(self) -> list[dict[str, Any]]: ...


def save_sharded(
    strategy: ProcessGroup,
    request: CheckpointRequest,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` with every rank's shards (call on every rank)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = checkpoint_root(request.out_dir)
    target = plugin_api.step_directory(root, request.step)
    model_state, optimizer_state = get_state_dict(module, optimizer, options=_state_options(module))
    rngs = strategy.rank_rngs()
    with contextlib.ExitStack() as stack:
        tmp = None
        if strategy.is_main:
            root.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(plugin_api.staging_directory(target))  # renamed into place on exit
        tmp = Path(strategy.broadcast(None if tmp is None else str(tmp)))
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / DCP_DIR)
        strategy.barrier()  # every rank's shards are on disk
        if strategy.is_main:
            state = {"step": request.step, "rng": rngs[0], "rng_ranks": rngs, **request.extra}
            plugin_api.write_torch_file(state, tmp / STATE_FILE)
            (tmp / META_FILE).write_text(json.dumps(request.meta, indent=2, default=str) + "\n", encoding="utf-8")
    if strategy.is_main:
        plugin_api.prune_step_directories(root, request.keep_last)
    strategy.barrier()  # nobody goes on (or reads the folder) before it is complete
    return target


def load_sharded(
    strategy: ProcessGroup, path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Restore model and optimizer shards from ``path`` (call on every rank); returns the trainer state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    problem = None
    if strategy.is_main:  # one rank reads every file once; all ranks stop on a problem
        try:
            if not (path / DCP_DIR).is_dir():
                raise CheckpointError(
                    f"checkpoint {str(path)!r} has no sharded state ({DCP_DIR}/): it was written by the "
                    "local or ddp trainer; resume it with that trainer, or train into a new out_dir"
                )
            plugin_api.verify_manifest(path)
            plugin_api.verify_dcp_metadata(path / DCP_DIR)  # dcp.load unpickles it with plain pickle
        except CheckpointError as exc:
            problem = str(exc)
    problem = strategy.broadcast(problem)
    if problem is not None:
        raise CheckpointError(problem)
    options = _state_options(module)
    model_state, optimizer_state = get_state_dict(module, optimizer, options=options)
    state = {"model": model_state, "optimizer": optimizer_state}
    # DCP raises a CheckpointException (a BaseException) wrapping every rank's failure
    with plugin_api.foreign_errors(f"sharded checkpoint {str(path)!r}", CheckpointError, interpreting=True):
        dcp.load(state, checkpoint_id=path / DCP_DIR)
    set_state_dict(
        module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=options
    )
    state = plugin_api.read_torch_file(path / STATE_FILE)  # weights_only: pickled code is refused
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path / STATE_FILE)!r} does not hold a trainer state")
    return state


def _state_options(module: torch.nn.Module) -> Any:
    """What a sharded checkpoint holds: everything, or for a model with an adapter (a LoRA run) only
    what trains. The frozen base does not change during the run; resuming loads it as the run did."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    adapter = has_adapter(module)
    # dcp.load checks that every requested (trainable) key is in the checkpoint; strict would also ask for the base
    return StateDictOptions(ignore_frozen_params=adapter, strict=not adapter)
