"""Kind ``callback``: hooks a trainer calls at the start, after each step, at checkpoints and at the end."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chameleon_sdk.contracts.trainer import TrainResult

__all__ = ["Callback", "call_callbacks"]


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


def call_callbacks(callbacks: Sequence[Any], method: str, *args: Any) -> None:
    """Call ``method`` on every callback that has it (callbacks need not subclass :class:`Callback`)."""
    for callback in callbacks:
        fn = getattr(callback, method, None)
        if fn is not None:
            fn(*args)
