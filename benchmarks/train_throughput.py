"""Training throughput of the built-in trainers: ``local`` against transformers, and 1 vs 2 processes.

Config: the train-step benchmark's (``train_step.py``: vocab 16,384, hidden 512, 8 layers, 8 heads,
intermediate 1,376, batch 4 x 512 tokens); ``--small`` is its small config, and ``--hidden``,
``--layers``, ``--heads``, ``--intermediate``, ``--vocab``, ``--batch`` and ``--seq`` shrink it
further. Both sides start from the same random transformers checkpoint (ours loads it through the
``hf`` format) and train on the same fixed batch in fp32 (``--precision bf16``: autocast on both).

Measured, in one run:

1. ``local``: the whole trainer (``LocalTrainer.fit``: learning-rate schedule, forward with the
   packed-document mask, fp32 loss, backward, global grad-norm clip 1.0, AdamW, metrics) against
   transformers' ``ChameleonForConditionalGeneration`` in a plain loop doing the same (forward with
   labels, backward, clip 1.0, AdamW with the same hyper-parameters). Tokens/s are medians over the
   timed steps after ``--warmup`` steps, the two sides alternating in ``--rounds`` blocks. Ratio:
   ours/transformers (above 1: we are faster).
2. Peak memory of one training run of each side in a fresh child process: on CPU the growth of the
   peak RSS (``VmHWM``) over two steps, with glibc told to return freed blocks at once (as in
   ``train_step.py``); on CUDA ``torch.cuda.max_memory_allocated`` minus the memory before.
3. ``ddp`` and ``fsdp`` on CPU (gloo) with 1 and with 2 processes launched by ``torchrun``, the
   same global batch split over the processes and ``--threads`` shared among them (so 2 processes
   get half the threads each): tokens/s of the whole group and the largest per-process peak RSS
   growth. ``--no-distributed`` skips this.
4. MFU with one documented formula (the one of ``train_step.py``): ``6 N + 6 L H Dh T`` FLOPs per
   trained token (N: parameters in matmuls, the embedding table excluded; L layers, H heads, Dh
   head_dim, T sequence length), divided by a measured peak (a square matmul on the same threads or
   GPU, same dtype).

    .venv/bin/python benchmarks/train_throughput.py [--small] [--steps 5] [--threads 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from hf_reference import FULL, SMALL, text_ids, write_checkpoint
from train_step import flops_per_token, load, rss_bytes, timed

import chameleon_sdk as cs
from chameleon_sdk.training import Batch

LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.95), 1e-5, 0.1, 1.0
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


class FixedBatch:
    """A batch source serving one batch for every step (one document per row)."""

    def __init__(self, ids: torch.Tensor) -> None:
        targets = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
        self.batch = Batch(input_ids=ids, targets=targets, document_ids=torch.zeros_like(ids))
        self.counters: dict[str, Any] = {}

    def stage(self, step: int) -> int:
        return 1

    def batch_at(self, step: int, micro: int = 0) -> Batch:
        return self.batch


class StepTimes(cs.Callback):
    """Seconds of each step, as the trainer measured them (tokens / tokens_per_s)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        self.seconds.append(metrics["tokens"] / metrics["tokens_per_s"])


def trainer_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "lr": LR,
        "betas": BETAS,
        "eps": EPS,
        "weight_decay": WEIGHT_DECAY,
        "grad_clip": CLIP,
        "schedule": "constant",
        "precision": args.precision,
        "progress": False,
    }


def build_trainer(name: str, args: argparse.Namespace) -> Any:
    return cs.get_registry().build("trainer", name, trainer_options(args))


def run_ours(trainer: Any, model: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[float]:
    """Step seconds of ``steps`` steps of a trainer plugin (rank 0 records them)."""
    times = StepTimes()
    trainer.fit(model, FixedBatch(ids), steps=steps, out_dir=None, callbacks=[times])
    return times.seconds


def theirs_step(model: torch.nn.Module, ids: torch.Tensor, precision: str) -> Callable[[], float]:
    """One step of transformers' model doing the trainer's work: forward, backward, clip, AdamW."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    device = ids.device.type

    def step() -> float:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss  # transformers shifts the labels itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def shape_of(args: argparse.Namespace) -> dict[str, int]:
    shape = dict(SMALL if args.small else FULL)
    for key in ("vocab", "hidden", "layers", "heads", "intermediate", "batch", "seq"):
        if getattr(args, key) is not None:
            shape[key] = getattr(args, key)
    return shape


def measured_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a square matmul on ``device`` (the denominator of MFU)."""
    n = n if device.type == "cuda" else 1536
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)

    def matmul() -> None:
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    matmul()
    return 2 * n**3 / min(timed(matmul) for _ in range(repeats))


# -- child processes -------------------------------------------------------------------------------


def memory_child(args: argparse.Namespace) -> None:
    """A fresh process: the peak memory growth of two training steps of one side, as JSON."""
    device = torch.device(args.device)
    shape = shape_of(args)
    model = load("ours" if args.child == "memory-ours" else "theirs", args.checkpoint).to(device)
    ids = text_ids(shape["vocab"], shape["batch"], shape["seq"]).to(device)
    with torch.no_grad():
        sum(float(p.sum()) for p in model.parameters())  # fault every (possibly mmapped) weight in
    trainer = build_trainer("local", args)  # plugins loaded before the measurement
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # so is torch._dynamo, which AdamW imports lazily
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes()
    if args.child == "memory-ours":
        run_ours(trainer, model, ids, 2)
    else:
        step = theirs_step(model, ids, args.precision)
        step()
        step()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else rss_bytes("VmHWM")
    print(json.dumps({"growth": peak - before}))


def distributed_child(args: argparse.Namespace) -> None:
    """One torchrun worker: train with ``args.trainer`` and report the group's tokens/s and memory."""
    import torch.distributed as dist

    dist.init_process_group("gloo")  # ours, so the trainer leaves it open for the gather below
    shape = shape_of(args)
    model = load("ours", args.checkpoint)
    ids = text_ids(shape["vocab"], shape["batch"], shape["seq"])
    trainer = build_trainer(args.trainer, args)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # torch._dynamo imported before the measurement
    before = rss_bytes()
    seconds = run_ours(trainer, model, ids, args.warmup + args.steps)
    growth = rss_bytes("VmHWM") - before
    growths: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(growths, growth)
    if dist.get_rank() == 0:
        step = statistics.median(seconds[args.warmup :])
        print(json.dumps({"tokens_per_s": shape["batch"] * shape["seq"] / step, "peak_growth": max(growths)}))
    dist.destroy_process_group()


def child_command(args: argparse.Namespace, child: str, checkpoint: Path) -> list[str]:
    command = [__file__, "--child", child, "--checkpoint", str(checkpoint), "--device", args.device]
    command += ["--precision", args.precision, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for key, value in shape_of(args).items():
        command += [f"--{key}", str(value)]
    return command


def last_json(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def peak_memory(args: argparse.Namespace, side: str, checkpoint: Path) -> int:
    env = {**MALLOC_ENV, "OMP_NUM_THREADS": str(args.threads)}
    return int(last_json([sys.executable, *child_command(args, f"memory-{side}", checkpoint)], env)["growth"])


def distributed_run(args: argparse.Namespace, trainer: str, procs: int, checkpoint: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    command += [*child_command(args, "distributed", checkpoint), "--trainer", trainer]
    env = {**MALLOC_ENV, "OMP_NUM_THREADS": str(max(1, args.threads // procs))}
    return last_json(command, env)


# -- the benchmark ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="train_step.py's small config")
    for key in ("vocab", "hidden", "layers", "heads", "intermediate", "batch", "seq"):
        parser.add_argument(f"--{key}", type=int, help=f"override the config's {key}")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps at the start of each block")
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks of ours and theirs")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all (shared by the processes)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the distributed part always runs on CPU)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--no-distributed", action="store_true", help="skip the ddp/fsdp torchrun runs")
    parser.add_argument("--child", choices=["memory-ours", "memory-theirs", "distributed"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trainer", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is None:
        torch.set_num_threads(args.threads)
    if args.child == "distributed":
        distributed_child(args)
        return
    if args.child is not None:
        memory_child(args)
        return

    device = torch.device(args.device)
    shape = shape_of(args)
    tokens = shape["batch"] * shape["seq"]
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:  # each part prints as soon as it is measured
        checkpoint = Path(tmp) / "hf"
        write_checkpoint(shape, checkpoint)
        ours, theirs = load("ours", checkpoint).to(device), load("theirs", checkpoint).to(device)
        ids = text_ids(shape["vocab"], shape["batch"], shape["seq"]).to(device)
        step = theirs_step(theirs, ids, args.precision)
        local = build_trainer("local", args)
        mine: list[float] = []
        hf: list[float] = []
        for _ in range(args.rounds):  # alternate blocks so that drift hits both sides alike
            mine += run_ours(local, ours, ids, args.warmup + args.steps)[args.warmup :]
            for i in range(args.warmup + args.steps):
                seconds = timed(step)
                if i >= args.warmup:
                    hf.append(seconds)
        del theirs, step
        ours_tps, theirs_tps = tokens / statistics.median(mine), tokens / statistics.median(hf)
        flops = flops_per_token(ours, shape["seq"])
        peak = measured_peak(device, dtype)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
        print(f"train throughput, config {shape}, {args.precision}, {where}")
        print(f"  median step over {args.rounds} x {args.steps} timed steps per side (after {args.warmup} warm-up)")
        print(
            f"FLOPs per token (6N + 6 L H Dh T): {flops / 1e6:.1f} MFLOP; "
            f"measured {args.precision} matmul peak {peak / 1e9:.1f} GFLOP/s"
        )
        print(f"local trainer      {ours_tps:10.0f} tok/s   MFU {ours_tps * flops / peak:6.1%}")
        print(f"transformers loop  {theirs_tps:10.0f} tok/s   MFU {theirs_tps * flops / peak:6.1%}")
        print(f"ratio local/transformers (tokens/s, above 1: faster): {ours_tps / theirs_tps:.3f}", flush=True)
        if not args.no_memory:
            mib = {side: peak_memory(args, side, checkpoint) / 2**20 for side in ("ours", "theirs")}
            kind = "CUDA max allocated" if device.type == "cuda" else "RSS growth"
            print(
                f"peak training memory ({kind}): local {mib['ours']:.0f} MiB, transformers {mib['theirs']:.0f} MiB, "
                f"ratio {mib['ours'] / mib['theirs']:.3f}",
                flush=True,
            )
        if args.no_distributed:
            return
        cpu_peak = measured_peak(torch.device("cpu"), dtype) if device.type == "cuda" else peak
        print(f"data parallel on CPU (gloo), {args.threads} threads shared by the processes, same global batch:")
        for trainer in ("ddp", "fsdp"):
            base = None
            for procs in (1, 2):
                run = distributed_run(args, trainer, procs, checkpoint)
                base = base or run["tokens_per_s"]
                print(
                    f"  {trainer:<4} x{procs}  {run['tokens_per_s']:10.0f} tok/s"
                    f"  ({run['tokens_per_s'] / base:.2f} x 1 process)"
                    f"  MFU {run['tokens_per_s'] * flops / cpu_peak:6.1%}"
                    f"  peak RSS growth per process {run['peak_growth'] / 2**20:.0f} MiB",
                    flush=True,
                )


if __name__ == "__main__":
    main()
