"""An analytic Shapes World evaluator: no learned model, only pixel statistics.

- **Colour**: the pixels that are clearly not white (chroma above a threshold) vote with their hue;
  the colour is the Shapes World colour whose hue is nearest the circular median of the votes.
- **Shape**: the pixels of that colour form a mask. Two rotation- and scale-free statistics place
  it: the *rectangle fill* (mask area over the area of its minimum-area bounding rectangle: pi/4
  for a circle, 1 for a square, 1/2 for a triangle) and the *circle fill* (mask area over
  ``pi R^2`` for the circumradius ``R``, a high percentile of the pixels' distances from the
  centroid: 1, 2/pi and 3*sqrt(3)/(4 pi)). The shape is the nearest of the three ideal points.
  Two statistics, not one, because blurred corners (a generated or reconstructed picture) shrink
  ``R`` and push a triangle's circle fill towards a square's, while the rectangle fill keeps
  triangles apart and the circle fill keeps circles and squares apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import PIL.Image

from chameleon_apps.shapes.world import COLORS, SHAPES, Shape

__all__ = ["Verdict", "accuracy", "classify", "judge"]

_MIN_CHROMA = 60  # max(rgb) - min(rgb): white and grey backgrounds stay below it
_MIN_PIXELS = 6
# (rectangle fill, circle fill) of the ideal shapes
_IDEAL = {
    "circle": (math.pi / 4, 1.0),
    "square": (1.0, 2 / math.pi),
    "triangle": (0.5, 3 * math.sqrt(3) / (4 * math.pi)),
}


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of an [..., 3] float array."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    hi, lo = rgb.max(-1), rgb.min(-1)
    delta = np.maximum(hi - lo, 1e-6)
    hue = np.where(hi == r, ((g - b) / delta) % 6, np.where(hi == g, (b - r) / delta + 2, (r - g) / delta + 4))
    return (hue * 60.0) % 360.0


_COLOR_HUES = {name: float(_hue(np.array(rgb, dtype=np.float64))) for name, rgb in COLORS.items()}


def _hue_distance(a: np.ndarray | float, b: float) -> np.ndarray:
    d = np.abs(np.asarray(a) - b) % 360.0
    return np.minimum(d, 360.0 - d)


@attrs.frozen
class Verdict:
    """What the evaluator sees in one image (``None`` where it sees no shape)."""

    color: str | None
    shape: str | None
    rect_fill: float = float("nan")  # area / minimum bounding rectangle
    circle_fill: float = float("nan")  # area / (pi R^2)
    pixels: int = 0


def classify(image: PIL.Image.Image) -> Verdict:
    """The colour and shape of the one shape in ``image``."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    chroma = rgb.max(-1) - rgb.min(-1)
    coloured = chroma >= _MIN_CHROMA
    if coloured.sum() < _MIN_PIXELS:
        return Verdict(None, None)
    hues = _hue(rgb[coloured])
    names = list(_COLOR_HUES)
    nearest = np.stack([_hue_distance(hues, _COLOR_HUES[n]) for n in names]).argmin(0)
    votes = np.bincount(nearest, minlength=len(names))
    color = names[int(votes.argmax())]
    # The mask is the pixels voting for the winning colour (anti-aliased edges and stray codes in
    # other hues stay out of it).
    mask = np.zeros(coloured.shape, dtype=bool)
    mask[coloured] = nearest == votes.argmax()
    ys, xs = np.nonzero(mask)
    if len(xs) < _MIN_PIXELS:
        return Verdict(color, None, pixels=len(xs))
    cy, cx = ys.mean() + 0.5, xs.mean() + 0.5
    distance = np.hypot(ys + 0.5 - cy, xs + 0.5 - cx)
    radius = float(np.percentile(distance, 99)) + 0.5  # pixel centres sit half a pixel inside the edge
    circle_fill = len(xs) / (math.pi * radius**2)
    rect_fill = len(xs) / _min_rectangle_area(xs, ys)
    shape = min(SHAPES, key=lambda s: (rect_fill - _IDEAL[s][0]) ** 2 + (circle_fill - _IDEAL[s][1]) ** 2)
    return Verdict(color, shape, rect_fill=rect_fill, circle_fill=circle_fill, pixels=len(xs))


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain over integer points ``[N, 2]``; counter-clockwise, no repeats."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return np.asarray(pts, dtype=np.float64)

    def chain(seq: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for p in seq:
            while len(out) >= 2 and (
                (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0]) <= 0
            ):
                out.pop()
            out.append(p)
        return out

    return np.asarray(chain(pts)[:-1] + chain(pts[::-1])[:-1], dtype=np.float64)


def _min_rectangle_area(xs: np.ndarray, ys: np.ndarray) -> float:
    """The area of the smallest rectangle (any rotation) that covers the pixels (as unit squares).

    The minimum-area rectangle has a side along an edge of the convex hull (rotating calipers).
    """
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    hull = _convex_hull(corners)
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.arctan2(edges[:, 1], edges[:, 0])
    cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
    u = hull[None, :, 0] * cos + hull[None, :, 1] * sin  # [edges, hull points]
    v = -hull[None, :, 0] * sin + hull[None, :, 1] * cos
    return float(((u.max(1) - u.min(1)) * (v.max(1) - v.min(1))).min())


def accuracy(rows: Iterable[Mapping[str, Any]], *, predicted: str = "predicted") -> dict[str, float]:
    """Colour, shape and joint accuracy of rows holding ``color``, ``shape`` and ``rows[predicted]``
    (a mapping with the predicted ``color`` and ``shape``)."""
    rows = list(rows)
    if not rows:
        return {"n": 0, "color": float("nan"), "shape": float("nan"), "both": float("nan")}
    color = sum(r["color"] == r[predicted]["color"] for r in rows)
    shape = sum(r["shape"] == r[predicted]["shape"] for r in rows)
    both = sum(r["color"] == r[predicted]["color"] and r["shape"] == r[predicted]["shape"] for r in rows)
    n = len(rows)
    return {"n": n, "color": color / n, "shape": shape / n, "both": both / n}


def judge(expected: Sequence[Shape], images: Sequence[PIL.Image.Image]) -> dict[str, float]:
    """The evaluator's accuracy on ``images`` that should show ``expected``'s colours and shapes."""
    if len(expected) != len(images):
        raise ValueError(f"judge: {len(expected)} expected shapes but {len(images)} images")
    verdicts = (attrs.asdict(classify(image)) for image in images)
    return accuracy({"color": s.color, "shape": s.shape, "predicted": v} for s, v in zip(expected, verdicts))
