"""The built-in ``metrics-jsonl`` callback: one JSON line of metrics per step."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from chameleon_sdk import Callback


@attrs.frozen(kw_only=True)
class MetricsOptions:
    """:param filename: the file written in the run's output folder."""

    filename: str = "metrics.jsonl"


class MetricsWriter(Callback):
    """Writes ``metrics.jsonl`` in the run folder: one line per step (a resumed run rewrites from there)."""

    def __init__(self, options: MetricsOptions | None = None) -> None:
        self.options = options or MetricsOptions()
        self.path: Path | None = None

    def on_train_start(self, info: Mapping[str, Any]) -> None:
        out_dir = info.get("out_dir")
        if out_dir is None:
            return
        self.path = Path(out_dir) / self.options.filename
        start = int(info.get("start_step", 0))
        kept = []
        if self.path.is_file() and start > 0:  # keep the lines of the steps before the resume point
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", start) < start:
                        kept.append(line)
                except json.JSONDecodeError:
                    break
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def on_step_end(self, metrics: Mapping[str, Any]) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(dict(metrics), default=float) + "\n")
