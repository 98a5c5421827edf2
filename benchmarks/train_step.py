"""One training step (forward + backward + AdamW) of chameleon-sdk vs transformers' Chameleon, same weights.

Config (the issue's): vocab 16,384, hidden 512, 8 layers, 8 heads, intermediate 1,376, batch 4 x 512
tokens, fp32; ``--small`` shrinks it (vocab 4,096, hidden 256, 4 layers, 4 heads, intermediate 688,
batch 2 x 256) for a quick run. transformers runs ``ChameleonForConditionalGeneration`` with
attention "sdpa"; ours is the same checkpoint loaded through the ``hf`` format (QK-norm per head).
Both use fused AdamW (betas 0.9/0.95, eps 1e-5, weight decay 0.1), the implementation both libraries'
trainers pick by default (ours: the ``local`` trainer; transformers' Trainer: ``adamw_torch_fused``
with torch >= 2.8), and are timed interleaved in one process;
times are medians over ``--steps`` steps after one warm-up step each.

Printed:

- median step time of each and the ratio ours/theirs (below 1: we are faster);
- peak memory of each training step: every side runs in a fresh child process (glibc told to give
  large blocks back to the OS at once) that loads the model, builds the optimizer and touches every
  weight, then trains two steps; the figure is the peak RSS (``VmHWM``) minus the RSS before the
  first step, i.e. activations, gradients and AdamW state;
- our step time under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
- achieved FLOP/s against a measured matmul peak (a square fp32 / bf16 matmul on the same threads);
- the time each side spends inside torch's matmul and CPU flash-attention kernels (median of 3 profiled steps),
  and the "kernel floor": our kernel time over transformers' step time, the ratio ours/transformers
  would reach if everything else (norms, rotary, SwiGLU, the loss, AdamW) cost nothing. Both sides
  do the same matmul FLOPs (ours computes the LM head in chunks of positions) and call the same
  attention kernel, so on a CPU where they dominate, that floor bounds what any change outside the
  kernels can win.

FLOP formula (one documented convention): ``6 N + 6 L H Dh T`` per trained token, where N counts the
parameters that take part in matmuls (all but the token-embedding table, whose lookup is free), L
layers, H heads, Dh head_dim and T the sequence length; ``6 L H Dh T`` is the forward+backward cost
of the attention scores and the weighted sum under a causal mask (half of the full ``12 L H Dh T``).

    .venv/bin/python benchmarks/train_step.py [--small] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hf_reference import FULL, SMALL, text_ids, write_checkpoint

import chameleon_sdk as cs


def load(side: str, directory: Path) -> torch.nn.Module:
    if side == "ours":
        return cs.load_model(directory).train()
    import transformers

    return transformers.ChameleonForConditionalGeneration.from_pretrained(directory, attn_implementation="sdpa").train()


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    # fused, as both trainers build it: ours (``local``) and transformers' Trainer (``adamw_torch_fused``)
    return torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1, fused=True)


def step_fn(side: str, model: torch.nn.Module, ids: torch.Tensor, *, bf16: bool = False) -> Callable[[], float]:
    optimizer = adamw(model)
    targets = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            # ours as the trainer calls it: the loss inside forward, in chunks of positions without
            # [B, T, V] logits (targets padded with ignore_index); transformers shifts the labels itself
            output = model(ids, targets=targets) if side == "ours" else model(input_ids=ids, labels=ids)
            loss = output.loss.loss if side == "ours" else output.loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident set (``VmRSS``) or its high-water mark (``VmHWM``), in bytes.

    ``VmHWM`` belongs to the process's own address space, unlike ``ru_maxrss``, which Linux carries
    over from the parent through fork and exec.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure_memory_child(side: str, directory: Path, batch: int, seq: int, vocab: int) -> None:
    """Runs in a fresh process: print the peak RSS growth of two training steps as JSON."""
    model = load(side, directory)
    ids = text_ids(vocab, batch, seq)
    step = step_fn(side, model, ids)
    with torch.no_grad():
        sum(float(p.sum()) for p in model.parameters())  # fault every (possibly mmapped) weight in
    before = rss_bytes()
    step()
    step()
    peak = rss_bytes("VmHWM")
    print(json.dumps({"side": side, "before": before, "peak": peak}))


def peak_memory(side: str, directory: Path, shape: dict[str, int], threads: int) -> int:
    command = [sys.executable, __file__, "--memory-child", side, "--checkpoint", str(directory)]
    command += ["--threads", str(threads), "--batch", str(shape["batch"]), "--seq", str(shape["seq"])]
    command += ["--vocab", str(shape["vocab"])]
    # A fixed mmap threshold makes glibc return every large tensor to the OS when it is freed, so the
    # process's peak RSS follows the peak of live tensor memory instead of the allocator's caching.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    out = run.stdout.strip().splitlines()[-1]
    result = json.loads(out)
    return result["peak"] - result["before"]


# The kernels both sides spend most of a step in and share: torch's matmuls and its CPU flash attention.
KERNELS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


def kernel_seconds(step: Callable[[], float]) -> float:
    """Seconds one profiled step spends inside ``KERNELS`` (their own time, not their callers')."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    return sum(event.self_cpu_time_total for event in prof.key_averages() if event.key in KERNELS) / 1e6


def matmul_peak(dtype: torch.dtype, n: int = 1536, repeats: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = min(timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def flops_per_token(model: torch.nn.Module, seq: int) -> float:
    config = model.config
    matmul_params = sum(p.numel() for name, p in model.named_parameters() if name != "tok_embeddings.weight")
    return 6 * matmul_params + 6 * config.num_layers * config.num_heads * config.head_dim * seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a smaller config for a quick run")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--memory-child", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seq", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        measure_memory_child(args.memory_child, args.checkpoint, args.batch, args.seq, args.vocab)
        return

    shape = SMALL if args.small else FULL
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "hf"
        write_checkpoint(shape, directory)
        ours, theirs = load("ours", directory), load("theirs", directory)
        ids = text_ids(shape["vocab"], shape["batch"], shape["seq"])
        ours_step, theirs_step = step_fn("ours", ours, ids), step_fn("theirs", theirs, ids)
        loss_ours, loss_theirs = ours_step(), theirs_step()  # warm-up
        mine, hf = [], []
        for _ in range(args.steps):
            mine.append(timed(ours_step))
            hf.append(timed(theirs_step))
        profiled: dict[str, list[float]] = {"ours": [], "theirs": []}
        for _ in range(3):
            profiled["ours"].append(kernel_seconds(ours_step))
            profiled["theirs"].append(kernel_seconds(theirs_step))
        kernels = {side: statistics.median(seconds) for side, seconds in profiled.items()}
        del theirs, theirs_step
        bf16_model = load("ours", directory)
        bf16_step = step_fn("ours", bf16_model, ids, bf16=True)
        bf16_step()
        bf16 = [timed(bf16_step) for _ in range(args.steps)]
        memory = (
            None
            if args.no_memory
            else {side: peak_memory(side, directory, shape, args.threads) for side in ("ours", "theirs")}
        )

    t_ours, t_theirs, t_bf16 = statistics.median(mine), statistics.median(hf), statistics.median(bf16)
    tokens = shape["batch"] * shape["seq"]
    flops = flops_per_token(ours, shape["seq"]) * tokens
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    name = "small" if args.small else "issue"
    print(f"train step, {name} config {shape}, fp32, {args.threads} threads, median of {args.steps} steps")
    # transformers drops the image-code columns from its softmax, ours keeps them: losses differ slightly
    print(
        f"first-step loss: ours {loss_ours:.4f}, transformers {loss_theirs:.4f} (same weights; transformers "
        "masks the 8,192 image-code columns of the logits, so its loss over text tokens is lower)"
    )
    print(f"ours        {t_ours * 1e3:9.1f} ms/step   {tokens / t_ours:9.0f} tok/s")
    print(f"transformers{t_theirs * 1e3:9.1f} ms/step   {tokens / t_theirs:9.0f} tok/s")
    print(f"ratio ours/transformers (time): {t_ours / t_theirs:.3f}")
    print(
        f"in torch's matmul and attention kernels: ours {kernels['ours'] * 1e3:.0f} ms, transformers "
        f"{kernels['theirs'] * 1e3:.0f} ms (median of 3 profiled steps); everything else: ours "
        f"{(t_ours - kernels['ours']) * 1e3:.0f} ms, transformers {(t_theirs - kernels['theirs']) * 1e3:.0f} ms"
    )
    print(
        f"kernel floor: ours/transformers would be {kernels['ours'] / t_theirs:.3f} if everything but those "
        "kernels took no time"
    )
    if memory is not None:
        mib = {side: value / 2**20 for side, value in memory.items()}
        print(
            f"peak step memory (RSS growth): ours {mib['ours']:.0f} MiB, transformers {mib['theirs']:.0f} MiB, "
            f"ratio {mib['ours'] / mib['theirs']:.3f}"
        )
    print(f"ours bf16 autocast {t_bf16 * 1e3:9.1f} ms/step   ({t_bf16 / t_ours:.3f} x our fp32 time)")
    print(f"FLOPs per step (6N + 6 L H Dh T per token): {flops / 1e9:.1f} GFLOP")
    print(
        f"achieved: ours fp32 {flops / t_ours / 1e9:.1f} GFLOP/s, transformers fp32 {flops / t_theirs / 1e9:.1f} "
        f"GFLOP/s, ours bf16 {flops / t_bf16 / 1e9:.1f} GFLOP/s"
    )
    print(
        f"matmul peak: fp32 {peak32 / 1e9:.1f} GFLOP/s, bf16 {peak16 / 1e9:.1f} GFLOP/s -> utilisation "
        f"ours fp32 {flops / t_ours / peak32:.1%}, transformers fp32 {flops / t_theirs / peak32:.1%}, "
        f"ours bf16 {flops / t_bf16 / peak16:.1%}"
    )


if __name__ == "__main__":
    main()
