"""Counting the outcomes of test_bad_input_classes.py: every bad input goes through
:func:`expect_error` (or :func:`expect_ok`), which classifies its outcome and counts it under its
class of issue 16.

The run prints the table at its end (``pytest_terminal_summary`` in conftest.py): inputs per class
and the outcomes that are not typed errors (``untyped``: an exception outside the hierarchy,
``silent``: a bad input accepted, ``hung``: over the time bound). The tests fail on any of those.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

import chameleon_sdk as cs

#: seconds a bad input may take before it counts as hung
TIME_BOUND = 20.0

#: class -> outcome -> count
COUNTS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


def expect_error(
    klass: str,
    call: Callable[[], Any],
    *,
    names: str | None = None,
    error: type[BaseException] = cs.ChameleonError,
) -> BaseException:
    """Run ``call``: it must raise ``error`` within :data:`TIME_BOUND`, its message naming ``names``
    when given. Counts the outcome under ``klass``."""
    start = time.monotonic()
    outcome, caught = "silent", None
    try:
        call()
    except error as exc:
        outcome, caught = "typed", exc
    except BaseException as exc:
        outcome, caught = "untyped", exc
    seconds = time.monotonic() - start
    if outcome == "typed" and seconds > TIME_BOUND:
        outcome = "hung"
    COUNTS[klass][outcome] += 1
    if outcome == "untyped":
        raise AssertionError(f"[{klass}] escaped as {type(caught).__name__}: {caught}") from caught
    assert outcome != "silent", f"[{klass}] the bad input was accepted"
    assert outcome != "hung", f"[{klass}] took {seconds:.1f} s"
    assert caught is not None
    if names is not None:
        assert names in str(caught), f"[{klass}] {str(caught)!r} does not name {names!r}"
    return caught


def expect_ok(klass: str, call: Callable[[], Any]) -> Any:
    """Run ``call``, which must succeed (an input the SDK promises to accept); counts it."""
    try:
        result = call()
    except BaseException:
        COUNTS[klass]["untyped"] += 1
        raise
    COUNTS[klass]["typed"] += 1
    return result


def record(klass: str, outcome: str) -> None:
    """Count one outcome decided elsewhere (a CLI case run in a child process)."""
    COUNTS[klass][outcome] += 1


def table() -> list[str]:
    """One line per class: inputs and the outcomes that are not typed errors."""
    lines = [f"{'class':<24} {'inputs':>6} {'untyped':>8} {'silent':>7} {'hung':>5}"]
    for klass in sorted(COUNTS, key=lambda k: int(k.split()[0])):
        c = COUNTS[klass]
        lines.append(f"{klass:<24} {sum(c.values()):>6} {c['untyped']:>8} {c['silent']:>7} {c['hung']:>5}")
    return lines
