"""chameleon serve under concurrent streaming clients, and a soak with random cancellations.

The server is a separate process (``chameleon serve``) on 127.0.0.1 serving the bench config model
(vocab 16,384, hidden 512, 8 layers, 8 heads, intermediate 1,376, random weights, saved in fp32)
with a sentencepiece text tokenizer, with the weights in the dtype ``chameleon serve --dtype`` gives
them (default ``auto``: bf16 on a CPU or GPU that computes it natively, else fp32) and in the format
``--quantize`` gives them (default ``auto``: bf16 on a CPU packed for oneDNN). Clients stream text
through ``POST /v1/stream``.

Part 1, for 1, 4, 8 and 16 concurrent clients (each runs ``--requests`` requests of ``--tokens`` new
tokens one after the other), in ``--repeats`` interleaved rounds: aggregate tokens/s (the median of
the rounds), p50/p95 time to first token, p50/p95 per-token latency, and the ratio of aggregate
tokens/s against the named baseline, 1 client, measured in the same run. Target: 8 clients >= 4x.

Part 2, the soak: ``--soak`` requests from 16 clients, a ``--cancel`` fraction of them closed after a
random number of events. Every request must finish or be cancelled as asked, the batch must be empty
afterwards (``/healthz``), and the server's resident memory must return to its baseline.

With ``--compile on|frozen`` the server compiles its decode step at start, and the batcher alone runs
the compiled step against the eager one (each with the weights ``--quantize auto`` gives it) at
every level, in turn, in the same rounds.

    .venv/bin/python benchmarks/serve.py [--tokens 64] [--requests 1] [--repeats 3] [--soak 200] [--threads 2]
    .venv/bin/python benchmarks/serve.py --dtype float32   # the weights in fp32 whatever the CPU
    .venv/bin/python benchmarks/serve.py --quantize none   # bf16 weights as loaded, not packed
    .venv/bin/python benchmarks/serve.py --compile frozen  # the compiled step, and against eager
    .venv/bin/python benchmarks/serve.py --small   # a quick run: smaller model, fewer tokens
    .venv/bin/python benchmarks/serve.py --small --levels 1 --soak 0 --object-check 100
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

import chameleon_sdk as cs
from chameleon_sdk import bundled_corpus
from chameleon_sdk.serve.weights import DTYPE_CHOICES, serving_dtype, serving_quantization

FULL = {"dim": 512, "num_layers": 8, "num_heads": 8, "ffn_dim": 1376, "vocab_size": 16384}
SMALL = {"dim": 128, "num_layers": 2, "num_heads": 4, "ffn_dim": 344, "vocab_size": 4096}
WORDS = " ".join(bundled_corpus()).split()


def save_pipeline(shape: dict[str, int], directory: Path, context: int) -> cs.Pipeline:
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"vocab_size": 400}},
        model=cs.ModelConfig(max_seq_len=context, **shape),
    )
    pipe = cs.Pipeline.from_config(config)
    pipe.train_text_tokenizer(bundled_corpus())
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    pipe.save_pretrained(directory)
    return pipe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class Result:
    def __init__(self) -> None:
        self.tokens = 0
        self.ttft = float("nan")
        self.per_token = float("nan")
        self.outcome = "lost"


def stream_once(client: httpx.Client, base: str, tokens: int, rng: random.Random, cancel_after: int | None) -> Result:
    """One streaming request; ``cancel_after``: close the connection after that many events."""
    prompt = " ".join(rng.choice(WORDS) for _ in range(12))
    body = {"prompt": prompt, "max_new_tokens": tokens, "stop": [], "sampler": {"name": "sample", "options": {}},
            "seed": rng.randrange(1 << 30)}  # fmt: skip
    result = Result()
    start = time.perf_counter()
    first = last = None
    events = 0
    with client.stream("POST", f"{base}/v1/stream", json=body) as response:
        if response.status_code != 200:
            response.read()
            result.outcome = f"http {response.status_code}: {response.json()['error']['message']}"
            return result
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            now = time.perf_counter()
            events += 1
            if event["type"] == "text":
                first = first if first is not None else now
                last = now
            elif event["type"] == "finished":
                result.tokens = event["usage"]["completion_tokens"]
                result.outcome = "finished"
            elif event["type"] == "error":
                result.outcome = "error: " + event["message"]
            if cancel_after is not None and events >= cancel_after and result.outcome != "finished":
                result.outcome = "cancelled"
                break
    if first is not None:
        result.ttft = first - start
        if result.tokens > 1 and last is not None:
            result.per_token = (last - first) / (result.tokens - 1)
    return result


def run_clients(base: str, clients: int, total: int, tokens: int, deadline: float, cancel: float = 0.0,
                seed: int = 0) -> tuple[list[Result], float]:  # fmt: skip
    """``total`` requests from ``clients`` threads (fewer if ``deadline`` passes); the wall seconds."""
    results: list[Result] = []
    lock = threading.Lock()
    remaining = [total]

    def client_loop(index: int, client: httpx.Client) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            cancel_after = rng.randint(1, tokens) if rng.random() < cancel else None
            result = stream_once(client, base, tokens, rng, cancel_after)
            with lock:
                results.append(result)

    # the clients exist before the clock starts: an httpx.Client loads the CA bundle for its TLS
    # context (~60 ms of CPU each, even for http://), client-side work that would share the two cores
    # with the server inside the timed window, 16 times over at 16 clients
    pool = [httpx.Client(timeout=600) for _ in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(i, pool[i])) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for client in pool:
        client.close()
    return results, wall


#: --compile's choices: the batcher's ``compile`` and the server's flags
COMPILE: dict[str, tuple[bool | str, list[str]]] = {
    "off": (False, []),
    "on": (True, ["--compile"]),
    "frozen": ("frozen", ["--compile-frozen"]),
}


def served_model(pipe: cs.Pipeline, device: torch.device, dtype: torch.dtype, quantize: str | None) -> torch.nn.Module:
    """A copy of ``pipe``'s model with the weights as the server holds them."""
    import copy

    model = copy.deepcopy(pipe.model).to(device, dtype)
    return model if quantize is None else cs.quantize_model(model, quantize)


def batcher_alone(
    pipe: cs.Pipeline, models: dict[str, tuple[torch.nn.Module, object]], levels: list[int], tokens: int, context: int,
    rounds: int,
) -> None:  # fmt: skip
    """The same decoding without HTTP: requests handed to a ContinuousBatcher in this process, so the
    cost of the web stack (and of the clients, which share the machine) shows by difference.
    ``models``: label -> (model, compile); each level runs every one in turn, and every one after the
    first is also compared with the first at each level."""
    from chameleon_sdk.serve.batcher import ContinuousBatcher, JobEnd

    rates: dict[tuple[str, int], list[float]] = {(label, n): [] for label in models for n in levels}
    for r in range(rounds):
        for n in levels:
            for label, (model, compile) in models.items():
                pipe.model = model
                batcher = ContinuousBatcher(model, max_rows=16, max_context=context, max_queue=64, compile=compile)
                ended = threading.Semaphore(0)

                def sink(item, ended=ended) -> None:
                    if isinstance(item, JobEnd):
                        ended.release()

                options = {"max_new_tokens": tokens, "stop": [], "sampler": {"name": "sample", "options": {}}}
                streams = [pipe.prepare_stream(" ".join(WORDS[i : i + 12]), seed=r, **options) for i in range(n)]
                start = time.perf_counter()
                for stream in streams:
                    batcher.submit(stream, sink, timeout=600)
                for _ in streams:
                    ended.acquire()
                rates[label, n].append(n * tokens / (time.perf_counter() - start))
                batcher.close()
    first = next(iter(models))
    for label in models:
        one = statistics.median(rates[label, levels[0]])
        cells = []
        for n in levels:
            rate = statistics.median(rates[label, n])
            versus = "" if label == first else f", {rate / statistics.median(rates[first, n]):.2f}x {first}"
            cells.append(f"{n}: {rate:.1f} tok/s ({rate / one:.2f}x{versus})")
        print(f"the batcher alone, no HTTP, in this process, {label}: " + ", ".join(cells))


def object_check(pipe: cs.Pipeline, requests: int, tokens: int, cancel: float, deadline: float) -> None:
    """Whether the server keeps anything per request: the same app in this process (uvicorn in a
    thread), three rounds of ``requests`` after a warm-up; the Python object count and the memory
    ``tracemalloc`` traces after each round (tensors are referenced by Python objects, so a kept
    buffer shows in the count)."""
    import gc
    import tracemalloc

    import uvicorn

    app = cs.serve.create_app(pipe, max_rows=16, max_new_tokens=tokens)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    run_clients(base, 16, requests, tokens, deadline, cancel=cancel, seed=7)
    gc.collect()
    tracemalloc.start()
    objects = len(gc.get_objects())
    cells = []
    for r in range(3):
        run_clients(base, 16, requests, tokens, deadline, cancel=cancel, seed=8 + r)
        time.sleep(0.5)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] / 2**20
        cells.append(f"{len(gc.get_objects()) - objects:+d} objects, {traced:.2f} MiB traced")
    tracemalloc.stop()
    server.should_exit = True
    thread.join(30)
    print(
        f"objects kept, after rounds of {requests} requests (16 clients, {cancel:.0%} cancelled): " + "; ".join(cells)
    )


def health(base: str) -> dict:
    return httpx.get(f"{base}/healthz", timeout=30).json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=1, help="requests per client at each level and round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over the levels (interleaved)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--soak", type=int, default=None, help="soak requests (0: none; default 200, 48 with --small)")
    parser.add_argument("--cancel", type=float, default=0.3, help="fraction of soak requests cancelled")
    parser.add_argument("--object-check", type=int, default=0, help="requests per round of the in-process check")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--time-limit", type=float, default=900, help="seconds; later requests are not started")
    parser.add_argument("--small", action="store_true", help="a smaller model and fewer tokens (a quick check)")
    parser.add_argument("--device", default="cpu", help="where the server (and the in-process batcher) decode")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default="auto", help="the weights (as chameleon serve)")
    parser.add_argument("--quantize", default="auto", help="a quantization plugin, or none (as chameleon serve)")
    parser.add_argument(
        "--compile", choices=list(COMPILE), default="off",
        help="the server's decode step (as chameleon serve --compile/--compile-frozen); the batcher alone "
        "then runs it against the eager step with its own --quantize auto",
    )  # fmt: skip
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = serving_dtype(args.dtype, device)  # what the server resolves them to
    compile = COMPILE[args.compile][0]
    quantize = serving_quantization(args.quantize, dtype, device, cs.get_registry(), compile=compile)
    shape = SMALL if args.small else FULL
    if args.small:
        args.tokens, args.repeats = min(args.tokens, 32), 1
    if args.soak is None:
        args.soak = 48 if args.small else 200
    deadline = time.monotonic() + args.time_limit
    context = 128 + args.tokens  # room for the 12-word prompts
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = save_pipeline(shape, Path(tmp) / "pipe", context)
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        limits = ["--max-rows", "16", "--max-context", str(context), "--max-new-tokens", str(args.tokens)]
        cmd = [sys.executable, "-m", "chameleon_sdk", "serve", "--model", str(Path(tmp) / "pipe"), "--port", str(port)]
        cmd += ["--device", args.device, "--dtype", args.dtype, "--quantize", args.quantize]
        cmd += COMPILE[args.compile][1]
        started = time.perf_counter()
        server = subprocess.Popen([*cmd, *limits], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            while server.poll() is None:  # a compiled step compiles before the server answers
                try:
                    health(base)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}")
            print(f"the server answered {time.perf_counter() - started:.1f} s after it started")
            run_clients(base, 2, 2, args.tokens, deadline)  # warm-up: first allocations, thread pools
            where = f"{args.threads} threads" if args.device == "cpu" else args.device
            print(f"{'small' if args.small else 'bench config'} model {shape}, {args.tokens} new tokens per "
                  f"request, {args.requests} request(s) per client per round, {args.repeats} rounds, "
                  f"{str(dtype).removeprefix('torch.')} weights, {quantize or 'not quantized'} "
                  f"(--dtype {args.dtype} --quantize {args.quantize}), decode step {args.compile} "
                  f"(--compile {args.compile}), server on 127.0.0.1 with {where}")  # fmt: skip
            header = (f"{'clients':>7} {'agg tok/s':>10} {'vs 1 client':>11} {'TTFT p50':>9} {'TTFT p95':>9} "
                      f"{'tok p50 ms':>10} {'tok p95 ms':>10} {'lost':>5}")  # fmt: skip
            print(header)
            # the levels run interleaved, --repeats rounds of 1, 4, 8, 16 clients, so a change in the
            # machine's load affects every level alike; each figure is over all rounds (rate: median)
            rounds: dict[int, list[tuple[list[Result], float]]] = {n: [] for n in args.levels}
            for r in range(args.repeats):
                for clients in args.levels:
                    rounds[clients].append(
                        run_clients(base, clients, clients * args.requests, args.tokens, deadline, seed=r)
                    )
            one = None
            for clients in args.levels:
                results = [x for batch, _ in rounds[clients] for x in batch]
                rate = statistics.median(sum(x.tokens for x in batch) / wall for batch, wall in rounds[clients])
                one = rate if one is None else one
                lost = sum(r.outcome != "finished" for r in results)
                ttft = [r.ttft for r in results if r.ttft == r.ttft]
                per_token = [r.per_token * 1000 for r in results if r.per_token == r.per_token]
                print(f"{clients:>7} {rate:>10.1f} {rate / one:>10.2f}x {percentile(ttft, 0.5):>8.3f}s "
                      f"{percentile(ttft, 0.95):>8.3f}s {percentile(per_token, 0.5):>10.1f} "
                      f"{percentile(per_token, 0.95):>10.1f} {lost:>5}", flush=True)  # fmt: skip
            models = {f"compile {args.compile}": (served_model(pipe, device, dtype, quantize), compile)}
            if compile:
                eager_quantize = serving_quantization(args.quantize, dtype, device, cs.get_registry())
                models = {"eager": (served_model(pipe, device, dtype, eager_quantize), False), **models}
            batcher_alone(pipe, models, args.levels, args.tokens, context, args.repeats)
            if args.object_check:
                object_check(pipe, args.object_check, args.tokens, args.cancel, deadline)
            # the baseline: after the levels above, which ran up to 16 clients (the allocator's arenas
            # and the worker threads exist by now; what the soak adds beyond it stayed behind)
            baseline_rss = rss_mib(server.pid)
            if args.soak:
                # in quarters: memory that only the first ones add is the allocator settling; a leak
                # grows in every quarter
                results, wall, rss = [], 0.0, []
                counts = [args.soak // 4 + (q < args.soak % 4) for q in range(4)]
                for quarter, count in enumerate(counts):
                    done, seconds = run_clients(
                        base, 16, count, args.tokens, deadline, cancel=args.cancel, seed=99 + quarter
                    )
                    results += done
                    wall += seconds
                    time.sleep(0.5)  # the last cancellations take effect at the next step
                    rss.append(rss_mib(server.pid))
                load = health(base)
                outcomes = {o: sum(r.outcome == o for r in results) for o in sorted({r.outcome for r in results})}
                lost = sum(r.outcome not in ("finished", "cancelled") for r in results)
                print(f"soak: {len(results)} requests from 16 clients in {wall:.1f}s: {outcomes}; lost {lost}")
                print(f"soak: after it the batch holds running={load['running']} waiting={load['waiting']} "
                      f"rows_in_use={load['rows_in_use']} (decode steps {load['steps']})")  # fmt: skip
                ratios = ", ".join(f"{r:.0f} MiB ({r / baseline_rss:.3f}x)" for r in rss)
                print(f"soak: server RSS {baseline_rss:.0f} MiB before it (baseline), after each quarter: {ratios}")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
