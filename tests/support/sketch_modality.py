"""A third-party-style modality for tests: 2-D sketches as polylines on a 16 x 16 grid.

It lives outside the SDK's packages, as a plugin author's package would: in-process tests register
it with the ``registered_plugin`` fixture; subprocess tests install it through an entry point
(``sketch_plugin_path`` in tests/conftest.py). It has every optional member the SDK reads: payload
types, JSON hooks, renderers and a registry-given name.
"""

from __future__ import annotations

import html
from typing import Any

import attrs
import torch

from chameleon_sdk import plugin_api

GRID = 16
PEN_UP = GRID * GRID  # the code that ends a stroke


@attrs.frozen
class Sketch:
    """Strokes, each a tuple of ``(x, y)`` grid points."""

    strokes: tuple[tuple[tuple[int, int], ...], ...] = attrs.field(
        converter=lambda strokes: tuple(tuple((int(x), int(y)) for x, y in stroke) for stroke in strokes)
    )


@attrs.frozen(kw_only=True)
class SketchOptions:
    max_points: int = 64


class SketchModality:
    """Sketches as one code per grid point and a pen-up code after each stroke."""

    name: str
    payload_types: tuple[type, ...] = (Sketch,)
    codebook_size = PEN_UP + 1
    block_length: int | None = None

    def __init__(self, options: SketchOptions) -> None:
        self.options = options

    def encode(self, payload: Sketch) -> torch.Tensor:
        codes = [code for stroke in payload.strokes for code in [*(x * GRID + y for x, y in stroke), PEN_UP]]
        return torch.tensor(codes, dtype=torch.long)

    def decode(self, codes: torch.Tensor) -> Sketch:
        strokes: list[list[tuple[int, int]]] = [[]]
        for code in codes.tolist():
            if code == PEN_UP:
                strokes.append([])
            else:
                strokes[-1].append(divmod(code, GRID))
        return Sketch(tuple(s for s in strokes if s))

    decode_partial = decode

    @staticmethod
    def payload_to_json(payload: Sketch) -> Any:
        return {"strokes": [[list(point) for point in stroke] for stroke in payload.strokes]}

    @staticmethod
    def payload_from_json(data: Any) -> Sketch:
        return Sketch(data["strokes"])

    @staticmethod
    def render_text(payload: Sketch) -> str:
        return f"[sketch: {len(payload.strokes)} strokes]"

    @staticmethod
    def render_html(payload: Sketch) -> str:
        lines = "".join(
            f'<polyline points="{html.escape(" ".join(f"{x},{y}" for x, y in stroke))}" fill="none" stroke="black"/>'
            for stroke in payload.strokes
        )
        return f'<svg class="sketch" viewBox="0 0 {GRID} {GRID}" width="128" height="128">{lines}</svg>'


@plugin_api.hookimpl
def register_modalities(register):
    register("sketch", SketchModality, options=SketchOptions)
