"""The compiled CPU decode step with and without dynamo's guard check on every call.

One process, the bench checkpoint of ``generate.py`` (vocab 16,384, hidden 512, 8 layers), one cache: every round calls
the step through ``torch.compile`` (dynamo checks its guards over every weight and cache tensor) and
through :class:`~chameleon_sdk.generation.compiled.GuardFreeStep` (what ``compile=True`` runs after
a decoder's first step), in turn, at the same cache length (the written slot is dropped again after
each call). Prints the median and 10th percentile per call and the ratio to the guarded call.

    .venv/bin/python benchmarks/decode_step.py                  # bf16, 300 rounds
    .venv/bin/python benchmarks/decode_step.py --dtype float32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hf_reference import FULL, write_checkpoint

import chameleon_sdk as cs
from chameleon_sdk.generation.compiled import GuardFreeStep, _decode_forward, cpu_decode_backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--prompt", type=int, default=32, help="tokens in the cache when the steps run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as directory:  # the bench checkpoint, as benchmarks/generate.py loads it
        write_checkpoint(FULL, Path(directory))
        model = cs.load_model(Path(directory), dtype=getattr(torch, args.dtype)).eval()
    cache = model.new_cache(1, args.prompt + 16)
    ids = torch.tensor([[5]])
    guarded = torch.compile(_decode_forward, backend=cpu_decode_backend, fullgraph=True, dynamic=False)
    guard_free = GuardFreeStep(guarded)
    calls = {"through dynamo's guards": guarded, "guard-free (compile=True)": guard_free}
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.no_grad():
        model(torch.randint(0, FULL["vocab"], (1, args.prompt)), cache=cache)
        for tensor in (*cache.written_slots(1).keys, *cache.written_slots(1).values):
            torch._dynamo.mark_dynamic(tensor, 2)
        started = time.perf_counter()
        for call in calls.values():
            call(model, ids, cache.written_slots(1))
            cache.truncate(cache.lengths - 1)
        print(f"compiled the {args.dtype} step in {time.perf_counter() - started:.0f} s")
        if guard_free._code is None:
            raise SystemExit("no compiled entry passed its guards: the guard-free call would be the guarded one")
        for _ in range(args.rounds):
            for name, call in calls.items():
                written = cache.written_slots(1)
                begin = time.perf_counter()
                call(model, ids, written)
                times[name].append(time.perf_counter() - begin)
                cache.truncate(cache.lengths - 1)
    base = statistics.median(times["through dynamo's guards"])
    print(f"bench config, {args.dtype}, {args.prompt + 1} slots, {args.rounds} calls of each in turn, one process")
    for name, values in times.items():
        median, p10 = statistics.median(values), sorted(values)[len(values) // 10]
        print(f"{name:<28} median {median * 1e3:6.3f} ms  p10 {p10 * 1e3:6.3f} ms  {base / median:5.2f}x")


if __name__ == "__main__":
    main()
