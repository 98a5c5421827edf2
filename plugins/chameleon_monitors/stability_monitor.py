"""A callback that records the stability monitors of a :class:`chameleon_sdk.ChameleonModel`.

As a trainer callback (``PipelineConfig(callbacks=["metrics-jsonl", "stability-monitor"])``) it
turns the model's monitors on at the start of the run, so every step's metrics (and so
``metrics.jsonl``) carry them; it keeps a history and raises a :class:`StabilityWarning` when a
value is not finite or the last layer's output norm grows past ``growth_warning`` times its first
value.

In a hand-written training loop::

    monitor = chameleon_sdk.get_registry().build("callback", "stability-monitor", {"growth_warning": 10})
    monitor.attach(model)                      # turns on model.collect_stats
    for step, batch in enumerate(batches):
        out = model(batch.input_ids)
        loss = model.loss(out.logits, batch.targets)
        record = monitor.on_step(step, out, loss)   # floats; record["warnings"] lists alarms

Each record holds ``layer_output_norm`` and ``max_attention_logit`` (one float per layer),
``last_layer_output_norm`` (the paper's early warning of divergence), ``mean_log_z`` and every
loss term. A warning is raised in the record when a value is not finite, or when the last layer's
output norm has grown more than ``growth_warning`` times over its first recorded value.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import attrs
from torch import nn

from chameleon_sdk import Callback, ConfigError, ModelOutput
from chameleon_sdk.plugin_api import LossOutput

__all__ = ["MonitorOptions", "StabilityMonitor", "StabilityWarning"]


class StabilityWarning(UserWarning):
    """A monitored value says training is becoming unstable."""


@attrs.frozen(kw_only=True)
class MonitorOptions:
    """Options of ``stability-monitor``.

    :param every: record every ``every``-th step (the model still computes stats each step while
        attached; detach between records to save that work).
    :param growth_warning: warn when the last layer's output norm exceeds this multiple of its first
        recorded value.
    """

    every: int = 1
    growth_warning: float = 10.0

    def __attrs_post_init__(self) -> None:
        if self.every <= 0 or self.growth_warning <= 1.0:
            raise ConfigError(f"stability-monitor: need every > 0 and growth_warning > 1, got {self!r}")


class StabilityMonitor(Callback):
    """Records per-layer output norms, max attention logits, mean log Z and the loss terms."""

    def __init__(self, options: MonitorOptions | None = None) -> None:
        self.options = options or MonitorOptions()
        self.history: list[dict[str, Any]] = []
        self._model: nn.Module | None = None
        self._first_norm: float | None = None

    def attach(self, model: nn.Module) -> None:
        """Start collecting stats on ``model`` (sets ``model.collect_stats = True``)."""
        model.collect_stats = True
        self._model = model

    def detach(self) -> None:
        """Stop collecting stats on the attached model."""
        if self._model is not None:
            self._model.collect_stats = False
            self._model = None

    def on_step(self, step: int, output: ModelOutput, loss: LossOutput | None = None) -> dict[str, Any] | None:
        """Record one step; returns the record, or None when this step is skipped."""
        if step % self.options.every:
            return None
        if not output.stats:
            raise ConfigError("stability-monitor: the output has no stats; call monitor.attach(model) first")
        record: dict[str, Any] = {"step": step}
        for name, value in output.stats.items():
            record[name] = value.tolist() if value.dim() else float(value)
        if loss is not None:
            record["loss"] = float(loss.loss.detach())
            record.update({name: float(value) for name, value in loss.terms.items()})
        return self._record(record)

    # -- the trainer callback contract ------------------------------------------------------------

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        """Attach to the run's model (the trainer passes it as ``info["model"]``)."""
        model = info.get("model")
        if model is None:
            raise ConfigError("stability-monitor: the trainer did not pass the model in on_train_start's info")
        self.attach(model)

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        """Record the monitors the trainer put in this step's metrics; warn on trouble."""
        step = int(metrics.get("step", len(self.history)))
        if step % self.options.every or "layer_output_norm" not in metrics:
            return
        record = self._record(dict(metrics))
        for message in record["warnings"]:
            warnings.warn(f"step {step}: {message}", StabilityWarning, stacklevel=2)

    def on_train_end(self, result: Any) -> None:
        """Stop collecting stats (the model is left as it was before the run)."""
        self.detach()

    def _record(self, record: dict[str, Any]) -> dict[str, Any]:
        record["last_layer_output_norm"] = record["layer_output_norm"][-1]
        record["warnings"] = self._warnings(record)
        self.history.append(record)
        return record

    def _warnings(self, record: dict[str, Any]) -> list[str]:
        warnings = []
        values: list[float] = []
        for value in record.values():
            if isinstance(value, float):
                values.append(value)
            elif isinstance(value, list):
                values.extend(value)
        if not all(math.isfinite(v) for v in values):
            warnings.append("non-finite monitor or loss value")
        last = record["last_layer_output_norm"]
        if self._first_norm is None and math.isfinite(last):
            self._first_norm = last
        elif self._first_norm and last > self.options.growth_warning * self._first_norm:
            warnings.append(
                f"last-layer output norm {last:.3g} grew more than {self.options.growth_warning:g}x over its "
                f"first value {self._first_norm:.3g} (an early sign of divergence)"
            )
        return warnings
