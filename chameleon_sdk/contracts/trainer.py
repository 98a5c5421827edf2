"""Kind ``trainer``: a training loop, the batches it reads, and what a run returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    import torch

    from chameleon_sdk.training.data import Batch

__all__ = ["BatchSource", "TrainResult", "Trainer"]


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
