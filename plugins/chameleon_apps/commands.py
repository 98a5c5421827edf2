"""The subcommands this package adds to ``chameleon``: ``demo``, ``lab stability``, ``lab mot``, ``plot``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from chameleon_sdk import from_dict, to_dict

if TYPE_CHECKING:
    from chameleon_apps.demo import DemoPlan


def _demo_plan(args: argparse.Namespace, where: str) -> DemoPlan:
    """The demo plan, quick or default, changed by ``--set KEY=VALUE``."""
    from chameleon_apps.demo import PLANS, DemoPlan
    from chameleon_sdk.plugin_api import apply_overrides

    base = to_dict(PLANS["quick" if args.quick else "default"])
    return from_dict(DemoPlan, apply_overrides(base, args.set or []), where=where)


def _demo(args: argparse.Namespace) -> int:
    from chameleon_apps.demo import run_demo

    plan = _demo_plan(args, "chameleon demo --set")
    run_demo(args.out, quick=args.quick, plan=plan, quiet=args.quiet)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from chameleon_apps.plotting import plot_metrics

    out = plot_metrics(args.metrics, args.out, title=args.title)
    print(f"wrote {out}")
    return 0


def _lab_stability(args: argparse.Namespace) -> int:
    from chameleon_apps.lab import StabilitySweepConfig, run_stability_sweep

    given = {"lrs": args.lrs, "arms": args.arms, "steps": args.steps, "seed": args.seed}
    changes = {key: value for key, value in given.items() if value is not None}
    config = StabilitySweepConfig.quick(**changes) if args.quick else StabilitySweepConfig(**changes)
    progress = None if args.quiet else (lambda run: print(run.line(), file=sys.stderr, flush=True))
    report = run_stability_sweep(config, out_dir=args.out, progress=progress)
    print(report.table())
    print(f"wrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'stability.png'} in {report.seconds:.0f}s")
    return 0


def _lab_mot(args: argparse.Namespace) -> int:
    from chameleon_apps.lab.mot import MoTLabConfig, run_mot_lab

    plan = _demo_plan(args, "chameleon lab mot --set")
    given = {"steps": args.steps, "eval_every": args.eval_every, "untie": args.untie}
    config = MoTLabConfig(plan=plan, **{key: value for key, value in given.items() if value is not None})

    def say(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    report = run_mot_lab(args.out, config, say=say)
    print(report.table())
    print(f"wrote {Path(args.out) / 'report.json'} and {Path(args.out) / 'mot.png'} in {report.seconds:.0f}s")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``plot``, ``demo`` and ``lab`` to the ``chameleon`` command's sub-parsers."""
    p = sub.add_parser("plot", help="draw loss and stability curves from metrics.jsonl files (needs the plot extra)")
    p.add_argument("metrics", nargs="+", type=Path, help="metrics.jsonl files (one line per file in each panel)")
    p.add_argument("-o", "--out", type=Path, default=Path("curves.png"), help="the PNG (default: curves.png)")
    p.add_argument("--title", default=None, help="a title above the panels")
    p.set_defaults(func=_plot)

    p = sub.add_parser("demo", help="run the end-to-end demo")
    p.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    p.add_argument("--quick", action="store_true", help="a shorter run, as the tests use")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change the plan: lm_steps=2000, device=cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars or phase lines")
    p.set_defaults(func=_demo)

    lab = sub.add_parser("lab", help="experiments that reproduce the paper's findings at small scale")
    lab_sub = lab.add_subparsers(dest="experiment", required=True)
    p = lab_sub.add_parser("stability", help="learning-rate sweep of the stability tricks (docs/stability-lab.md)")
    p.add_argument("--out", default="stability-lab", help="output directory (default: stability-lab)")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny model, few steps)")
    p.add_argument("--lrs", type=float, nargs="+", help="peak learning rates (default: 1e-3 ... 1, 7 points)")
    p.add_argument("--arms", nargs="+", help="arms: 'baseline' or trick names joined by '+' (default: 6 arms)")
    p.add_argument("--steps", type=int, help="optimizer steps per run")
    p.add_argument("--seed", type=int, help="initialisation and data seed")
    p.add_argument("--quiet", action="store_true", help="no line per finished run")
    p.set_defaults(func=_lab_stability)
    p = lab_sub.add_parser("mot", help="dense vs modality-aware experts on Shapes World (docs/mot.md)")
    p.add_argument("--out", default="mot-lab", help="output directory (default: mot-lab)")
    p.add_argument("--quick", action="store_true", help="the demo's quick plan: a smoke run, not a result")
    p.add_argument("--steps", type=int, help="training steps of each arm (default: the plan's lm_steps)")
    p.add_argument("--eval-every", type=int, help="held-out evaluation every this many steps (default: 50)")
    p.add_argument("--untie", nargs="+", choices=["attention", "ffn", "norms"], help="parts MoT unties (default: all)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="change the demo plan: lm_steps=2000")
    p.add_argument("--quiet", action="store_true", help="no phase lines")
    p.set_defaults(func=_lab_mot)
