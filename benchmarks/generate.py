"""Greedy decoding speed against the memory-bandwidth roofline, and against transformers' generate.

Config (the issue's "bench config"): vocab 16,384, hidden 512, 8 layers, 8 heads, intermediate
1,376; the same random weights on both sides. Every figure is the median of ``--repeats`` runs,
interleaved with its baseline in one process; the bandwidth is measured at the start of every round
and a row's limit uses the median of its rounds. ``tok/s`` is the decode rate: the tokens after the
first over the time they took (each run is also timed for one token, the prompt's forward pass,
printed as ``1st ms``); ``e2e tok/s`` counts the prompt's pass too. Every row also prints the bytes a
decode step reads (weights + KV cache, ``roofline.py``), that bandwidth, and
the fraction of that limit the decode rate reached. Sections:

1. batch 1: ours eager and compiled (``compile=True``), ``transformers``, fp32 and bf16 weights,
   bf16 weights packed for oneDNN on a CPU (the ``onednn-packed`` quantization plugin), weight-only
   int8 (the ``int8-weight-only`` quantization plugin, torchao), on a CPU bf16 and int8 also with
   ``compile="frozen"``, with greedy agreement between the precisions and the logits difference;
2. batch scaling: tokens/s of all rows at batch 1, 4, 8, 16 (``--batches``), eager and compiled, and
   in bf16 on a CPU also with the weights frozen into the compiled step (``compile="frozen"``);
3. image blocks: one block of ``--image-codes`` codes with 3-row classifier-free guidance on a
   demo-sized model and on the bench config, fp32, bf16, (on a CPU) bf16 with ``compile="frozen"``
   and bf16 packed for oneDNN, and weight-only int8 (on a CPU also with ``compile="frozen"``).

    .venv/bin/python benchmarks/generate.py              # everything (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/generate.py --quick      # fewer tokens, repeats and rows (a few minutes)

Compilation time is excluded from rates (it is printed); compiling runs once per shape.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from hf_reference import FULL, OFFSET, num_codes, write_checkpoint
from roofline import decode_bytes, fraction_of_limit, read_bandwidth

import chameleon_sdk as cs

DEMO = {"vocab": 1024, "hidden": 128, "layers": 4, "heads": 4, "intermediate": 352}


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def hf_generate(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1)


@attrs.define
class Bench:
    """One process's state: the checkpoint, the device, the bandwidth probe and the table."""

    args: argparse.Namespace
    checkpoint: Path
    device: torch.device
    #: the read bandwidth measured at the start of every round (``interleaved``, ``median``): a row's
    #: limit is the median of its section's rounds, so it reflects the load while the rows ran
    bandwidths: list[float] = attrs.field(factory=list)

    def load(self, dtype: torch.dtype = torch.float32, quantize: str | None = None, path: Path | None = None):
        return cs.load_model(path or self.checkpoint, dtype=dtype, quantize=quantize).to(self.device)

    def prompt(self, batch: int, vocab: int = FULL["vocab"]) -> torch.Tensor:
        text_ids = torch.arange(OFFSET + num_codes(vocab) + 3, vocab)
        picks = torch.randint(len(text_ids), (batch, self.args.prompt), generator=torch.Generator().manual_seed(batch))
        prompt = text_ids[picks]
        prompt[:, 0] = 0
        return prompt.to(self.device)

    def median(self, fn: Callable[[], Any]) -> float:
        times = []
        for _ in range(self.args.repeats):
            self.bandwidths.append(read_bandwidth(self.device))
            times.append(timed(fn, self.device))
        return statistics.median(times)

    def interleaved(self, runs: dict[str, Callable[[int], Any]]) -> dict[str, Timing]:
        """Each run timed for ``tokens`` new tokens and for 1 (the prompt's forward pass and the first
        token), median over ``repeats`` rounds that run each once, in turn, so that load from other
        processes falls on all of them alike."""
        n = self.args.tokens
        whole: dict[str, list[float]] = {name: [] for name in runs}
        first: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(self.args.repeats):
            self.bandwidths.append(read_bandwidth(self.device))
            for name, fn in runs.items():
                whole[name].append(timed(lambda f=fn: f(n), self.device))
                first[name].append(timed(lambda f=fn: f(1), self.device))
        return {name: Timing(n, statistics.median(whole[name]), statistics.median(first[name])) for name in runs}

    def row(self, label: str, timing: Timing, bytes_per_step: float, rows: int, note: str = "") -> None:
        """A table row; the fraction of the limit is the decode rate's (the tokens after the first)."""
        bandwidth = statistics.median(self.bandwidths[-self.args.repeats :])
        fraction = fraction_of_limit(timing.decode_rate, bytes_per_step, bandwidth)
        limit = bandwidth / bytes_per_step
        first = "-" if timing.first is None else f"{timing.first * 1e3:.1f}"
        print(
            f"{label:<40} {rows * timing.decode_rate:>9.1f} {rows * timing.rate:>9.1f} {first:>7} "
            f"{bytes_per_step / 1e6:>8.1f} {bandwidth / 1e9:>6.1f} {rows * limit:>9.1f} {fraction:>6.1%}  {note}"
        )


@attrs.frozen
class Timing:
    """Median seconds for ``tokens`` new tokens (``whole``) and for the first one alone (``first``:
    the prompt's forward pass, which is not a decode step; None when it was not timed apart, and
    then the decode rate counts the prompt's pass too)."""

    tokens: int
    whole: float
    first: float | None = None

    @property
    def rate(self) -> float:
        """End to end: new tokens per second, prompt included."""
        return self.tokens / self.whole

    @property
    def decode_rate(self) -> float:
        """Decode steps per second: the tokens after the first over the time they took."""
        return (self.tokens - 1) / (self.whole - (self.first or 0.0))


#: the image rows' name for each quantization plugin they load
QUANTIZED = {"onednn-packed": "bfloat16-packed", "int8-weight-only": "int8"}

#: the weights whose batch-1 row is also drawn with ``compile="frozen"`` on a CPU (fp32's one-row
#: matmuls are reductions of ours either way)
FROZEN_PAYS = ("bf16", "int8")

#: a row's mode and the ``compile`` argument it decodes with
COMPILE: dict[str, bool | str] = {"eager": False, "compile=True": True, "compile=frozen": "frozen"}

HEADER = f"{'row':<40} {'tok/s':>9} {'e2e tok/s':>9} {'1st ms':>7} {'MB/step':>8} {'GB/s':>6} {'limit':>9} {'frac':>6}"


def decode(model, prompt, n: int, **options: Any) -> torch.Tensor:
    return cs.generate_tokens(model, prompt, max_new_tokens=n, stop_ids=[], **options)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int:
    """Index of the first differing token of two equally long 1-D sequences (their length if none)."""
    differ = (a != b).nonzero()
    return int(differ[0]) if len(differ) else len(a)


def logits_difference(reference, other, ids: torch.Tensor) -> tuple[float, float]:
    """Max and mean |logit difference| over a teacher-forced pass of ``ids`` ``[1, T]``."""
    with torch.no_grad():
        a = reference(ids).logits.float()
        b = other(ids).logits.float()
    return float((a - b).abs().max()), float((a - b).abs().mean())


def logits_std(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(ids).logits.float().std())


def batch_one(bench: Bench, theirs) -> None:
    args, n = bench.args, bench.args.tokens
    prompt = bench.prompt(1)
    print(f"\n## batch 1: greedy decode of {n} tokens after a {args.prompt}-token prompt")
    models = {"fp32": bench.load(), "bf16": bench.load(torch.bfloat16)}
    if bench.device.type == "cpu":
        models["bf16-packed"] = bench.load(torch.bfloat16, quantize="onednn-packed")
    if not args.skip_int8:
        models["int8"] = bench.load(torch.bfloat16, quantize="int8-weight-only")
    runs: dict[str, Callable[[int], Any]] = {"transformers fp32 generate": lambda k: hf_generate(theirs, prompt, k)}
    tokens: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        runs[f"ours {name} eager"] = lambda k, m=model: decode(m, prompt, k)
        tokens[name] = decode(model, prompt, n)[0]
        modes = ["compile=True"] if args.compile else []
        modes += ["compile=frozen"] if args.compile and bench.device.type == "cpu" and name in FROZEN_PAYS else []
        for mode in modes:
            start = time.perf_counter()
            compiled = decode(model, prompt, n, compile=COMPILE[mode])[0]
            print(
                f"compiled the {name} step ({mode}) in {time.perf_counter() - start:.0f} s; its tokens equal "
                f"eager's for the first {first_difference(compiled, tokens[name])} of {n}"
            )
            runs[f"ours {name} {mode}"] = lambda k, m=model, c=COMPILE[mode]: decode(m, prompt, k, compile=c)
    timings = bench.interleaved(runs)
    print(HEADER)
    # each precision against the one before
    previous = {"fp32": "transformers", "bf16": "fp32", "bf16-packed": "bf16", "int8": "bf16"}
    for label, timing in timings.items():
        kind, name, mode = label.split(" ", 2)
        notes = []
        if kind == "ours":
            bases = ["transformers fp32 generate"] if name == "fp32" else [f"ours {previous[name]} {mode}"]
            bases += [f"ours {name} compile=True"] if mode == "compile=frozen" else []
            for base in (base for base in bases if base in timings):
                notes.append(f"{timing.decode_rate / timings[base].decode_rate:.2f}x {base}")
        if mode != "eager" and kind == "ours":
            notes.append(f"{timing.decode_rate / timings[f'ours {name} eager'].decode_rate:.2f}x eager")
        step = decode_bytes(models[name], prompt=args.prompt, tokens=n)
        bench.row(label, timing, step, 1, ", ".join(notes))
    context = torch.cat([prompt[0], tokens["fp32"]]).unsqueeze(0)
    pairs = [("bf16", "fp32")] + [(name, "bf16") for name in ("bf16-packed", "int8") if name in models]
    for name, reference in pairs:
        worst, mean = logits_difference(models[reference], models[name], context)
        print(
            f"{name} vs {reference}: greedy tokens equal for the first "
            f"{first_difference(tokens[reference], tokens[name])} of {n}; |logits difference| max {worst:.4f}, "
            f"mean {mean:.4f} (teacher-forced over the prompt and the fp32 tokens; {reference} logits std "
            f"{logits_std(models[reference], context):.4f})"
        )


def batch_scaling(bench: Bench) -> None:
    """Each dtype's own series: in fp32, MKL's sgemm gets slower per weight byte with more rows on the
    development CPU; in bf16 oneDNN's matmul costs about the same for 1 to 16 rows."""
    args, n = bench.args, bench.args.tokens
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        modes = ["eager"] + (["compile=True"] if args.compile else [])
        modes += ["compile=frozen"] if args.compile and dtype == torch.bfloat16 and bench.device.type == "cpu" else []
        model = bench.load(dtype)
        print(f"\n## batch scaling: {name}, {n} tokens per row, tok/s of all rows")
        runs: dict[str, Callable[[int], Any]] = {}
        for batch in args.batches:
            prompt = bench.prompt(batch)
            for mode in modes:
                run = lambda k, m=model, p=prompt, c=COMPILE[mode]: decode(m, p, k, compile=c)  # noqa: E731
                if mode != "eager":
                    run(n)  # compile and warm up
                runs[f"{name} batch {batch} {mode}"] = run
        timings = bench.interleaved(runs)
        print(HEADER)
        for label, timing in timings.items():
            batch, mode = int(label.split()[2]), label.split()[3]
            base = timings[f"{name} batch {args.batches[0]} {mode}"]
            ratio = batch * timing.decode_rate / (args.batches[0] * base.decode_rate)
            step = decode_bytes(model, prompt=args.prompt, tokens=n, rows=batch)
            bench.row(label, timing, step, batch, f"{ratio:.2f}x batch {args.batches[0]}")


def image_blocks(bench: Bench, demo_checkpoint: Path) -> None:
    args = bench.args
    codes = args.image_codes
    print(f"\n## one image block of {codes} codes, 3-row classifier-free guidance (3 cache rows per step)")
    print(HEADER)
    models = (("demo-sized", demo_checkpoint, DEMO["vocab"]), ("bench", bench.checkpoint, FULL["vocab"]))
    on_cpu, compiled = bench.device.type == "cpu", "compile=True" if args.compile else "eager"
    weights = [(torch.float32, None, compiled), (torch.bfloat16, None, compiled)]
    weights += [(torch.bfloat16, None, "compile=frozen")] if on_cpu and args.compile else []
    weights += [(torch.bfloat16, "onednn-packed", compiled)] if on_cpu else []
    weights += [] if args.skip_int8 else [(torch.bfloat16, "int8-weight-only", compiled)]
    frozen_int8 = on_cpu and args.compile and not args.skip_int8
    weights += [(torch.bfloat16, "int8-weight-only", "compile=frozen")] if frozen_int8 else []
    for name, path, vocab in models:
        fp32_seconds = None
        for dtype, quantize, mode in weights:
            model = bench.load(dtype, quantize=quantize, path=path)
            v = model.vocabulary
            blocks = [attrs.evolve(b, block_length=codes) for b in v.blocks.values()]
            vocabulary = cs.Vocabulary(layout=v.layout, size=v.size, specials=v.specials, blocks=blocks)
            prompt = bench.prompt(1, vocab)[0].tolist()
            options = {"mode": "image", "vocabulary": vocabulary, "guidance": cs.Guidance(), "compile": COMPILE[mode]}
            run = lambda m=model, p=prompt, o=options: cs.generate_tokens(m, p, max_new_tokens=codes + 1, **o)  # noqa: E731
            if mode != "eager":
                run()  # compile and warm up
            elapsed = bench.median(run)
            fp32_seconds = fp32_seconds or elapsed
            step = decode_bytes(model, prompt=args.prompt, tokens=codes, rows=3)
            precision = str(dtype).removeprefix("torch.") if quantize is None else QUANTIZED[quantize]
            label = f"{name} {precision} {mode}"
            speedup = fp32_seconds / elapsed
            note = f"{elapsed:.2f} s per image, {speedup:.2f}x fp32 (tok/s: a token a step, prompt included)"
            bench.row(label, Timing(codes + 1, elapsed), step, 1, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32, help="prompt length")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 4, 8, 16])
    parser.add_argument("--image-codes", type=int, default=1024, help="codes per image block (Chameleon: 1,024)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip compile=True rows")
    parser.add_argument("--skip-int8", action="store_true", help="skip the int8 rows (they need torchao)")
    parser.add_argument("--sections", default="batch1,scaling,image", help="comma-separated subset to run")
    parser.add_argument("--quick", action="store_true", help="64 tokens, 1 repeat, batches 1 and 8, 256-code images")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.repeats, args.batches, args.image_codes = 64, 1, [1, 8], 256
    torch.set_num_threads(args.threads)
    torch._dynamo.config.recompile_limit = 64  # one compiled step per (model, batch, cache length)
    device = torch.device(args.device)
    sections = set(args.sections.split(","))
    where = f"{args.threads} threads" if device.type == "cpu" else str(device)
    print(f"greedy decoding, {where}; median of {args.repeats}; torch {torch.__version__}")
    print("frac = tok/s per row x MB/step / GB/s: the fraction of the memory-bandwidth limit reached")
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        bench_dir, demo_dir = Path(tmp) / "bench", Path(tmp) / "demo"
        write_checkpoint(FULL, bench_dir)
        bench = Bench(args, bench_dir, device)
        if "batch1" in sections:
            hf_model = transformers.ChameleonForConditionalGeneration.from_pretrained
            batch_one(bench, hf_model(bench_dir, attn_implementation="sdpa").eval().to(device))
        if "scaling" in sections:
            batch_scaling(bench)
        if "image" in sections:
            write_checkpoint(DEMO, demo_dir)
            image_blocks(bench, demo_dir)


if __name__ == "__main__":
    main()
