"""The stability lab: the paper's stability ablation as a Wortsman-style learning-rate sweep.

Wortsman et al. (arXiv 2309.14322) reproduce large-scale transformer instabilities in small models
by training them at learning rates far above the usual ones; attention-logit growth (fixed by
QK-layernorm) and output-logit divergence (fixed by z-loss) then appear at small scale. This module
trains one tiny :class:`~chameleon_sdk.ChameleonModel` per (arm, learning rate) on a synthetic
mixed-modal stream (:mod:`chameleon_apps.lab.synthetic`) and reports, per run, the final held-out
loss and the model's stability monitors, and per arm the LR sensitivity.

Everything goes through the public machinery: the tricks are stability plugins named in each arm
(``"qk-norm+z-loss"``), the runs use the configured trainer plugin (``local`` by default) and the
``stability-monitor`` callback plugin reads the monitors.

LR sensitivity (Wortsman's definition, their eq. in section 3.1), over the grid of learning rates
``eta``: ``mean_eta[min(L(eta), L0)] - min_eta L(eta)``, where ``L(eta)`` is the final held-out
cross entropy of the run and ``L0`` the loss at initialisation (a run that diverged counts as
``L0``). 0 means "every learning rate of the grid is as good as the best one".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from chameleon_apps.lab.report import figure_png, save_report
from chameleon_apps.lab.synthetic import SyntheticMix, SyntheticMixConfig
from chameleon_apps.plotting import require_matplotlib
from chameleon_sdk import (
    Callback,
    ChameleonModel,
    ComponentSpec,
    ConfigError,
    ModelConfig,
    PluginRegistry,
    TrainingError,
    build_model,
    from_dict,
    get_registry,
    to_dict,
)
from chameleon_sdk.plugin_api import Batch

__all__ = [
    "DEFAULT_ARMS",
    "DEFAULT_LRS",
    "ArmSummary",
    "RunResult",
    "StabilityReport",
    "StabilitySweepConfig",
    "held_out_batch",
    "lr_sensitivity",
    "parse_arm",
    "run_stability_sweep",
    "sweep_data",
    "train_run",
]

BASELINE = "baseline"
#: the issue's five arms plus the 34B recipe (QK-norm with norm reordering)
DEFAULT_ARMS = ("baseline", "qk-norm", "z-loss", "qk-norm+z-loss", "norm-reorder", "qk-norm+norm-reorder")
DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
REPORT_FILE = "report.json"
PLOT_FILE = "stability.png"


def parse_arm(arm: str) -> tuple[str, ...]:
    """The stability tricks of an arm: ``"baseline"`` -> ``()``, ``"qk-norm+z-loss"`` -> both names."""
    if not isinstance(arm, str) or not arm.strip():
        raise ConfigError(f"an arm must be 'baseline' or trick names joined by '+', got {arm!r}")
    if arm == BASELINE:
        return ()
    names = tuple(part.strip() for part in arm.split("+"))
    if any(not name for name in names) or BASELINE in names:
        raise ConfigError(
            f"arm {arm!r}: expected 'baseline' or stability trick names joined by '+' (e.g. 'qk-norm+z-loss')"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"arm {arm!r} names a trick twice")
    return names


def _lrs(values: Any) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = [values]
    try:
        lrs = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"StabilitySweepConfig.lrs: expected a list of numbers, got {values!r}") from exc
    return lrs


def _check_lrs(instance: object, attribute: attrs.Attribute, lrs: tuple[float, ...]) -> None:
    if not lrs:
        raise ConfigError("StabilitySweepConfig.lrs: at least one learning rate is needed")
    bad = [lr for lr in lrs if not (math.isfinite(lr) and lr > 0)]
    if bad:
        raise ConfigError(f"StabilitySweepConfig.lrs: learning rates must be finite and > 0, got {bad}")
    if len(set(lrs)) != len(lrs):
        raise ConfigError(f"StabilitySweepConfig.lrs: each learning rate once, got {list(lrs)}")


def _arms(values: Any) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def _check_arms(instance: object, attribute: attrs.Attribute, arms: tuple[str, ...]) -> None:
    if not arms:
        raise ConfigError("StabilitySweepConfig.arms: at least one arm is needed")
    for arm in arms:
        parse_arm(arm)
    if len(set(arms)) != len(arms):
        raise ConfigError(f"StabilitySweepConfig.arms: each arm once, got {list(arms)}")


def _at_least(minimum: int) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: int) -> None:
        if value < minimum:
            raise ConfigError(f"StabilitySweepConfig.{attribute.name} must be >= {minimum}, got {value!r}")

    return check


def _default_model() -> ModelConfig:
    return ModelConfig(dim=128, num_layers=2, num_heads=4, ffn_multiple_of=64, max_seq_len=128)


@attrs.frozen(kw_only=True)
class StabilitySweepConfig:
    """One sweep: arms x learning rates, each run a fresh model trained on the same batches.

    :param lrs: peak learning rates (a log grid; every arm runs each).
    :param arms: ``"baseline"`` or stability-trick plugin names joined by ``+`` (``"qk-norm+z-loss"``).
    :param steps: optimizer steps per run.
    :param warmup_fraction: linear warm-up over this fraction of the steps, then cosine decay to
        ``min_lr_ratio * lr`` (Wortsman et al.: warm-up, then cosine).
    :param model: the model shape; ``vocab_size`` is taken from the data (None, or equal to it).
    :param attention: the attention backend plugin.
    :param data: the synthetic language.
    :param batch_size: rows per step; ``seq_len``: tokens per row.
    :param eval_batches: held-out batches (of ``batch_size`` rows) for the initial and final loss
        and the final monitors.
    :param trick_options: options per trick name, e.g. ``{"z-loss": {"coef": 1e-4}}`` (Wortsman's
        z-loss coefficient; the Chameleon paper used 1e-5 at 7B/34B scale).
    :param trainer: the trainer plugin; the lab sets ``lr``, ``warmup_steps``, ``schedule``,
        ``precision``, ``progress`` and ``max_nonfinite`` itself and passes ``trainer_options``.
    :param trainer_options: extra trainer options (defaults: AdamW betas (0.9, 0.95), eps 1e-8 and
        weight decay 0, close to Wortsman's independent decay of 1e-4 over this few steps; clip 1.0).
    :param max_nonfinite: a run stops as diverged after this many non-finite steps in a row.
    :param record_every: keep every N-th step in each run's history.
    :param seed: model initialisation (the same for every run) and batch order.
    :param device: where the runs train.
    """

    lrs: tuple[float, ...] = attrs.field(default=DEFAULT_LRS, converter=_lrs, validator=_check_lrs)
    arms: tuple[str, ...] = attrs.field(default=DEFAULT_ARMS, converter=_arms, validator=_check_arms)
    steps: int = attrs.field(default=200, validator=_at_least(1))
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.1
    model: ModelConfig = attrs.field(factory=_default_model)
    attention: str = "sdpa"
    data: SyntheticMixConfig = attrs.field(factory=SyntheticMixConfig)
    batch_size: int = attrs.field(default=8, validator=_at_least(1))
    seq_len: int = attrs.field(default=128, validator=_at_least(2))
    eval_batches: int = attrs.field(default=4, validator=_at_least(1))
    trick_options: dict[str, dict[str, Any]] = attrs.field(factory=lambda: {"z-loss": {"coef": 1e-4}})
    trainer: str = "local"
    trainer_options: dict[str, Any] = attrs.field(
        factory=lambda: {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.0, "grad_clip": 1.0}
    )
    max_nonfinite: int = attrs.field(default=3, validator=_at_least(1))
    record_every: int = attrs.field(default=10, validator=_at_least(1))
    seed: int = 0
    device: str = "cpu"

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"StabilitySweepConfig.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"StabilitySweepConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        vocab = self.data.vocab_size
        if self.model.vocab_size is not None and self.model.vocab_size != vocab:
            raise ConfigError(
                f"StabilitySweepConfig.model.vocab_size is {self.model.vocab_size} but the synthetic data has "
                f"{vocab} ids; leave it None"
            )
        if self.model.max_seq_len < self.seq_len:
            raise ConfigError(
                f"StabilitySweepConfig: model.max_seq_len ({self.model.max_seq_len}) < seq_len ({self.seq_len})"
            )
        for name, options in self.trick_options.items():
            if not isinstance(options, Mapping):
                raise ConfigError(f"StabilitySweepConfig.trick_options[{name!r}] must be a mapping, got {options!r}")
        reserved = {"lr", "warmup_steps", "schedule", "min_lr_ratio", "precision", "progress", "max_nonfinite"}
        clash = sorted(reserved & set(self.trainer_options))
        if clash:
            raise ConfigError(
                f"StabilitySweepConfig.trainer_options: {clash} are set by the sweep itself; use the sweep's own fields"
            )

    @classmethod
    def quick(cls, **changes: Any) -> StabilitySweepConfig:
        """A seconds-long sweep for smoke tests: a 2-layer d=32 model, 3 learning rates, 12 steps."""
        quick = {
            "lrs": (1e-3, 3e-2, 1.0),
            "steps": 12,
            "model": ModelConfig(dim=32, num_layers=2, num_heads=2, ffn_dim=64, max_seq_len=64),
            "data": SyntheticMixConfig(text_vocab=64, image_codes=128, palette_size=32, image_length=16),
            "batch_size": 4,
            "seq_len": 64,
            "eval_batches": 2,
            "record_every": 1,
        }
        return cls(**{**quick, **changes})

    @property
    def warmup_steps(self) -> int:
        return int(self.steps * self.warmup_fraction)


@attrs.frozen(kw_only=True)
class RunResult:
    """One (arm, learning rate) run. Losses are held-out cross entropy (z-loss not included).

    :ivar initial_loss: at initialisation (``L0``).
    :ivar final_loss: after training (NaN when the run stopped on non-finite values).
    :ivar max_attention_logit: the largest pre-softmax attention logit over layers, final, held-out.
    :ivar peak_attention_logit: the largest one seen on any training step.
    :ivar last_layer_output_norm: the last block's mean output norm, final, held-out.
    :ivar mean_log_z: the mean logsumexp of the output logits, final, held-out.
    :ivar diverged: stopped on non-finite loss/gradients, or ended no better than ``initial_loss``.
    :ivar warnings: the stability monitor's warnings on the final evaluation.
    :ivar history: every ``record_every``-th training step: loss, lr, grad norm and the monitors.
    """

    arm: str
    lr: float
    initial_loss: float
    final_loss: float
    final_train_loss: float
    max_attention_logit: float
    peak_attention_logit: float
    last_layer_output_norm: float
    mean_log_z: float
    diverged: bool
    steps_completed: int
    seconds: float
    warnings: tuple[str, ...] = ()
    history: tuple[dict[str, float], ...] = ()

    def line(self) -> str:
        """One line for progress output."""
        return (
            f"{self.arm:<16} lr {self.lr:<7g} loss {_fmt(self.initial_loss, 4)} -> {_fmt(self.final_loss, 4)}"
            f"{' DIVERGED' if self.diverged else ''}  max attn logit {_fmt(self.max_attention_logit)}"
            f"  last-layer norm {_fmt(self.last_layer_output_norm)}  log Z {_fmt(self.mean_log_z)}  "
            f"({self.seconds:.0f}s)"
        )


@attrs.frozen(kw_only=True)
class ArmSummary:
    """Per arm: Wortsman's LR sensitivity and the best learning rate of the grid."""

    arm: str
    tricks: tuple[str, ...]
    lr_sensitivity: float
    best_lr: float | None
    best_loss: float
    diverged_lrs: tuple[float, ...]


def lr_sensitivity(final_losses: Sequence[float], initial_loss: float) -> float:
    """``mean(min(L, L0)) - min(L)`` over the grid; non-finite ``L`` counts as ``L0``."""
    if not final_losses:
        raise ConfigError("lr_sensitivity: no losses given")
    capped = [min(loss, initial_loss) if math.isfinite(loss) else initial_loss for loss in final_losses]
    return max(0.0, sum(capped) / len(capped) - min(capped))  # >= 0 up to rounding


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def _fmt(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    return f"{value:.{digits}g}"


@attrs.frozen(kw_only=True)
class StabilityReport:
    """The outcome of :func:`run_stability_sweep`: every run, a summary per arm and the setup."""

    config: StabilitySweepConfig
    runs: tuple[RunResult, ...]
    arms: tuple[ArmSummary, ...]
    entropy: dict[str, float]
    seconds: float
    torch_threads: int

    def run(self, arm: str, lr: float) -> RunResult:
        """The run of ``arm`` at ``lr``."""
        for result in self.runs:
            if result.arm == arm and math.isclose(result.lr, lr):
                return result
        raise ConfigError(f"no run for arm {arm!r} at lr {lr:g}; arms {list(self.config.arms)}")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StabilityReport:
        """Read back what :meth:`to_json` wrote (``report.json``), e.g. to redraw or merge sweeps.

        :raises ConfigError: naming the field that does not fit.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"a stability report must be a JSON object, got {type(data).__name__}")

        def floats(item: Any, cls: type) -> Any:  # JSON null was a non-finite float
            if not isinstance(item, Mapping):
                return item
            names = {f.name for f in attrs.fields(cls) if f.type in ("float", float)}
            return {k: math.nan if k in names and v is None else v for k, v in item.items()}

        try:
            return cls(
                config=from_dict(StabilitySweepConfig, data["config"], "report.config"),
                runs=tuple(from_dict(RunResult, floats(r, RunResult), "report.runs[]") for r in data["runs"]),
                arms=tuple(from_dict(ArmSummary, floats(a, ArmSummary), "report.arms[]") for a in data["arms"]),
                entropy=dict(data["entropy_nats_per_token"]),
                seconds=float(data["seconds"]),
                torch_threads=int(data["torch_threads"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"not a stability report (from StabilityReport.to_json): {exc!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (non-finite numbers become null)."""
        return _finite_or_none(
            {
                "config": to_dict(self.config),
                "entropy_nats_per_token": self.entropy,
                "seconds": self.seconds,
                "torch_threads": self.torch_threads,
                "lr_sensitivity_definition": "mean over lrs of min(final_loss, initial_loss) - best final_loss",
                "arms": [to_dict(a) for a in self.arms],
                "runs": [to_dict(r) for r in self.runs],
            }
        )

    def table(self) -> str:
        """Markdown tables: final loss and max attention logit per arm and learning rate, plus sensitivity."""
        lrs = sorted(self.config.lrs)
        head = "| arm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |"
        rule = "|---" * (len(lrs) + 1) + "|"

        def grid(title: str, cell: Callable[[RunResult], str], extra: Callable[[ArmSummary], str] | None) -> str:
            lines = [f"**{title}**", "", head + (" LR sensitivity |" if extra else ""), rule + ("---|" * bool(extra))]
            for summary in self.arms:
                cells = [cell(self.run(summary.arm, lr)) for lr in lrs]
                tail = f" {extra(summary)} |" if extra else ""
                lines.append(f"| {summary.arm} | " + " | ".join(cells) + " |" + tail)
            return "\n".join(lines)

        def loss_cell(r: RunResult) -> str:
            return _fmt(r.final_loss, 4) + (" (div)" if r.diverged else "")

        l0 = self.runs[0].initial_loss if self.runs else math.nan
        return "\n\n".join(
            [
                grid(f"final held-out loss (initial {_fmt(l0, 4)})", loss_cell, lambda a: _fmt(a.lr_sensitivity, 3)),
                grid("max attention logit (final)", lambda r: _fmt(r.max_attention_logit), None),
                grid("last-layer output norm (final)", lambda r: _fmt(r.last_layer_output_norm), None),
                grid("mean log Z (final)", lambda r: _fmt(r.mean_log_z), None),
            ]
        )

    def save(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``report.json`` and ``stability.png`` into ``out_dir`` (each atomically)."""
        return save_report(out_dir, self.to_json(), self.plot_png(), report_file=REPORT_FILE, plot_file=PLOT_FILE)

    def plot_png(self) -> bytes:
        """The figure as PNG bytes: final loss, max attention logit, last-layer norm and log Z vs learning rate."""
        plt = require_matplotlib()
        fig, axes = plt.subplots(2, 2, figsize=(11, 8), layout="constrained")
        self._draw(axes)
        m = self.config.model
        fig.suptitle(
            f"Stability sweep: d={m.dim}, {m.num_layers} layers, {self.config.steps} steps "
            "(x: diverged or no better than init)"
        )
        return figure_png(fig)

    def _draw(self, axes: Any) -> None:
        panels = [
            (axes[0][0], "final held-out loss", lambda r: r.final_loss, False),
            (axes[0][1], "max attention logit", lambda r: r.max_attention_logit, True),
            (axes[1][0], "last-layer output norm", lambda r: r.last_layer_output_norm, True),
            (axes[1][1], "mean log Z", lambda r: r.mean_log_z, False),
        ]
        lrs = sorted(self.config.lrs)
        for ax, title, value, log_y in panels:
            for summary in self.arms:
                runs = [self.run(summary.arm, lr) for lr in lrs]
                ys = [value(r) if math.isfinite(value(r)) else math.nan for r in runs]
                if title.startswith("final"):  # a diverged run is drawn at the initial loss, marked x
                    ys = [r.initial_loss if not math.isfinite(y) else y for r, y in zip(runs, ys)]
                (line,) = ax.plot(lrs, ys, marker="o", label=summary.arm)
                diverged = [(lr, y) for lr, y, r in zip(lrs, ys, runs) if r.diverged and math.isfinite(y)]
                if diverged:
                    ax.scatter(*zip(*diverged), marker="x", s=80, color=line.get_color(), zorder=3)
            if title.startswith("final") and self.runs:
                ax.axhline(self.runs[0].initial_loss, color="grey", linestyle="--", linewidth=1, label="initial")
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
            ax.set_xlabel("peak learning rate")
            ax.set_title(title)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8)


class _Recorder(Callback):
    """Keeps the trainer's per-step metrics (loss, lr, grad norm and the model's monitors)."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.history: list[dict[str, float]] = []
        self.peak_attention_logit = -math.inf
        self.last: dict[str, float] = {}

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        logits = metrics.get("max_attention_logit") or [math.nan]
        norms = metrics.get("layer_output_norm") or [math.nan]
        record = {
            "step": float(metrics["step"]),
            "loss": float(metrics["loss"]),
            "lr": float(metrics["lr"]),
            "grad_norm": float(metrics["grad_norm"]),
            "max_attention_logit": float(max(logits)),
            "last_layer_output_norm": float(norms[-1]),
            "mean_log_z": float(metrics.get("mean_log_z", math.nan)),
        }
        if math.isfinite(record["max_attention_logit"]):
            self.peak_attention_logit = max(self.peak_attention_logit, record["max_attention_logit"])
        if int(metrics["step"]) % self.every == 0:
            self.history.append(record)
        self.last = record


def sweep_data(config: StabilitySweepConfig) -> SyntheticMix:
    """The training stream every run of ``config`` sees."""
    return SyntheticMix(config.data, batch_size=config.batch_size, seq_len=config.seq_len, seed=config.seed)


def held_out_batch(config: StabilitySweepConfig) -> Batch:
    """The held-out rows (``eval_batches * batch_size``) behind every run's initial and final numbers."""
    data = sweep_data(config)
    parts = [data.eval_batch(i) for i in range(config.eval_batches)]
    device = torch.device(config.device)
    return Batch(
        input_ids=torch.cat([p.input_ids for p in parts]).to(device),
        targets=torch.cat([p.targets for p in parts]).to(device),
        document_ids=torch.cat([p.document_ids for p in parts]).to(device),
    )


@torch.no_grad()
def _evaluate(model: ChameleonModel, monitor: Any, batch: Batch, step: int) -> dict[str, Any]:
    """Held-out cross entropy and the monitors, recorded through the stability monitor."""
    was_training = model.training
    model.eval()
    try:
        out = model(batch.input_ids, document_ids=batch.document_ids)
        loss = model.loss(out.logits, batch.targets)
        record = dict(monitor.on_step(step, out, loss))
    finally:
        model.train(was_training)
    record["max_attention_logit"] = max(record["max_attention_logit"])
    return record


def _trainer_options(config: StabilitySweepConfig, lr: float) -> dict[str, Any]:
    return {
        **config.trainer_options,
        "lr": lr,
        "warmup_steps": config.warmup_steps,
        "schedule": "cosine",
        "min_lr_ratio": config.min_lr_ratio,
        "precision": "fp32",
        "progress": False,
        "max_nonfinite": config.max_nonfinite,
    }


def _trick_specs(tricks: Sequence[str], config: StabilitySweepConfig) -> list[ComponentSpec]:
    return [ComponentSpec(name=name, options=config.trick_options.get(name, {})) for name in tricks]


def train_run(
    config: StabilitySweepConfig,
    arm: str,
    lr: float,
    *,
    registry: PluginRegistry | None = None,
    data: SyntheticMix | None = None,
    eval_batch: Batch | None = None,
) -> tuple[RunResult, ChameleonModel]:
    """One run of the sweep: a fresh model with ``arm``'s tricks trained at peak learning rate ``lr``.

    Returns the result and the trained model (its monitors detached). ``data`` and ``eval_batch``
    default to :func:`sweep_data` and :func:`held_out_batch` of ``config``.
    """
    registry = registry or get_registry()
    data = data or sweep_data(config)
    eval_batch = eval_batch if eval_batch is not None else held_out_batch(config)
    model_config = attrs.evolve(config.model, vocab_size=data.vocab_size)
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = build_model(
            model_config,
            attention=config.attention,
            stability=_trick_specs(parse_arm(arm), config),
            registry=registry,
        ).to(device)
        monitor = registry.build("callback", "stability-monitor", {})
        monitor.attach(model)
        initial = _evaluate(model, monitor, eval_batch, 0)
        trainer = registry.build("trainer", config.trainer, _trainer_options(config, lr))
        recorder = _Recorder(config.record_every)
        started = time.perf_counter()
        stopped = False
        try:
            trainer.fit(model, data, steps=config.steps, out_dir=None, callbacks=[recorder], resume=False)
        except TrainingError:
            stopped = True
        seconds = time.perf_counter() - started
        final = _evaluate(model, monitor, eval_batch, config.steps)
        monitor.detach()
    last = recorder.last
    if last and (not recorder.history or recorder.history[-1]["step"] != last["step"]):
        recorder.history.append(last)
    initial_loss = initial["cross_entropy"]
    final_loss = math.nan if stopped else final["cross_entropy"]
    diverged = stopped or not math.isfinite(final_loss) or final_loss >= initial_loss
    result = RunResult(
        arm=arm,
        lr=lr,
        initial_loss=initial_loss,
        final_loss=final_loss,
        final_train_loss=last.get("loss", math.nan),
        max_attention_logit=final["max_attention_logit"],
        peak_attention_logit=recorder.peak_attention_logit,
        last_layer_output_norm=final["last_layer_output_norm"],
        mean_log_z=final["mean_log_z"],
        diverged=diverged,
        steps_completed=int(last["step"]) + 1 if last else 0,
        seconds=seconds,
        warnings=tuple(final["warnings"]),
        history=tuple(recorder.history),
    )
    return result, model


def _summarise(arm: str, runs: Sequence[RunResult]) -> ArmSummary:
    finals = [r.final_loss for r in runs]
    initial = max(r.initial_loss for r in runs)
    usable = [(r.final_loss, r.lr) for r in runs if math.isfinite(r.final_loss) and not r.diverged]
    best_loss, best_lr = min(usable) if usable else (math.nan, None)
    return ArmSummary(
        arm=arm,
        tricks=parse_arm(arm),
        lr_sensitivity=lr_sensitivity(finals, initial),
        best_lr=best_lr,
        best_loss=best_loss,
        diverged_lrs=tuple(r.lr for r in runs if r.diverged),
    )


def run_stability_sweep(
    config: StabilitySweepConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[RunResult], None] | None = None,
    registry: PluginRegistry | None = None,
) -> StabilityReport:
    """Train every (arm, learning rate) pair of ``config`` and return the report.

    Every run starts from the same initial weights (``config.seed``) and sees the same batches.
    The global torch RNG is left as it was.

    :param out_dir: when given, ``report.json`` and ``stability.png`` are written there (atomically).
    :param progress: called with each :class:`RunResult` as it finishes.
    :raises PluginNotFoundError: an arm names a trick that is not registered (before any training).
    :raises ConfigError: trick or trainer options that their plugin refuses (before any training).
    """
    config = config or StabilitySweepConfig()
    registry = registry or get_registry()
    for arm in config.arms:  # fail on a misspelt trick before spending minutes on the other arms
        for spec in _trick_specs(parse_arm(arm), config):
            registry.get("stability", spec.name).make_options(spec.options)
    registry.get("trainer", config.trainer).make_options(_trainer_options(config, config.lrs[0]))
    data = sweep_data(config)
    eval_batch = held_out_batch(config)
    started = time.perf_counter()
    runs: list[RunResult] = []
    summaries: list[ArmSummary] = []
    for arm in config.arms:
        arm_runs = []
        for lr in sorted(config.lrs):
            result, _ = train_run(config, arm, lr, registry=registry, data=data, eval_batch=eval_batch)
            arm_runs.append(result)
            if progress is not None:
                progress(result)
        runs += arm_runs
        summaries.append(_summarise(arm, arm_runs))
    report = StabilityReport(
        config=config,
        runs=tuple(runs),
        arms=tuple(summaries),
        entropy=data.entropies(),
        seconds=time.perf_counter() - started,
        torch_threads=torch.get_num_threads(),
    )
    if out_dir is not None:
        report.save(out_dir)
    return report
