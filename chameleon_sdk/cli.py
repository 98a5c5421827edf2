"""The ``chameleon`` command line (also ``python -m chameleon_sdk``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from chameleon_sdk import __version__
from chameleon_sdk.errors import ChameleonError
from chameleon_sdk.plugins import KINDS, get_registry


def _cmd_plugins(args: argparse.Namespace) -> int:
    records = get_registry().records(args.kind)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
    if not records:
        print("no plugins registered")
        return 0
    width = max(len(r.kind) for r in records), max(len(r.name) for r in records)
    for r in records:
        provider = f"{r.provider} {r.version}" if r.version else r.provider
        print(f"{r.kind:<{width[0]}}  {r.name:<{width[1]}}  {provider:<24}  {r.description}")
    for error in get_registry().load_errors:
        print(f"warning: {error}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from chameleon_sdk.demo import run_demo

    run_demo(args.out, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chameleon", description="Mixed-modal early-fusion models, built from plugins."
    )
    parser.add_argument("--version", action="version", version=f"chameleon-sdk {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list registered plugins")
    p.add_argument("--json", action="store_true", help="print a JSON list of {kind, name, provider, ...}")
    p.add_argument("--kind", choices=list(KINDS), help="only plugins of this kind")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("demo", help="run the end-to-end demo")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--quick", action="store_true", help="a shorter run, as the tests use")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ChameleonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
