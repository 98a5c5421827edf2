"""Shapes World: the demo's seeded synthetic data and its analytic evaluator."""

from chameleon_apps.shapes.evaluate import Verdict, accuracy, classify, judge
from chameleon_apps.shapes.world import COLORS, SHAPES, Shape, caption, draw_shape, sample_shapes, story_document

__all__ = [
    "COLORS",
    "SHAPES",
    "Shape",
    "Verdict",
    "accuracy",
    "caption",
    "classify",
    "draw_shape",
    "judge",
    "sample_shapes",
    "story_document",
]
