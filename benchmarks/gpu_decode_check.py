"""Decoding at a 7B shape on one CUDA GPU: the fraction of HBM bandwidth reached at batch 1.

Random weights in bf16 (the 7B preset's shape: 32 layers, dim 4096, 32 heads, FFN 11008, vocab
65,536; no dropout), greedy decoding of ``--tokens`` tokens after a ``--prompt``-token prompt, eager
and with ``compile=True`` (the one-token step captured as a CUDA graph). The bandwidth is measured
in the same process (best of 10 reads of a 1 GiB tensor); the bytes per step are every weight but
the input embedding table plus the KV cache (``roofline.py``). Anchor: gpt-fast's Llama-2-7B reaches
roughly 70 % of an A100's bandwidth in bf16; the issue's target is >= 75 %.

    python benchmarks/gpu_decode_check.py [--tokens 256] [--int8]
    python benchmarks/gpu_decode_check.py --preset debug --device cpu --tokens 8   # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import attrs
import torch
from roofline import decode_bytes, fraction_of_limit, read_bandwidth

import chameleon_sdk as cs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also int8-weight-only (torchao)")
    parser.add_argument("--compiled-only", action="store_true", help="skip the eager rows")
    parser.add_argument("--profile", action="store_true", help="print the top kernels of the compiled steps")
    parser.add_argument("--preset", default="7b", choices=sorted(cs.MODEL_PRESETS), help="the model's shape")
    parser.add_argument("--device", default="cuda", help="cuda (the check) or cpu (a smoke run of the script)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check needs a GPU")
    preset = cs.MODEL_PRESETS[args.preset].model
    config = attrs.evolve(preset, dropout=0.0, max_seq_len=args.prompt + args.tokens + 8)
    with device:
        model = cs.build_model(config, stability=["qk-norm"]).to(torch.bfloat16).eval()
    prompt = torch.randint(10, config.vocab_size, (1, args.prompt), device=device)
    n = args.tokens
    bandwidth = read_bandwidth(device, megabytes=1024 if device.type == "cuda" else 256)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}: read bandwidth {bandwidth / 1e9:.0f} GB/s; {args.preset} shape, bf16, batch 1")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    # quantize_model converts in place, so the int8 variant is made only after the bf16 rows ran.
    variants = [("bf16", lambda: model)]
    if args.int8:
        variants.append(("int8 weights", lambda: cs.quantize_model(model, "int8-weight-only")))
    for name, make in variants:
        m = make()
        step = decode_bytes(m, prompt=args.prompt, tokens=n)
        for compile in (True,) if args.compiled_only else (False, True):
            run = lambda m=m, c=compile: cs.generate_tokens(m, prompt, max_new_tokens=n, stop_ids=[], compile=c)  # noqa: E731
            run()  # warm up (and compile)
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - start)
            rate = n / statistics.median(times)
            fraction = fraction_of_limit(rate, step, bandwidth)
            label = f"{name}{' compile=True' if compile else ' eager'}"
            print(f"{label:<40} {rate:8.1f} tok/s  {step / 1e9:6.2f} GB/step  {fraction:6.1%} of the limit")
            if compile and args.profile:
                profile_steps(m, prompt, n, device)
                alone = step_alone(m, prompt, n, device)
                print(f"{'  the compiled step alone (no sampling)':<40} {alone:8.1f} tok/s  "
                      f"{fraction_of_limit(alone, step, bandwidth):6.1%} of the limit")  # fmt: skip
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def step_alone(model: torch.nn.Module, prompt: torch.Tensor, tokens: int, device: torch.device) -> float:
    """Tokens/s of the compiled one-token forward pass called in a loop, without the decoder's
    sampling and bookkeeping: the gap to the full decode loop is the per-token work around it."""
    from chameleon_sdk.generation.compiled import compile_decode_step

    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.no_grad():
        cache = model.new_cache(1, prompt.shape[1] + tokens)
        step = compile_decode_step(model, cache, device)
        model(prompt, cache=cache)
        token = prompt[:, -1:].clone()
        for _ in range(3):
            step(token, cache=cache)
        sync()
        start = time.perf_counter()
        for _ in range(tokens - 3):
            step(token, cache=cache)
        sync()
    return (tokens - 3) / (time.perf_counter() - start)


def profile_steps(model: torch.nn.Module, prompt: torch.Tensor, tokens: int, device: torch.device) -> None:
    """Where compiled steps' time goes: device-busy time against wall time, and the top kernels.

    The shapes are the timed runs' (same prompt and token count), so nothing recompiles.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        cs.generate_tokens(model, prompt, max_new_tokens=tokens, stop_ids=[], compile=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    busy = sum(e.self_device_time_total for e in events) / 1e6
    print(f"profile of {tokens} compiled tokens: wall {wall * 1e3:.1f} ms, device busy {busy * 1e3:.1f} ms")
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(events.table(sort_by=sort, row_limit=14, max_name_column_width=60))


if __name__ == "__main__":
    main()
