"""Progress for long-running work: a tqdm bar on a terminal, plain periodic lines elsewhere.

A bar redrawn with carriage returns is noise in a log file or a pipe (what ``tqdm(disable=None)``
avoids by drawing nothing); a job's log still wants to show that it is alive, so off a terminal
:func:`progress_bar` writes one plain line every ``interval`` seconds and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["PlainProgress", "progress_bar"]


class PlainProgress:
    """The part of tqdm's interface the SDK uses, writing ``desc: n/total unit`` lines."""

    def __init__(
        self, *, total: int | None, initial: int, unit: str, desc: str, stream: IO[str], interval: float
    ) -> None:
        self.total, self.n, self.unit, self.desc = total, initial, unit, desc
        self.stream, self.interval = stream, interval
        self.postfix = ""
        self._started = self._last = time.monotonic()
        self._start_n = initial
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _write(self) -> None:
        elapsed = time.monotonic() - self._started
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        line = f"{self.desc}: {self.n}{of} {self.unit} ({elapsed:.0f}s, {rate:.1f} {self.unit}/s{extra})"
        print(line, file=self.stream)
        self.stream.flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._write()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(
    *,
    total: int | None,
    unit: str,
    desc: str,
    enabled: bool = True,
    initial: int = 0,
    stream: IO[str] | None = None,
    interval: float = 10.0,
) -> Any:
    """A progress reporter with tqdm's ``update``/``set_description``/``set_postfix``/``close``.

    :param enabled: ``False`` (a ``--quiet`` flag) reports nothing at all.
    :param stream: where to write (default ``sys.stderr``); a bar when it is a terminal, otherwise a
        plain line every ``interval`` seconds and at :meth:`close`.
    """
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, file=stream)
    return PlainProgress(total=total, initial=initial, unit=unit, desc=desc, stream=stream, interval=interval)
