"""Loading a checkpoint: ``cs.load_model`` against ``transformers``' ``from_pretrained``, same folder, same dtype.

Writes a random ~400M-parameter model (vocab 65,536, hidden 2,048, 3 layers, 16 heads, intermediate
5,632: 422M parameters, 0.84 GB in bfloat16; ``--small`` is ~60M) with our own writers: the ``hf``
layout in three safetensors shards (``cs.save_model(..., format="hf", options={"max_shard_bytes": ...})``,
which ``ChameleonForConditionalGeneration.from_pretrained`` reads), Meta's ``original`` layout
(one ``consolidated.pth``) and our ``native`` layout. Then, every load in a fresh child process (so
peaks are not polluted by an earlier load), interleaved over ``--repeats`` rounds:

- ``transformers``: ``ChameleonForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.bfloat16)``;
- ``ours (hf)``: ``cs.load_model(hf_dir, dtype=torch.bfloat16)``, and the same with ``verify=False``
  (our writers put a ``manifest.json`` beside the files, and by default ``load_model`` first checks
  every file's SHA-256 against it, a full pass over the bytes that ``transformers`` has no
  counterpart of; a folder from the Hub has no manifest and loads like ``verify=False``);
- ``ours (original, ...)`` and ``ours (native, ...)``: the same weights from the other two layouts.

Printed per side (medians): wall time of the load call alone (imports excluded), its ratio to
``transformers``', and peak memory as a multiple of the weight bytes of the folder it loaded: the growth of the
process's peak RSS (``VmHWM``, reset through ``/proc/self/clear_refs`` right before the call) over
its RSS before it, first during the load call, then after every weight has been read once (a sum
over all parameters: what a first forward pass brings in, since both sides map the files).

The files were just written, so they are in the page cache for every side alike (warm cache); the
figures do not include reading from disk.

    .venv/bin/python benchmarks/load.py [--small] [--repeats 3] [--threads 2] [--dir PATH]
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
from pathlib import Path

import torch
from hf_reference import TINY_VQ_CONFIG, vocabulary_map
from train_step import rss_bytes

FULL = {"vocab": 65536, "hidden": 2048, "layers": 3, "heads": 16, "intermediate": 5632}
SMALL = {"vocab": 16384, "hidden": 1024, "layers": 2, "heads": 8, "intermediate": 2816}
#: each side and the layout it loads
SIDES = {
    "transformers": "hf",
    "ours (hf)": "hf",
    "ours (hf, verify=False)": "hf",
    "ours (original, verify=False)": "original",
    "ours (native, verify=False)": "native",
}


def write_checkpoints(shape: dict[str, int], root: Path) -> dict[str, Path]:
    """The same random bfloat16 model in the hf (three shards), original and native layouts."""
    import chameleon_sdk as cs

    config = cs.ModelConfig(
        dim=shape["hidden"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        vocab_size=shape["vocab"],
        ffn_dim=shape["intermediate"],
    )
    torch.manual_seed(0)
    model = cs.build_model(config, stability=["qk-norm"]).to(torch.bfloat16)
    # what the hf writer keeps from a loaded hf folder: a tiny VQ config and a released-style map
    base = {"vq_config": TINY_VQ_CONFIG, "vocabulary_map": vocabulary_map(shape["vocab"])}
    model.checkpoint_info = cs.CheckpointInfo(format="hf", path=str(root / "none"), metadata={"config": base})
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    paths = {"hf": root / "hf", "original": root / "original", "native": root / "native"}
    cs.save_model(model, paths["hf"], format="hf", options={"max_shard_bytes": int(total * 0.4)})
    cs.save_model(model, paths["original"], format="original")
    cs.save_model(model, paths["native"], format="native")
    return paths


def weight_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix in (".safetensors", ".pth"))


def child(side: str, directory: Path) -> None:
    """Runs in a fresh process: load once, print time and peak RSS growth as JSON."""
    import chameleon_sdk as cs

    # one-time work of a process (imports, plugin discovery) is done before the clock starts
    if side == "transformers":
        import transformers

        model_class = transformers.ChameleonForConditionalGeneration  # resolves transformers' lazy import

        def load() -> torch.nn.Module:
            return model_class.from_pretrained(directory, dtype=torch.bfloat16)
    else:
        cs.get_registry().records("checkpoint_format")

        def load() -> torch.nn.Module:
            return cs.load_model(directory, dtype=torch.bfloat16, verify="verify=False" not in side)

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = rss_bytes()
    start = time.perf_counter()
    model = load()
    seconds = time.perf_counter() - start
    during = rss_bytes("VmHWM")
    with torch.no_grad():
        sum(float(p.sum()) for p in model.parameters())  # reads every weight, allocates nothing big
    touched = rss_bytes("VmHWM")
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    print(json.dumps({"seconds": seconds, "during": during - before, "touched": touched - before, "dtypes": dtypes}))


def measure(side: str, directory: Path, threads: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", side, "--dir", str(directory), "--threads", str(threads)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
    run = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    if result["dtypes"] != ["torch.bfloat16"]:
        raise RuntimeError(f"{side} loaded {result['dtypes']}, not bfloat16")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a ~60M-parameter model instead of ~400M")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="where to write the checkpoints (default: a temporary folder)")
    parser.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child, args.dir)
        return
    shape = SMALL if args.small else FULL
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        paths = write_checkpoints(shape, Path(tmp))
        folder = {side: paths[layout] for side, layout in SIDES.items()}
        checkpoint = {side: weight_bytes(folder[side]) for side in SIDES}
        shards = len(list(paths["hf"].glob("*.safetensors")))
        size = checkpoint["transformers"] / 1e9
        print(f"shape {shape}; hf checkpoint {size:.3f} GB of bfloat16 weights in {shards} shards")
        results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side in SIDES:
                results[side].append(measure(side, folder[side], args.threads))
    baseline = statistics.median(r["seconds"] for r in results["transformers"])
    print(f"{'side':<32}{'load s':>8}{'/ transformers':>16}{'peak during / ckpt':>20}{'after touch / ckpt':>20}")
    for side in SIDES:
        seconds = statistics.median(r["seconds"] for r in results[side])
        during = statistics.median(r["during"] for r in results[side]) / checkpoint[side]
        touched = statistics.median(r["touched"] for r in results[side]) / checkpoint[side]
        print(f"{side:<32}{seconds:>8.3f}{seconds / baseline:>15.2f}x{during:>19.2f}x{touched:>19.2f}x")


if __name__ == "__main__":
    main()
