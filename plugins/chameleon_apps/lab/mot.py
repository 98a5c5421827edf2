"""The MoT lab: dense vs modality-aware experts (``mot``) on Shapes World, same steps, same batches.

Mixture-of-Transformers (Liang et al., arXiv 2411.04996) unties every block's weights by modality
and reports the training FLOPs it needs to reach the dense model's final loss, per modality
("relative FLOPs to match dense"; 34.8 % for images and 55.8 % for text in the Chameleon 7B
setting). This lab repeats that comparison at the demo's scale: it builds the demo's world
(:func:`chameleon_apps.demo.prepare_shapes_world`: both tokenizers trained, the training mixture
written), then trains a dense transformer and a MoT one from the same seed on the same batches for
the same steps, and evaluates both on held-out caption/picture pairs every ``eval_every`` steps, the
loss split by the modality of the predicted token.

Both models spend the same FLOPs per step (a token goes through one copy of the untied weights), so
"relative FLOPs to match" is the fraction of MoT's steps after which its held-out loss first reaches
the dense model's final loss (linearly interpolated between evaluations), or None when it never does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from chameleon_apps.demo import PLANS, DemoPlan, caption_pairs, prepare_shapes_world
from chameleon_apps.lab.report import figure_png, save_report
from chameleon_apps.plotting import require_matplotlib
from chameleon_apps.shapes import sample_shapes
from chameleon_sdk import Callback, ChameleonModel, ComponentSpec, ConfigError, Pipeline
from chameleon_sdk.plugin_api import IGNORE, UNTIE_PARTS, per_token_cross_entropy

__all__ = ["ARMS", "LossCurve", "MoTLabConfig", "MoTLabReport", "relative_steps_to_reach", "run_mot_lab"]

ARMS = ("dense", "mot")
MODALITIES = ("text", "image")
REPORT_FILE = "report.json"
PLOT_FILE = "mot.png"


def _positive(instance: object, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"MoTLabConfig.{attribute.name} must be an integer >= 1, got {value!r}")


def _untie(value: Any) -> tuple[str, ...]:
    parts = (value,) if isinstance(value, str) else tuple(value)
    unknown = sorted(set(parts) - set(UNTIE_PARTS))
    if not parts or unknown:
        raise ConfigError(f"MoTLabConfig.untie: expected some of {list(UNTIE_PARTS)}, got {list(parts)}")
    return parts


@attrs.frozen(kw_only=True)
class MoTLabConfig:
    """One comparison.

    :param plan: the demo's plan (world size, tokenizers, model shape, batch, learning rate).
    :param steps: training steps of each arm (default: the plan's ``lm_steps``).
    :param eval_every: evaluate on the held-out pairs every this many steps (and at the start and end).
    :param held_out_pairs: held-out caption/picture pairs (half picture first), never trained on.
    :param untie: the parts ``mot`` unties (the paper: all three).
    """

    plan: DemoPlan = attrs.field(factory=lambda: PLANS["default"])
    steps: int | None = attrs.field(default=None, validator=_positive)
    eval_every: int = attrs.field(default=50, validator=_positive)
    held_out_pairs: int = attrs.field(default=64, validator=_positive)
    untie: tuple[str, ...] = attrs.field(default=UNTIE_PARTS, converter=_untie)

    @property
    def total_steps(self) -> int:
        return self.steps or self.plan.lm_steps


@attrs.frozen(kw_only=True)
class LossCurve:
    """One arm's held-out loss per modality at each evaluated step (0 = before training)."""

    arm: str
    steps: tuple[int, ...]
    text: tuple[float, ...]
    image: tuple[float, ...]
    parameters: int
    seconds: float


def relative_steps_to_reach(steps: Sequence[int], losses: Sequence[float], target: float) -> float | None:
    """The fraction of ``steps[-1]`` after which ``losses`` first reach ``target`` (interpolated), or None."""
    for i, (step, loss) in enumerate(zip(steps, losses, strict=True)):
        if loss <= target:
            if i == 0:
                return 0.0
            before, previous = steps[i - 1], losses[i - 1]
            between = min((previous - target) / (previous - loss), 1.0)  # rounding must not pass ``step``
            crossing = before + (step - before) * between
            return crossing / steps[-1]
    return None


@attrs.frozen(kw_only=True)
class MoTLabReport:
    """Both arms' curves and the relative FLOPs MoT needs to match the dense model's final loss."""

    config: MoTLabConfig
    curves: tuple[LossCurve, ...]
    seconds: float

    def curve(self, arm: str) -> LossCurve:
        return next(c for c in self.curves if c.arm == arm)

    def relative_flops(self) -> dict[str, float | None]:
        """Per modality: the share of training FLOPs after which MoT reaches dense's final held-out loss."""
        dense, mot = self.curve("dense"), self.curve("mot")
        return {
            modality: relative_steps_to_reach(mot.steps, getattr(mot, modality), getattr(dense, modality)[-1])
            for modality in MODALITIES
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "config": {**attrs.asdict(self.config, recurse=True), "steps": self.config.total_steps},
            "curves": [attrs.asdict(c) for c in self.curves],
            "final_loss": {c.arm: {m: getattr(c, m)[-1] for m in MODALITIES} for c in self.curves},
            "relative_flops_to_match_dense": self.relative_flops(),
            "seconds": self.seconds,
            "torch_threads": torch.get_num_threads(),
        }

    def table(self) -> str:
        lines = ["| arm | parameters | final text loss | final image loss | train seconds |", "|---|---|---|---|---|"]
        for c in self.curves:
            lines.append(f"| {c.arm} | {c.parameters:,} | {c.text[-1]:.4f} | {c.image[-1]:.4f} | {c.seconds:.0f} |")
        shares = ", ".join(
            f"{m} {'not reached' if v is None else f'{v:.0%}'}" for m, v in self.relative_flops().items()
        )
        return "\n".join(lines) + f"\n\nMoT's training FLOPs to match dense's final loss: {shares}"

    def save(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``report.json`` and ``mot.png`` into ``out_dir`` (each atomically)."""
        return save_report(out_dir, self.to_json(), self.plot_png(), report_file=REPORT_FILE, plot_file=PLOT_FILE)

    def plot_png(self) -> bytes:
        """Held-out loss vs training step, one panel per modality, dense and MoT."""
        plt = require_matplotlib()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
        for ax, modality in zip(axes, MODALITIES, strict=True):
            for curve in self.curves:
                ax.plot(curve.steps[1:], getattr(curve, modality)[1:], marker="o", markersize=3, label=curve.arm)
            ax.axhline(getattr(self.curve("dense"), modality)[-1], color="grey", linestyle="--", linewidth=1)
            ax.set_title(f"held-out {modality} loss")
            ax.set_xlabel("training step (same FLOPs per step for both)")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        plan = self.config.plan
        fig.suptitle(f"Dense vs MoT on Shapes World: d={plan.lm_dim}, {plan.lm_layers} layers")
        return figure_png(fig)


@attrs.frozen(kw_only=True)
class _HeldOut:
    input_ids: torch.Tensor
    targets: torch.Tensor
    image_targets: torch.Tensor  # [B, T] bool: the target is an image code


def _held_out(pipe: Pipeline, config: MoTLabConfig) -> _HeldOut:
    shapes = sample_shapes(config.held_out_pairs, seed=11, size=config.plan.image_size)
    rows = [pipe.tokenize(doc, eos=True) for doc in caption_pairs(shapes, 0.5)]
    length = max(len(r) for r in rows)
    pad = pipe.vocabulary.specials["pad"]
    ids = torch.tensor([r + [pad] * (length - len(r)) for r in rows])
    targets = torch.tensor([r[1:] + [IGNORE] * (length - len(r) + 1) for r in rows])
    image = pipe.vocabulary.code_mask("image")
    return _HeldOut(input_ids=ids, targets=targets, image_targets=image[targets.clamp(min=0)] & (targets != IGNORE))


@torch.no_grad()
def _evaluate(model: ChameleonModel, held_out: _HeldOut) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(held_out.input_ids.to(device)).logits
    finally:
        model.train(was_training)
    assert logits is not None
    losses = per_token_cross_entropy(logits.float().flatten(0, 1), held_out.targets.to(device).flatten(), IGNORE)
    counted = (held_out.targets != IGNORE).flatten().to(device)
    image = held_out.image_targets.flatten().to(device)
    return {
        "text": float(losses[counted & ~image].mean()),
        "image": float(losses[image].mean()),
    }


class _Evaluator(Callback):
    def __init__(self, model: ChameleonModel, held_out: _HeldOut, every: int, steps: int) -> None:
        self.model, self.held_out, self.every, self.steps = model, held_out, every, steps
        self.points: list[tuple[int, dict[str, float]]] = [(0, _evaluate(model, held_out))]

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        done = int(metrics["step"]) + 1
        if done % self.every == 0 or done == self.steps:
            self.points.append((done, _evaluate(self.model, self.held_out)))


def _train_arm(pipe: Pipeline, arm: str, config: MoTLabConfig, data: Any, held_out: _HeldOut) -> LossCurve:
    stability = [*pipe.config.stability]
    if arm == "mot":
        stability.append(ComponentSpec(name="mot", options={"untie": list(config.untie)}))
    pipe.config = attrs.evolve(pipe.config, stability=tuple(stability))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = pipe.build_model().to(config.plan.device)
        pipe.model = model
        evaluator = _Evaluator(model, held_out, config.eval_every, config.total_steps)
        started = time.perf_counter()
        pipe.train(data, steps=config.total_steps, out_dir=None, resume=False, callbacks=[evaluator])
        seconds = time.perf_counter() - started
    steps = tuple(step for step, _ in evaluator.points)
    return LossCurve(
        arm=arm,
        steps=steps,
        text=tuple(point["text"] for _, point in evaluator.points),
        image=tuple(point["image"] for _, point in evaluator.points),
        parameters=sum(p.numel() for p in model.parameters()),
        seconds=seconds,
    )


def run_mot_lab(
    out: str | os.PathLike[str],
    config: MoTLabConfig | None = None,
    *,
    say: Callable[[str], None] = lambda message: None,
) -> MoTLabReport:
    """Build the demo's world under ``out``, train both arms, write ``report.json`` and ``mot.png`` there."""
    config = config or MoTLabConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    world = prepare_shapes_world(out, config.plan, say=say)
    held_out = _held_out(world.pipe, config)
    base = world.pipe.config
    curves = []
    for arm in ARMS:
        world.pipe.config = base
        say(f"training the {arm} transformer ({config.total_steps} steps)")
        curve = _train_arm(world.pipe, arm, config, world.data, held_out)
        say(f"{arm}: held-out text loss {curve.text[-1]:.4f}, image loss {curve.image[-1]:.4f}")
        curves.append(curve)
    report = MoTLabReport(config=config, curves=tuple(curves), seconds=time.perf_counter() - started)
    report.save(out)
    return report
