"""Shapes World: a seeded synthetic mixed-modal world (one coloured shape on white, and its caption).

Every image is ``size`` x ``size`` RGB (64 by default) on a white background with one filled
circle, square or triangle in red, green, blue or yellow, at a random place and scale; squares and
triangles are also rotated at random. Captions read ``"a red circle"``; interleaved documents put
several captioned pictures in one document ("Here is a red circle: <image> Next to it, a blue
square: <image>"). Everything is a pure function of the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import attrs
import PIL.Image
import PIL.ImageDraw

from chameleon_sdk import Document, Image, Text

__all__ = ["COLORS", "SHAPES", "Shape", "caption", "draw_shape", "sample_shapes", "story_document"]

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")


@attrs.frozen
class Shape:
    """One Shapes World sample: its colour and shape names and the picture."""

    color: str
    shape: str
    image: PIL.Image.Image = attrs.field(eq=False, repr=False)

    @property
    def caption(self) -> str:
        return caption(self.color, self.shape)


def caption(color: str, shape: str) -> str:
    """The caption of a shape: ``"a red circle"``."""
    return f"a {color} {shape}"


def _polygon(cx: float, cy: float, radius: float, corners: int, angle: float) -> list[tuple[float, float]]:
    return [
        (
            cx + radius * math.cos(angle + 2 * math.pi * k / corners),
            cy + radius * math.sin(angle + 2 * math.pi * k / corners),
        )
        for k in range(corners)
    ]


def draw_shape(
    color: str,
    shape: str,
    rng: random.Random,
    *,
    size: int = 64,
    radius: tuple[float, float] = (0.22, 0.4),
    rotate: bool = True,
) -> PIL.Image.Image:
    """Draw one ``shape`` in ``color`` on white.

    :param rng: the source of the random centre, radius and rotation.
    :param radius: the circumradius range as fractions of ``size``.
    :param rotate: rotate squares and triangles by a random angle (otherwise they sit upright).
    """
    if color not in COLORS or shape not in SHAPES:
        raise ValueError(f"unknown colour/shape {color!r}/{shape!r}; expected one of {list(COLORS)} / {list(SHAPES)}")
    image = PIL.Image.new("RGB", (size, size), "white")
    draw = PIL.ImageDraw.Draw(image)
    r = rng.uniform(*radius) * size
    cx, cy = (rng.uniform(r + 1, size - r - 1) for _ in range(2))
    spin = rng.uniform(0, 2 * math.pi) if rotate else None
    fill = COLORS[color]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, r, 4, math.pi / 4 if spin is None else spin), fill=fill)
    else:
        draw.polygon(_polygon(cx, cy, r, 3, -math.pi / 2 if spin is None else spin), fill=fill)
    return image


def sample_shapes(count: int, *, seed: int, size: int = 64, rotate: bool = True) -> list[Shape]:
    """``count`` seeded samples with uniformly drawn colour and shape."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        samples.append(Shape(color, shape, draw_shape(color, shape, rng, size=size, rotate=rotate)))
    return samples


def story_document(shapes: Sequence[Shape]) -> Document:
    """An interleaved document: ``"Here is a red circle:" <image> " Next to it, a blue square:" <image> ...``."""
    segments: list[Text | Image] = []
    for i, s in enumerate(shapes):
        lead = "Here is" if i == 0 else " Next to it,"
        segments += [Text(f"{lead} {s.caption}:"), Image(s.image)]
    return Document(segments)
