"""The compiled step of an ``onednn-packed`` model with its matmul op defined two ways, in one process.

``onednn-packed`` hands inductor its packed matmul as an op of its own. The plugin defines it with
``torch.library.Library``; this script defines the same op with ``torch.library.custom_op`` (the
baseline) and steps two copies of the bench checkpoint (``generate.py``'s, packed bf16), one through
each op, in turn, at the same cache length. Prints the median per step and the ratio to the baseline,
and whether both give the same logits.

    .venv/bin/python benchmarks/packed_op.py                    # 1 row, a 32-token prompt
    .venv/bin/python benchmarks/packed_op.py --rows 3 --prompt 1030   # an image's CFG rows, late in its block
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch
from chameleon_quantization.onednn_packed import PackedLinear
from hf_reference import FULL, write_checkpoint

import chameleon_sdk as cs
from chameleon_sdk.generation.compiled import GuardFreeStep, _decode_forward, cpu_decode_backend


@torch.library.custom_op("benchmark_packed_op::custom_op_linear", mutates_args=())
def custom_op_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@custom_op_linear.register_fake
def _custom_op_linear_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _through_custom_op(layer: PackedLinear, x: torch.Tensor) -> torch.Tensor:
    return custom_op_linear(x, layer.weight, layer.bias)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32, help="tokens in the cache when the steps run")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as directory:
        write_checkpoint(FULL, Path(directory))
        models = {
            name: cs.load_model(Path(directory), dtype=torch.bfloat16, quantize="onednn-packed")
            for name in ("torch.library.custom_op", "torch.library.Library (the plugin)")
        }
    for layer in models["torch.library.custom_op"].modules():
        if isinstance(layer, PackedLinear):
            layer.forward = types.MethodType(_through_custom_op, layer)
    ids = torch.full((args.rows, 1), 5)
    prompt = torch.randint(0, FULL["vocab"], (args.rows, args.prompt), generator=torch.Generator().manual_seed(0))
    steps, logits = {}, {}
    with torch.no_grad():
        for name, model in models.items():
            cache = model.new_cache(args.rows, args.prompt + 16)
            model(prompt, cache=cache)
            for tensor in (*cache.written_slots(1).keys, *cache.written_slots(1).values):
                torch._dynamo.mark_dynamic(tensor, 2)
            step = GuardFreeStep(
                torch.compile(_decode_forward, backend=cpu_decode_backend, fullgraph=True, dynamic=False)
            )
            logits[name] = step(model, ids, cache.written_slots(1)).logits
            cache.truncate(cache.lengths - 1)
            steps[name] = (model, cache, step)
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.rounds):
            for name, (model, cache, step) in steps.items():
                written = cache.written_slots(1)
                begin = time.perf_counter()
                step(model, ids, written)
                times[name].append(time.perf_counter() - begin)
                cache.truncate(cache.lengths - 1)
    baseline, plugin = logits
    shape = f"{args.rows} row(s), {args.prompt + 1} slots"
    print(f"bench config, bf16 onednn-packed, {shape}, {args.rounds} steps of each in turn")
    print(f"same logits: {torch.equal(logits[baseline], logits[plugin])}")
    base = statistics.median(times[baseline])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<38} median {median * 1e3:6.3f} ms  {base / median:5.2f}x")


if __name__ == "__main__":
    main()
