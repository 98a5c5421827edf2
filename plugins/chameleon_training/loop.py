"""The one training loop that every built-in trainer runs.

``local``, ``ddp`` and ``fsdp`` differ only in their :class:`Strategy`: where the model lives and
how it is wrapped, which rows of each global batch a process computes, how gradients and metrics
are reduced across processes, and how checkpoints are written and read. The base class is the
one-process strategy of ``local``.

The per-step maths is the same for all: a step's loss is the mean over every counted token of the
global batch (``grad_accum`` micro-batches of ``batch_size`` rows). A process adds up its rows'
share, ``loss(rows) * tokens(rows) / tokens(global batch)``, scaled by the number of processes
because data-parallel gradient reduction averages over them; so one process and N processes take
the same optimizer step up to float rounding.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.utils.checkpoint

import chameleon_sdk
from chameleon_sdk import ConfigError, TrainingError, TrainResult, plugin_api
from chameleon_sdk.plugin_api import Batch, BatchSource, call_callbacks
from chameleon_training.options import TrainerOptions
from chameleon_training.schedule import learning_rate
from chameleon_training.state import latest_checkpoint, load_checkpoint, save_checkpoint


def resolve_precision(options: TrainerOptions, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if options.precision == "fp32":
        return None
    # autocast pays where the hardware computes bf16 (measured: docs/benchmarks.md, "Training step")
    if options.precision == "bf16" or plugin_api.native_bfloat16(device):
        return torch.bfloat16
    return None


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay 2-D weights (matmuls, embeddings); never norms or biases."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def apply_partial_training(model: torch.nn.Module, options: TrainerOptions) -> None:
    """Freeze parameters by name pattern; for Anole, train only the image-code rows of the head."""
    for name, param in model.named_parameters():
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in options.freeze):
            param.requires_grad_(False)
    if not options.anole:
        if not any(param.requires_grad for param in model.parameters()):
            raise ConfigError(f"trainer option freeze={list(options.freeze)} freezes every parameter: nothing to train")
        return
    vocabulary = getattr(model, "vocabulary", None)
    if vocabulary is None or "image" not in vocabulary.blocks:
        raise ConfigError("trainer option anole needs a model whose vocabulary has an 'image' block")
    for param in model.parameters():
        param.requires_grad_(False)
    head = model.output.weight
    head.requires_grad_(True)
    rows = vocabulary.code_mask("image").to(head.device)[: head.shape[0]].unsqueeze(1).to(head.dtype)
    head.register_hook(lambda grad: grad * rows)  # other rows get zero gradient, so Adam leaves them


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block's activations in the backward pass.

    torch's composable ``checkpoint`` is applied to every block, as torchtitan applies activation
    checkpointing per block: it hooks the module's forward instead of wrapping or patching it, so
    parameter names, state-dict keys (and an adapter's keys) stay as they were, every argument of
    the block's forward passes through, and it composes with FSDP2's ``fully_shard`` hooks.
    Applying it twice is a no-op.
    """
    from torch.distributed._composable import checkpoint
    from torch.distributed._composable.contract import _get_registry

    for block in getattr(model, "layers", []):
        if "checkpoint" not in (_get_registry(block) or {}):
            checkpoint(block)


@attrs.frozen(kw_only=True)
class CheckpointRequest:
    """A checkpoint to write, beyond the model and optimizer: where, which step, and what else."""

    out_dir: Path
    step: int
    extra: dict[str, Any]  # trainer state (counters) saved next to the optimizer state
    meta: dict[str, Any]  # meta.json: step, trainer, options, versions
    keep_last: int


class Strategy:
    """How the loop places, wraps, reduces and checkpoints: here, one process and the model as it is.

    Distributed strategies override the methods below; the loop calls them in this order:
    :meth:`setup`, :meth:`prepare`, :meth:`wrap`, then per step :meth:`rows`, :meth:`grad_sync`,
    :meth:`reduce_sum`, :meth:`clip_grad_norm`, and :meth:`save`/:meth:`load` for checkpoints;
    :meth:`finish` and :meth:`close` at the end.
    """

    name = "local"
    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """The process that reports progress, calls callbacks and writes run files."""
        return self.rank == 0

    def setup(self, options: TrainerOptions) -> None:
        """Join the process group (nothing to join here)."""

    def close(self) -> None:
        """Leave what :meth:`setup` joined."""

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module whose parameters the optimizer steps (here: ``model`` itself, where it is)."""
        return model

    def device(self, module: torch.nn.Module) -> torch.device:
        return next(module.parameters()).device

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """What the forward pass calls (a data-parallel wrapper, or ``module``)."""
        return module

    def rows(self, batch: Batch) -> Batch:
        """This process's rows of a micro-batch of the global batch."""
        return batch

    def grad_sync(self, wrapped: torch.nn.Module, enabled: bool) -> contextlib.AbstractContextManager[Any]:
        """A context for one micro-batch's backward: reduce gradients only when ``enabled`` (the last)."""
        return contextlib.nullcontext()

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over processes."""
        return values

    def clip_grad_norm(self, params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm to ``max_norm``; return the norm before clipping."""
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if hasattr(norm, "full_tensor"):  # a DTensor: the norm of sharded gradients
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
        return norm

    def latest(self, out_dir: Path) -> tuple[int, Path] | None:
        return latest_checkpoint(out_dir)

    def save(self, request: CheckpointRequest, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Path:
        r = request
        return save_checkpoint(r.out_dir, r.step, module, optimizer, r.extra, r.meta, keep_last=r.keep_last)

    def load(self, path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return load_checkpoint(path, module, optimizer)

    def finish(self, model: torch.nn.Module, module: torch.nn.Module) -> None:
        """Leave the trained weights in ``model`` (here they already are)."""


class LoopTrainer:
    """A trainer plugin: the shared loop under the strategy :meth:`strategy` returns."""

    def __init__(self, options: TrainerOptions | None = None) -> None:
        self.options = options or TrainerOptions()

    def strategy(self) -> Strategy:
        return Strategy()

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
        if steps <= 0:
            raise ConfigError(f"steps must be > 0, got {steps}")
        strategy = self.strategy()
        strategy.setup(self.options)
        try:
            return _run(strategy, self.options, model, data, steps, out_dir, callbacks, resume)
        finally:
            strategy.close()


def check_resumable(out_dir: Path, step: int, steps: int) -> None:
    """Refuse a run with nothing left to train: its folder's newest checkpoint is at ``steps`` or beyond."""
    if step == steps:
        raise TrainingError(
            f"the run in {str(out_dir)!r} already finished: its newest checkpoint is step {step} of steps={steps}, "
            f"so there is nothing to train. To train it further, raise steps above {step} (it is extended; "
            "see docs/training.md); to start over, use another out_dir or resume=false"
        )
    if step > steps:
        raise TrainingError(
            f"the run in {str(out_dir)!r} is at step {step}, past steps={steps}: nothing to train. Set steps "
            f"above {step} to extend it, or train in another out_dir (or with resume=false) to start over"
        )


def _run(
    strategy: Strategy,
    options: TrainerOptions,
    model: torch.nn.Module,
    data: BatchSource,
    steps: int,
    out_dir: Path | None,
    callbacks: Sequence[Any],
    resume: bool,
) -> TrainResult:
    out_dir = Path(out_dir) if out_dir is not None else None
    callbacks = callbacks if strategy.is_main else ()
    apply_partial_training(model, options)
    module = strategy.prepare(model)
    device = strategy.device(module)
    autocast_dtype = resolve_precision(options, device)
    if options.activation_checkpointing:
        enable_activation_checkpointing(module)
    wrapped = strategy.wrap(module)
    decay = 0.0 if options.anole else options.weight_decay  # decoupled decay would move the frozen head rows
    # fused: one kernel per step instead of a loop over tensors (a 42M-parameter step: 16 ms vs 110 ms on CPU)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(
        parameter_groups(module, decay), lr=options.lr, betas=options.betas, eps=options.eps, fused=fused
    )
    forward = torch.compile(wrapped) if options.compile else wrapped

    start_step, resumed_from, skipped = 0, None, 0
    schedule_steps = steps  # the total the learning-rate schedule was planned for
    if resume and out_dir is not None and (found := strategy.latest(out_dir)) is not None:
        step, path = found
        check_resumable(out_dir, step, steps)
        state = strategy.load(path, module, optimizer)
        start_step = resumed_from = step
        skipped = int(state.get("skipped", 0))
        schedule_steps = int(state.get("schedule_steps", steps))
        if schedule_steps != steps:
            warnings.warn(
                f"{out_dir}: the run was planned for {schedule_steps} steps and now trains to {steps}: the "
                f"learning-rate schedule continues as first planned (steps past {schedule_steps} use its final "
                "learning rate); train in a new out_dir to plan a new schedule",
                UserWarning,
                stacklevel=2,
            )
    call_callbacks(
        callbacks,
        "on_train_start",
        {
            "out_dir": out_dir,
            "steps": steps,
            "start_step": start_step,
            "trainer": strategy.name,
            "model": module,
            "world_size": strategy.world_size,
            "precision": str(autocast_dtype or torch.float32),
        },
    )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    nonfinite_in_row = 0
    loss_value = math.nan
    checkpoint: Path | None = None
    started = time.perf_counter()
    bar = plugin_api.progress_bar(
        total=steps, initial=start_step, unit="step", desc="train", enabled=options.progress and strategy.is_main
    )
    for step in range(start_step, steps):
        step_start = time.perf_counter()
        lr = learning_rate(options, step, schedule_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        module.train()
        batches = [data.batch_at(step, micro) for micro in range(options.grad_accum)]
        total_tokens = sum(b.num_tokens for b in batches)
        sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), dtype=torch.float32, device=device)}
        stats: dict[str, Any] = {}
        for micro, batch in enumerate(strategy.rows(b) for b in batches):
            autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with strategy.grad_sync(wrapped, micro == options.grad_accum - 1):
                with autocast:  # the loss inside forward: in chunks, without [B, T, V] logits (model.chunked_loss)
                    out = forward(
                        batch.input_ids.to(device),
                        document_ids=batch.document_ids.to(device),
                        targets=batch.targets.to(device),
                    )
                result = out.loss
                share = batch.num_tokens / max(total_tokens, 1)  # exact token mean over the global batch
                (result.loss * (share * strategy.world_size)).backward()
            sums["loss"] += result.loss.detach().float() * share
            for name, value in result.terms.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float() * share
            stats = {k: v.tolist() for k, v in out.stats.items()}
        grad_norm = strategy.clip_grad_norm(params, options.grad_clip if options.grad_clip > 0 else float("inf"))
        totals = dict(zip(sums, strategy.reduce_sum(torch.stack(list(sums.values()))).tolist()))
        loss_value = totals.pop("loss")
        if math.isfinite(loss_value) and bool(torch.isfinite(grad_norm)):
            optimizer.step()
            nonfinite_in_row = 0
        else:
            skipped += 1
            nonfinite_in_row += 1
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - step_start
        metrics = {
            "step": step,
            "loss": loss_value,
            **totals,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": total_tokens,
            "tokens_per_s": total_tokens / elapsed if elapsed > 0 else 0.0,
            "skipped_steps": skipped,
            "stage": data.stage(step),
            **dict(data.counters),
            **stats,
        }
        call_callbacks(callbacks, "on_step_end", metrics)
        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
        bar.update(1)
        if nonfinite_in_row >= options.max_nonfinite:
            raise TrainingError(
                f"{nonfinite_in_row} non-finite steps in a row (loss {loss_value}, grad norm {float(grad_norm)}) "
                f"at step {step}: lower the learning rate or enable qk-norm / z-loss"
            )
        done = step + 1
        if out_dir is not None and (
            done == steps or (options.checkpoint_every and done % options.checkpoint_every == 0)
        ):
            meta = {
                "step": done,
                "trainer": strategy.name,
                "world_size": strategy.world_size,
                "options": chameleon_sdk.to_dict(options),
                "sdk_version": chameleon_sdk.__version__,
                "plugins": [r.to_json() for r in chameleon_sdk.available_plugins()],
            }
            request = CheckpointRequest(
                out_dir=out_dir,
                step=done,
                extra={"skipped": skipped, "schedule_steps": schedule_steps},
                meta=meta,
                keep_last=options.keep_last,
            )
            checkpoint = strategy.save(request, module, optimizer)
            call_callbacks(callbacks, "on_checkpoint", done, checkpoint)
    bar.close()
    strategy.finish(model, module)
    result = TrainResult(
        steps=steps,
        final_loss=loss_value,
        skipped_steps=skipped,
        seconds=time.perf_counter() - started,
        checkpoint=checkpoint,
        resumed_from=resumed_from,
    )
    call_callbacks(callbacks, "on_train_end", result)
    return result
