"""What every lab writes: a JSON report and a PNG figure, each atomically."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chameleon_sdk.plugin_api import atomic_write_bytes, atomic_write_text

__all__ = ["figure_png", "save_report"]


def figure_png(figure: Any) -> bytes:
    """A matplotlib figure as PNG bytes (100 dpi); the figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()
    finally:
        plt.close(figure)


def save_report(
    out_dir: str | os.PathLike[str], report: Mapping[str, Any], png: bytes, *, report_file: str, plot_file: str
) -> tuple[Path, Path]:
    """Write ``report`` as indented JSON and ``png`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / report_file, json.dumps(report, indent=2) + "\n")
    atomic_write_bytes(out / plot_file, png)
    return out / report_file, out / plot_file
