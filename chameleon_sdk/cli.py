"""The ``chameleon`` command line (also ``python -m chameleon_sdk``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from chameleon_sdk import __version__
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import ChameleonError, ConfigError, PluginError
from chameleon_sdk.plugins import KINDS, get_registry


def _cmd_plugins(args: argparse.Namespace) -> int:
    records = get_registry().records(args.kind)  # entry points loaded, and their errors reported, by main
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
    if not records:
        print("no plugins registered")
        return 0
    rows = [("KIND", "NAME", "PROVIDER", "DESCRIPTION")]
    rows += [(r.kind, r.name, f"{r.provider} {r.version}" if r.version else r.provider, r.description) for r in records]
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for kind, name, provider, description in rows:
        print(f"{kind:<{width[0]}}  {name:<{width[1]}}  {provider:<{width[2]}}  {description}".rstrip())
    return 0


class _PromptPart(argparse.Action):
    """Collect ``--prompt`` and ``--image`` in command-line order, so prompts can interleave."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        parts = list(getattr(namespace, "parts", None) or [])
        parts.append(("image" if option_string == "--image" else "text", values))
        namespace.parts = parts


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from chameleon_sdk.document import Document, Text, segment_of
    from chameleon_sdk.document import Image as ImageSegment
    from chameleon_sdk.generation import Guidance
    from chameleon_sdk.generation.events import BlockDone, BlockProgress, BlockStarted, Finished, TextDelta
    from chameleon_sdk.image_io import open_image
    from chameleon_sdk.pipeline import Pipeline
    from chameleon_sdk.progress import progress_bar
    from chameleon_sdk.render import document_to_text, output_suffix, write_document

    to_stdout = args.out in (None, "-")
    if not to_stdout:
        output_suffix(args.out)  # before any work: a bad output name fails at once
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise ConfigError(f"--max-new-tokens must be > 0, got {args.max_new_tokens}")
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[args.dtype]
    items: list[object] = []
    for kind, value in args.parts or []:
        items.append(ImageSegment(open_image(value)) if kind == "image" else value)
    if not items:
        raise ConfigError("give at least one --prompt or --image")
    pipe = Pipeline.from_pretrained(args.model, dtype=dtype, quantize=args.quantize)
    prompt = Document.of(*items)
    sampler = (
        {"name": "greedy"}
        if args.temperature == 0
        else {
            "name": "sample",
            "options": {"temperature": args.temperature, "top_p": args.top_p},
        }
    )
    # guidance acts inside blocks of the generated modality; in text mode it is a no-op
    guidance = None if args.cfg_text <= 0 else Guidance(scale_text=args.cfg_text, scale_image=args.cfg_image)
    block_mode = args.mode not in ("text", "interleaved")
    events = pipe.stream(
        prompt,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        sampler=sampler,
        guidance=guidance,
        seed=args.seed,
        compile="frozen" if args.compile_frozen else args.compile,
        progress_every=1,
        previews=False,
    )
    block = pipe.modalities[args.mode].block_length if block_mode else None
    # streamed text is its own progress on stdout; a bar counts codes (block modes) or text pieces
    show_bar = not args.quiet and (block_mode or not to_stdout)
    result, blocks_done = None, 0
    with progress_bar(
        total=block or args.max_new_tokens, unit="codes" if block_mode else "tok", desc=args.mode, enabled=show_bar
    ) as bar:
        for event in events:
            if isinstance(event, TextDelta):
                if to_stdout:
                    _write_stdout(event.text)
                else:
                    bar.update(1)
            elif isinstance(event, BlockProgress):
                bar.update(1)
            elif isinstance(event, BlockStarted):
                bar.set_description(event.modality)
            elif isinstance(event, BlockDone):
                if to_stdout:
                    _write_stdout(document_to_text(Document([segment_of(event.modality, event.payload)])))
                blocks_done += 1
                bar.set_description("text")
            elif isinstance(event, Finished):
                result = event
    assert result is not None
    if to_stdout:
        # a block cut by --max-new-tokens has no BlockDone: its partial payload ends the document
        cut = [s for s in result.document if not isinstance(s, Text)][blocks_done:]
        _write_stdout(document_to_text(Document(cut)) + "\n")
        if result.reason not in ("stop", "done") and not args.quiet:
            print(f"(stopped: {result.reason})", file=sys.stderr)
        return 0
    out = write_document(args.out, [("prompt", prompt), (f"output ({result.reason})", result.document)])
    print(f"wrote {out} ({result.reason})")
    return 0


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _cmd_train_image_tokenizer(args: argparse.Namespace) -> int:
    from chameleon_sdk.image_tokenizer import train_image_tokenizer

    metrics = train_image_tokenizer(args.config, progress=not args.quiet)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from chameleon_sdk.training import is_main_process
    from chameleon_sdk.training.run import load_run_config, run_training

    config = load_run_config(args.config, args.set or ())
    result = run_training(config, base_dir=args.config.parent, progress=not args.quiet)
    if is_main_process():  # under torchrun: one line, from rank 0
        start = f"steps {result.resumed_from}-{result.steps}" if result.resumed_from else "from step 0"
        print(
            f"trained {result.trained_steps} steps ({start}) in {result.seconds:.1f}s: final loss "
            f"{result.final_loss:.4f}, {result.skipped_steps} skipped; checkpoint {result.checkpoint}"
        )
    _end_if_launched_with_others()
    return 0


def _end_if_launched_with_others() -> None:
    """In one of several processes that torchrun started, end now: flush, then ``os._exit(0)``.

    PyTorch keeps a gloo process group alive past ``destroy_process_group`` when something still
    holds it (DDP's reducer, DTensor's sharding caches). Interpreter shutdown then destroys it, and
    gloo's worker threads can abort the process ("terminate called without an active exception")
    after a run that finished and wrote everything; torchrun reports that as a failed run. Every
    file the run wrote is complete by now (written atomically), so shutdown is skipped.
    """
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "0", "1") and "TORCHELASTIC_RUN_ID" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _cmd_convert(args: argparse.Namespace) -> int:
    import torch

    from chameleon_sdk.convert import convert

    dtype = None if args.dtype is None else {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    written = convert(args.source, args.destination, to=args.to, dtype=dtype)
    print(f"wrote {written} ({args.to})")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from chameleon_sdk.adapters import merge_checkpoint

    written = merge_checkpoint(args.base, args.adapter, args.destination, to=args.format)
    print(f"wrote {written} ({args.format}, adapter merged)")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from chameleon_sdk.finetune_plan import plan_run, plan_table

    plans = plan_run(
        args.config,
        args.set or (),
        max_devices=args.devices,
        rank=args.rank,
        targets=args.targets,
        preset=args.preset,
        device_type=args.device_type,
        bf16=None if args.weights is None else args.weights == "bf16",
    )
    print(plan_table(plans))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chameleon", description="Mixed-modal early-fusion models, built from plugins."
    )
    parser.add_argument("--version", action="version", version=f"chameleon-sdk {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("plugins", help="list registered plugins")
    p.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, provider, ...}")
    p.add_argument("--kind", choices=list(KINDS), help="only plugins of this kind")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("generate", help="generate text, images or any modality's payloads from a saved pipeline")
    p.add_argument(
        "--model",
        required=True,
        help="a directory written by Pipeline.save_pretrained, or a released checkpoint folder (HF, Meta, Anole)",
    )
    p.add_argument("--prompt", action=_PromptPart, dest="parts", help="prompt text (repeatable)")
    p.add_argument("--image", action=_PromptPart, dest="parts", help="a prompt image file (repeatable)")
    p.add_argument(
        "--mode",
        default="text",
        help="text, interleaved, or the name of any modality of the pipeline (image, audio, ...): "
        "one block of it (default: text)",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: 256, or what the context allows")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument(
        "--cfg-text",
        type=float,
        default=3.0,
        help="classifier-free guidance on the text, inside blocks of the generated modality (0: off)",
    )
    p.add_argument("--cfg-image", type=float, default=1.2, help="guidance on the prompt's non-text segments")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="weights' dtype")
    p.add_argument(
        "--quantize", default=None,
        help="a quantization plugin: onednn-packed (bf16 on a CPU), int8-weight-only (needs torchao)",
    )  # fmt: skip
    p.add_argument("--compile", action="store_true", help="compile the decode step (pays for long outputs)")
    p.add_argument(
        "--compile-frozen", action="store_true",
        help="compile it with the weights frozen in (CPU: faster in bf16 and int8, slower to compile, more memory)",
    )  # fmt: skip
    p.add_argument(
        "--out", default=None, help="output file: .html, .md or .json; '-' or none: the output as text on stdout"
    )
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("train-image-tokenizer", help="train an image tokenizer from a JSON/TOML config")
    p.add_argument("config", help="config file: data, output, tokenizer {name, options}, training {...}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_image_tokenizer)

    p = sub.add_parser("train", help="train a model from a run config (.toml or .json)")
    p.add_argument("config", type=Path, help="the run config")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "convert",
        help="convert a checkpoint (pipeline, Hugging Face folder, Meta's download, or a bare model) to another layout",
    )
    p.add_argument("source", help="the folder to read (any readable layout)")
    p.add_argument("destination", help="the folder to write (replaced as a whole)")
    p.add_argument(
        "--to",
        required=True,
        choices=["native", "hf", "original"],
        help="native: a saved pipeline (or model); hf: what transformers loads; original: Meta's layout",
    )
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="cast the weights (default: as stored)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("merge", help="fold a saved adapter (LoRA) into its base checkpoint's weights")
    p.add_argument("base", help="the base checkpoint the adapter was trained on (any readable layout)")
    p.add_argument("adapter", help="the adapter folder (adapter.json + adapter.safetensors)")
    p.add_argument("destination", help="the folder to write (replaced as a whole)")
    p.add_argument("--format", choices=["native", "hf"], default="native", help="the layout to write (default: native)")
    p.set_defaults(func=_cmd_merge)

    p = sub.add_parser(
        "plan", help="the memory per device a run needs: full fine-tuning vs LoRA vs LoRA + checkpointing"
    )
    p.add_argument("config", type=Path, help="the run config (as for chameleon train)")
    p.add_argument("--devices", type=int, default=8, help="plan for 1, 2, 4, ... up to this many devices (default 8)")
    p.add_argument("--preset", choices=["debug", "7b", "34b"], help="the model shape, for a run on a pretrained model")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument(
        "--targets",
        nargs="+",
        default=["attention", "mlp"],
        help="LoRA target groups: attention mlp head head-image-rows",
    )
    p.add_argument("--device-type", choices=["cuda", "cpu"], default="cuda", help="where the run trains")
    p.add_argument("--weights", choices=["bf16", "fp32"], help="the weights' dtype (default: the trainer's precision)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.set_defaults(func=_cmd_plan)

    from chameleon_sdk.serve.command import add_serve_command  # Starlette and uvicorn load only when it runs

    add_serve_command(sub)

    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """The subcommands plugins add through the ``register_commands`` hook; one that fails is reported
    as a warning and left out, a name already taken is an error naming the plugin."""
    registry = get_registry()
    with warnings.catch_warnings():  # main reports each load error once, as a message
        warnings.simplefilter("ignore", RuntimeWarning)
        registry.load()
    for impl in registry.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(subcommands=sub)
        except argparse.ArgumentError as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} adds a command whose name is taken: {exc}") from exc
        except Exception as exc:
            warnings.warn(f"plugin {impl.plugin_name!r} could not add its commands: {exc!r}", stacklevel=2)


def _report(exc: BaseException, *, debug: bool) -> int:
    """One ``error:`` line for ``exc`` (the traceback too under ``--debug``) and the exit status:
    2 for the input's fault (a ChameleonError), 1 for the environment's (an OSError: a full disk, a
    read-only folder) or anything else. ``SystemExit`` passes (argparse's own exit 2)."""
    if isinstance(exc, SystemExit):
        raise exc
    if debug:
        traceback.print_exception(exc)
    if not isinstance(exc, (ChameleonError, OSError)):
        exc = _mapped(exc)
    if isinstance(exc, ChameleonError):
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError):
        where = f": {exc.filename!r}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    print(
        f"error: unexpected {type(exc).__name__}: {exc} (a bug in chameleon-sdk? --debug shows the traceback)",
        file=sys.stderr,
    )
    return 1


def _mapped(exc: BaseException) -> BaseException:
    """``exc`` as :func:`foreign_errors` maps it (RecursionError, CheckpointException...), or itself."""
    try:
        with foreign_errors("the input", ChameleonError):
            raise exc
    except BaseException as mapped:
        return mapped


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ChameleonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for error in get_registry().load_errors:  # every command, --help too, says which plugin is missing
        print(f"warning: {error}", file=sys.stderr)
    args = parser.parse_args(argv)
    if args.command is None:  # bare `chameleon`: what git and pip do
        parser.print_help()
        return 0
    # warnings (a resumed run's schedule, a broken plugin) read as messages, not as source lines
    formatwarning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`chameleon plugins | head`): end quietly, as other Unix tools do;
        # stdout is pointed at devnull so the interpreter's final flush cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        return _report(exc, debug=args.debug)
    finally:
        warnings.formatwarning = formatwarning
