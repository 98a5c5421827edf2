"""What trainer and callback plugins implement, and what a run returns."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from chameleon_sdk.training.data import Batch

__all__ = ["BatchSource", "Callback", "TrainResult", "Trainer", "call_callbacks", "is_main_process"]


@runtime_checkable
class BatchSource(Protocol):
    """Batches by step number. ``batch_at`` must be a pure function of the step (exact resume)."""

    def batch_at(self, step: int, micro: int = 0) -> Batch: ...

    def stage(self, step: int) -> int: ...

    @property
    def counters(self) -> Mapping[str, Any]: ...


@attrs.frozen(kw_only=True)
class TrainResult:
    """The outcome of :meth:`Trainer.fit`: ``steps`` is the step the run reached (its total),
    ``resumed_from`` the step it started from, ``trained_steps`` the steps this call trained."""

    steps: int
    final_loss: float
    skipped_steps: int
    seconds: float
    checkpoint: Path | None
    resumed_from: int | None = None

    @property
    def trained_steps(self) -> int:
        return self.steps - (self.resumed_from or 0)


class Callback:
    """Base class for callback plugins: override any of these (all optional, all no-ops here).

    ``info`` on start holds ``out_dir``, ``steps``, ``start_step``, ``trainer`` and ``model`` (the
    unwrapped :class:`ChameleonModel`); ``metrics`` per step holds ``step``, ``loss``, each loss term,
    ``lr``, ``grad_norm``, ``tokens``, ``tokens_per_s``, ``skipped_steps``, ``stage`` and the model's
    monitors when enabled (``model.collect_stats``; the ``stability-monitor`` callback turns it on).
    """

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        """Called once before the first step (also on resume)."""

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        """Called after every optimizer step (or skipped step)."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Called after a checkpoint was written completely."""

    def on_train_end(self, result: TrainResult) -> None:
        """Called once after the last step."""


def is_main_process() -> bool:
    """False in every process of a distributed run but rank 0 (the one that writes run files).

    Reads the joined process group, else ``RANK`` as ``torchrun`` sets it; True in a plain process.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def call_callbacks(callbacks: Sequence[Any], method: str, *args: Any) -> None:
    """Call ``method`` on every callback that has it (callbacks need not subclass :class:`Callback`)."""
    for callback in callbacks:
        fn = getattr(callback, method, None)
        if fn is not None:
            fn(*args)


@runtime_checkable
class Trainer(Protocol):
    """What a ``trainer`` plugin's factory returns."""

    def fit(
        self,
        model: torch.nn.Module,
        data: BatchSource,
        *,
        steps: int,
        out_dir: Path | None,
        callbacks: Sequence[Any] = (),
        resume: bool = True,
    ) -> TrainResult:
        """Train ``model`` for ``steps`` optimizer steps on ``data`` (resuming from ``out_dir``)."""
