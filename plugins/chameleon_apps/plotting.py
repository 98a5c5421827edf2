"""Loss and stability curves from training metrics (``metrics.jsonl``), drawn with matplotlib.

matplotlib is an optional extra (``pip install chameleon-sdk[plot]``). Every module that draws a
PNG imports it through :func:`require_matplotlib`, which selects the non-interactive Agg backend and
raises :class:`MissingExtraError` (naming the extra) when matplotlib is not installed.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from chameleon_sdk import ChameleonError
from chameleon_sdk.plugin_api import atomic_write_bytes

__all__ = [
    "PANELS",
    "MetricsFileError",
    "MissingExtraError",
    "plot_metrics",
    "read_metrics",
    "require_matplotlib",
]


class MissingExtraError(ChameleonError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


class MetricsFileError(ChameleonError, ValueError):
    """A metrics file is missing, unreadable, or not JSON lines of per-step metrics."""


def require_matplotlib() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (files only, no display needed).

    :raises MissingExtraError: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError(
            "plotting needs matplotlib, an optional extra: pip install 'chameleon-sdk[plot]'"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# (title, metric keys drawn on it, log scale). A panel is drawn when any file has one of its keys.
# Per-layer monitor stats (lists) are drawn as their maximum over layers.
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("loss", ("loss", "cross_entropy"), False),
    ("z-loss", ("z_loss",), True),
    ("learning rate", ("lr",), False),
    ("grad norm", ("grad_norm",), True),
    ("max attention logit (max over layers)", ("max_attention_logit",), False),
    ("layer output norm (max over layers)", ("layer_output_norm",), True),
    ("mean log Z", ("mean_log_z",), False),
    ("tokens/s", ("tokens_per_s",), False),
)


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file (one JSON object with an integer ``step`` per line).

    :raises MetricsFileError: naming the file (and the line) when it is missing or malformed.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetricsFileError(f"metrics file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsFileError(f"cannot read metrics file {str(path)!r}: {exc}") from exc
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MetricsFileError(f"{str(path)!r} line {number} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise MetricsFileError(
                f"{str(path)!r} line {number}: expected a JSON object with an integer 'step', got {line[:80]!r}"
            )
        records.append(record)
    if not records:
        raise MetricsFileError(f"metrics file {str(path)!r} has no records")
    return records


def _scalar(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list) and value and all(isinstance(v, int | float) for v in value):
        return float(max(value))
    return None


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        value = _scalar(record.get(key))
        if value is not None and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(value)
    return steps, values


def _labels(paths: Sequence[Path]) -> list[str]:
    """File names, or their folders' names when the file names repeat (``run-a/metrics.jsonl``)."""
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in paths]


def plot_metrics(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_png: str | os.PathLike[str],
    *,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Draw the loss and stability curves of one or more metrics files into one PNG.

    One panel per quantity present (loss, z-loss, learning rate, grad norm, the stability monitors,
    tokens/s); each file is one line per panel, labelled by its name. The PNG is written atomically.

    :param paths: ``metrics.jsonl`` files written by the ``metrics-jsonl`` callback.
    :param out_png: the PNG to write.
    :returns: the PNG's path.
    :raises MetricsFileError: a file is missing or malformed, or no file has any plottable metric.
    :raises MissingExtraError: matplotlib is not installed.
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files = [Path(p) for p in paths]
    if not files:
        raise MetricsFileError("plot_metrics needs at least one metrics file")
    runs = [read_metrics(p) for p in files]
    panels = [(name, keys, log) for name, keys, log in PANELS if any(_series(r, k)[0] for r in runs for k in keys)]
    if not panels:
        raise MetricsFileError(
            f"no plottable metrics (any of {', '.join(k for _, keys, _ in PANELS for k in keys)}) in "
            f"{', '.join(repr(str(p)) for p in files)}"
        )
    plt = require_matplotlib()
    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3 * rows), squeeze=False)
    try:
        for ax, (name, keys, log) in zip(axes.flat, panels):
            for label, records in zip(_labels(files), runs):
                for key in keys:
                    steps, values = _series(records, key)
                    if steps:
                        suffix = f" {key}" if len(keys) > 1 else ""
                        ax.plot(steps, values, label=f"{label}{suffix}", linewidth=1.2)
            if log and all(v > 0 for line in ax.get_lines() for v in line.get_ydata()):
                ax.set_yscale("log")
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.grid(True, alpha=0.3)
            if len(ax.get_lines()) > 1:
                ax.legend(fontsize="small")
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    return out
