"""Start-up time of the ``chameleon`` command: ``--help``, ``--version`` and ``plugins``.

Each command runs ``--runs`` times as a fresh subprocess (the console script next to this Python);
the baseline is ``python -c pass`` run the same way, interleaved with the commands, so load from
other processes on the machine affects both sides. Prints the median seconds of each and its
ratio to the baseline.

    .venv/bin/python benchmarks/cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    chameleon = str(Path(sys.executable).with_name("chameleon"))
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "chameleon --help": [chameleon, "--help"],
        "chameleon --version": [chameleon, "--version"],
        "chameleon plugins": [chameleon, "plugins"],
    }
    for argv in commands.values():  # warm the file cache once
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv in commands.items():
            times[name].append(timed(argv))
    baseline = statistics.median(times["python -c pass (baseline)"])
    print(f"median of {args.runs} runs each, interleaved")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<28} {median:7.3f} s   {median / baseline:6.1f}x baseline")


if __name__ == "__main__":
    main()
