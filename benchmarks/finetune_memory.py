"""Peak memory (and speed) of real fine-tuning steps: full fine-tuning vs LoRA vs LoRA + activation checkpointing.

Each mode runs in a fresh child process that builds the model (random weights), attaches the
adapter, and trains ``--steps`` steps with the ``local`` trainer on random tokens
(``batch x seq``). The figure is what training adds on top of the loaded weights:

- CPU: the growth of the resident set, peak RSS (``VmHWM``) minus RSS after the model was built and
  every weight touched; glibc is told to hand large blocks back to the OS at once (a fixed mmap
  threshold), so the peak RSS follows the peak of live tensors rather than the allocator's caching.
- CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the first step; the
  absolute peak (weights included) is printed too.

Weights are fp32 on CPU and bf16 on CUDA (the trainer's precision follows). Tokens/s is the median
of the steps after the first. The expected figures of ``chameleon plan``
(:mod:`chameleon_sdk.finetune_plan`: optimizer state + gradients + activations) are printed beside
the measured ones with their ratio. On CPU the resident set also holds memory that is no tensor
(allocator arenas, thread pools); it is measured in the same run as the growth of the same mode at
the tiny shape less that shape's plan, and taken off before the ratio.

    python3 finetune_memory.py --shape tiny                          # CPU smoke run (seconds)
    python3 finetune_memory.py --shape small                         # CPU, large enough to compare with the plan
    python3 finetune_memory.py --shape 7b --device cuda              # the paper's 7B shape: LoRA + checkpointing

Run it from benchmarks/ (or anywhere: it needs only torch, peft and chameleon_sdk importable).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import torch

import chameleon_sdk as cs
from chameleon_sdk import plugin_api

#: shape -> (model config fields or a preset name, batch, seq)
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {"model": dict(dim=64, num_layers=2, num_heads=4, vocab_size=512, ffn_dim=192), "batch": 2, "seq": 64},
    "small": {"model": dict(dim=256, num_layers=4, num_heads=4, vocab_size=4096, ffn_dim=768), "batch": 4, "seq": 256},
    "7b": {"model": "7b", "batch": 1, "seq": 2048},
}
MODES = ("full", "lora", "lora+ac")
LORA_TARGETS = ("attention", "mlp")
GIB = 1024**3


def model_config(shape: str) -> tuple[cs.ModelConfig, tuple[Any, ...]]:
    spec = SHAPES[shape]
    if isinstance(spec["model"], str):
        preset = cs.MODEL_PRESETS[spec["model"]]
        return preset.model, preset.stability
    seq = spec["seq"]
    return cs.ModelConfig(max_seq_len=seq, **spec["model"]), ("qk-norm", "z-loss")


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (``VmRSS``) or its high-water mark (``VmHWM``), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


class RandomTokens:
    """The same random batch at every step (a BatchSource)."""

    def __init__(self, vocab: int, batch: int, seq: int) -> None:
        ids = torch.randint(0, vocab, (batch, seq + 1), generator=torch.Generator().manual_seed(0))
        self.batch = plugin_api.Batch(
            input_ids=ids[:, :-1], targets=ids[:, 1:], document_ids=torch.zeros(batch, seq, dtype=torch.long)
        )

    def batch_at(self, step: int, micro: int = 0) -> plugin_api.Batch:
        return self.batch

    def stage(self, step: int) -> int:
        return 1

    @property
    def counters(self) -> dict[str, Any]:
        return {}


class StepTimes:
    """A callback keeping each step's tokens/s."""

    def __init__(self) -> None:
        self.tokens_per_s: list[float] = []

    def on_step_end(self, metrics: dict[str, Any]) -> None:
        self.tokens_per_s.append(float(metrics["tokens_per_s"]))


def run_child(mode: str, shape: str, device_name: str, steps: int, rank: int) -> dict[str, Any]:
    """In a fresh process: train ``steps`` steps in ``mode`` and return the measured figures."""
    torch.manual_seed(0)
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    config, stability = model_config(shape)
    batch, seq = SHAPES[shape]["batch"], SHAPES[shape]["seq"]
    with device:
        model = cs.build_model(config, stability=stability)
    if cuda:
        model = model.to(torch.bfloat16)
    if mode != "full":
        cs.attach_adapter(model, {"name": "lora", "options": {"rank": rank, "targets": list(LORA_TARGETS)}})
    trainer = cs.get_registry().build(
        "trainer",
        "local",
        {
            "lr": 1e-4,
            "precision": "bf16" if cuda else "fp32",
            "activation_checkpointing": mode == "lora+ac",
            "progress": False,
        },
    )
    data = RandomTokens(config.vocab_size, batch, seq)
    times = StepTimes()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with torch.no_grad():
            sum(float(p.sum()) for p in model.parameters())  # fault every weight in
        before = rss_bytes()
    started = time.perf_counter()
    trainer.fit(model, data, steps=steps, out_dir=None, callbacks=[times])
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = rss_bytes("VmHWM")
    seconds = time.perf_counter() - started
    later = times.tokens_per_s[1:] or times.tokens_per_s
    return {
        "mode": mode,
        "before": before,
        "peak": peak,
        "growth": peak - before,
        "trainable": trainable,
        "tokens_per_s": statistics.median(later),
        "seconds": seconds,
    }


def measure(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--shape", args.shape]
    command += ["--device", args.device, "--steps", str(args.steps), "--rank", str(args.rank)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.stderr.write(run.stderr[-4000:])
        raise SystemExit(f"the {mode} child failed (exit {run.returncode})")
    return json.loads(run.stdout.strip().splitlines()[-1])


def planned(mode: str, shape: str, args: argparse.Namespace) -> float | None:
    """The plan's expected growth (what training adds to the weights) in bytes, if the plan exists."""
    try:
        from chameleon_sdk.finetune_plan import plan_memory
    except ImportError:
        return None
    config, stability = model_config(shape)
    cuda = args.device.startswith("cuda")
    estimate = plan_memory(
        config,
        mode=mode,
        batch=SHAPES[shape]["batch"],
        seq=SHAPES[shape]["seq"],
        rank=args.rank,
        targets=LORA_TARGETS,
        stability=stability,
        bf16=cuda,
        device_type="cuda" if cuda else "cpu",
    )
    return float(estimate.training_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (targets: attention and MLP projections)")
    parser.add_argument("--modes", nargs="+", choices=MODES, help="default: all; the 7b shape: lora+ac")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_child(args.child, args.shape, args.device, args.steps, args.rank)))
        return
    modes = args.modes or (["lora+ac"] if args.shape == "7b" else list(MODES))
    batch, seq = SHAPES[args.shape]["batch"], SHAPES[args.shape]["seq"]
    what = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "CPU peak RSS"
    print(
        f"shape {args.shape}, batch {batch} x {seq} tokens, {args.steps} steps, {args.device}; growth = {what} - before"
    )
    columns = [("mode", 8), ("trainable", 12), ("growth GiB", 11), ("peak GiB", 9), ("tok/s", 9)]
    columns += [("plan GiB", 9), ("meas/plan", 9)]
    print(" ".join(f"{name:<{width}}" if name == "mode" else f"{name:>{width}}" for name, width in columns))
    results = {}
    for mode in modes:
        r = measure(mode, args)
        results[mode] = r
        plan = planned(mode, args.shape, args)
        if plan and not args.device.startswith("cuda") and args.shape != "tiny":
            # RSS holds more than tensors (allocator arenas, thread pools): the same mode's growth at the
            # tiny shape, less that shape's plan, is that overhead, measured in this run and taken off
            tiny = measure(mode, argparse.Namespace(**{**vars(args), "shape": "tiny"}))
            r["overhead"] = tiny["growth"] - planned(mode, "tiny", args)
        tensors = r["growth"] - r.get("overhead", 0)
        plan_cols = f"{plan / GIB:>9.3f} {tensors / plan:>9.3f}" if plan else f"{'-':>9} {'-':>9}"
        print(
            f"{mode:<8} {r['trainable']:>12,} {r['growth'] / GIB:>11.3f} {r['peak'] / GIB:>9.3f} "
            f"{r['tokens_per_s']:>9.0f} {plan_cols}"
            + (f"  (RSS overhead {r['overhead'] / GIB:.3f} GiB taken off)" if "overhead" in r else ""),
            flush=True,
        )
    if "full" in results:
        for mode in ("lora", "lora+ac"):
            if mode in results:
                print(f"{mode} growth / full growth: {results[mode]['growth'] / results['full']['growth']:.3f}")


if __name__ == "__main__":
    main()
