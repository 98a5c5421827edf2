"""``chameleon serve``: its arguments and what it runs (registered by ``chameleon_sdk.cli``)."""

from __future__ import annotations

import argparse
import os

import attrs

from chameleon_sdk.errors import ConfigError
from chameleon_sdk.serve.options import ServeOptions
from chameleon_sdk.serve.weights import DTYPE_CHOICES

__all__ = ["add_serve_command"]


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the CLI's subcommands."""
    defaults = ServeOptions()
    p = sub.add_parser("serve", help="serve a saved pipeline: web page, HTTP API, OpenAI-compatible chat")
    p.add_argument("--model", required=True, help="a directory written by Pipeline.save_pretrained")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:1... (default: cpu)")
    p.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default="auto",
        help="the weights' dtype (default: auto, bfloat16 where the device computes it natively, else float32)",
    )  # fmt: skip
    p.add_argument(
        "--quantize", default="auto",
        help="a quantization plugin, or none (default: auto, onednn-packed for bf16 weights on a CPU, else none)",
    )  # fmt: skip
    p.add_argument(
        "--api-key", default=os.environ.get("CHAMELEON_API_KEY"),
        help="require 'Authorization: Bearer KEY' on the API (default: $CHAMELEON_API_KEY, else none)",
    )  # fmt: skip
    for field in attrs.fields(ServeOptions):
        if field.name not in ("api_key", "compile"):
            kind = float if field.name == "request_timeout" else int
            flag = "--" + field.name.replace("_", "-")
            p.add_argument(flag, type=kind, default=getattr(defaults, field.name), help="default: %(default)s")
    compiling = p.add_mutually_exclusive_group()
    compiling.add_argument(
        "--compile", action="store_const", const=True, default=False,
        help="compile the decode step at start (CPU; once per row count: 1, 2, 4... --max-rows)",
    )  # fmt: skip
    compiling.add_argument(
        "--compile-frozen", dest="compile", action="store_const", const="frozen",
        help="compile with the weights frozen in (faster in bf16, int8; slower start, weights copied per row count)",
    )  # fmt: skip
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Load the pipeline and run uvicorn until interrupted."""
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigError(f"chameleon serve needs the serve extra: pip install 'chameleon-sdk[serve]' ({exc})") from exc
    from chameleon_sdk.pipeline import Pipeline, checked_device
    from chameleon_sdk.plugins import get_registry
    from chameleon_sdk.serve import create_app
    from chameleon_sdk.serve.batch_forward import check_compile, row_counts
    from chameleon_sdk.serve.memory import bound_kernel_caches
    from chameleon_sdk.serve.weights import serving_dtype, serving_quantization

    chosen = {f.name: getattr(args, f.name) for f in attrs.fields(ServeOptions)}
    options = ServeOptions(**chosen)  # before loading anything: bad limits fail at once
    if not 0 <= args.port < 65536:
        raise ConfigError(f"--port must be in [0, 65535], got {args.port}")
    bound_kernel_caches()  # before the first matmul, when the libraries read it
    device = checked_device(args.device)
    check_compile(options.compile, options.max_rows, device)
    dtype = serving_dtype(args.dtype, device)
    quantize = serving_quantization(args.quantize, dtype, device, get_registry(), compile=options.compile)
    pipe = Pipeline.from_pretrained(args.model, device=device, dtype=dtype, quantize=quantize)
    if options.compile:
        counts = ", ".join(map(str, row_counts(options.max_rows)))
        print(f"compiling the decode step for {counts} rows (once per row count)...", flush=True)
    app = create_app(pipe, options)
    weights = [_chosen(str(dtype).removeprefix("torch.") + " weights", "--dtype", args.dtype)]
    weights += [] if quantize is None else [_chosen(quantize, "--quantize", args.quantize)]
    where = f"http://{args.host}:{args.port}/"
    print(f"serving {args.model} with {', '.join(weights)} on {where} (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _chosen(value: str, flag: str, choice: str) -> str:
    """``value``, saying so when ``auto`` chose it."""
    return f"{value} ({flag} auto)" if choice == "auto" else value
