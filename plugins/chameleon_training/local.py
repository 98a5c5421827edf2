"""The ``local`` trainer: one process, AdamW, warm-up + decay, clipping, accumulation, bf16 autocast,
atomic checkpoints with exact resume, and a guard against non-finite steps."""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.utils.checkpoint
from tqdm import tqdm

import chameleon_sdk
from chameleon_sdk import BatchSource, ConfigError, TrainingError, TrainResult, call_callbacks
from chameleon_training.options import TrainerOptions
from chameleon_training.schedule import learning_rate
from chameleon_training.state import latest_checkpoint, load_checkpoint, save_checkpoint


def fast_bf16_available(device: torch.device) -> bool:
    """Whether bf16 autocast pays here: a bf16 GPU, or a CPU with AMX.

    Measured: on an AMX CPU a bf16-autocast train step of a 43M-parameter model took 0.46x the fp32
    time; on an AVX512-BF16 CPU without AMX (AMD EPYC) ``benchmarks/train_step.py`` measured no gain
    (0.75-1.09x, noisy), so such CPUs stay in fp32 under ``precision="auto"``.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags.split()


def resolve_precision(options: TrainerOptions, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full fp32."""
    if options.precision == "fp32":
        return None
    if options.precision == "bf16" or fast_bf16_available(device):
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
    """Recompute each block in the backward pass (the state-dict keys do not change)."""
    for block in getattr(model, "layers", []):
        forward = block.forward

        def checkpointed(*args: Any, _forward: Any = forward) -> Any:
            return torch.utils.checkpoint.checkpoint(_forward, *args, use_reentrant=False)

        block.forward = functools.wraps(forward)(checkpointed)


class LocalTrainer:
    """Single-process training loop (CPU or one GPU)."""

    def __init__(self, options: TrainerOptions | None = None) -> None:
        self.options = options or TrainerOptions()

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
        o = self.options
        if steps <= 0:
            raise ConfigError(f"steps must be > 0, got {steps}")
        out_dir = Path(out_dir) if out_dir is not None else None
        device = next(model.parameters()).device
        autocast_dtype = resolve_precision(o, device)
        apply_partial_training(model, o)
        decay = 0.0 if o.anole else o.weight_decay  # decoupled decay would move the frozen head rows
        optimizer = torch.optim.AdamW(parameter_groups(model, decay), lr=o.lr, betas=o.betas, eps=o.eps)
        if o.activation_checkpointing:
            enable_activation_checkpointing(model)
        forward = torch.compile(model) if o.compile else model

        start_step, resumed_from, skipped = 0, None, 0
        if resume and out_dir is not None and (found := latest_checkpoint(out_dir)) is not None:
            step, path = found
            state = load_checkpoint(path, model, optimizer)
            start_step = resumed_from = step
            skipped = int(state.get("skipped", 0))
        call_callbacks(
            callbacks,
            "on_train_start",
            {
                "out_dir": out_dir,
                "steps": steps,
                "start_step": start_step,
                "trainer": "local",
                "precision": str(autocast_dtype or torch.float32),
            },
        )
        params = [p for g in optimizer.param_groups for p in g["params"]]
        nonfinite_in_row = 0
        loss_value = math.nan
        checkpoint: Path | None = None
        started = time.perf_counter()
        bar = tqdm(range(start_step, steps), initial=start_step, total=steps, disable=not o.progress, unit="step")
        for step in bar:
            step_start = time.perf_counter()
            lr = learning_rate(o, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            batches = [data.batch_at(step, micro) for micro in range(o.grad_accum)]
            total_tokens = sum(b.num_tokens for b in batches)
            loss_sum = torch.zeros((), dtype=torch.float32, device=device)
            terms: dict[str, float] = {}
            stats: dict[str, Any] = {}
            for batch in batches:
                ids = batch.input_ids.to(device)
                autocast = (
                    torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
                )
                with autocast:
                    out = forward(ids, document_ids=batch.document_ids.to(device))
                result = model.loss(out.logits, batch.targets.to(device))
                weight = batch.num_tokens / max(total_tokens, 1)  # the exact mean over all micro-batches
                (result.loss * weight).backward()
                loss_sum += result.loss.detach() * weight
                for name, value in result.terms.items():
                    terms[name] = terms.get(name, 0.0) + float(value) * weight
                stats = {k: v.tolist() for k, v in out.stats.items()}
            grad_norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip if o.grad_clip > 0 else float("inf"))
            loss_value = float(loss_sum)
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
                **terms,
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
            if nonfinite_in_row >= o.max_nonfinite:
                raise TrainingError(
                    f"{nonfinite_in_row} non-finite steps in a row (loss {loss_value}, grad norm {float(grad_norm)}) "
                    f"at step {step}: lower the learning rate or enable qk-norm / z-loss"
                )
            done = step + 1
            if out_dir is not None and (done == steps or (o.checkpoint_every and done % o.checkpoint_every == 0)):
                meta = {
                    "step": done,
                    "trainer": "local",
                    "options": chameleon_sdk.to_dict(o),
                    "sdk_version": chameleon_sdk.__version__,
                    "plugins": [r.to_json() for r in chameleon_sdk.available_plugins()],
                }
                checkpoint = save_checkpoint(
                    out_dir, done, model, optimizer, {"skipped": skipped}, meta, keep_last=o.keep_last
                )
                call_callbacks(callbacks, "on_checkpoint", done, checkpoint)
        bar.close()
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
