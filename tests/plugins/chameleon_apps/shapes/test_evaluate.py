"""The analytic evaluator sees what Shapes World drew, and nothing where nothing was drawn."""

from __future__ import annotations

import random

import numpy as np
import PIL.Image
import pytest
from chameleon_apps.shapes import COLORS, SHAPES, accuracy, classify, draw_shape, judge, sample_shapes
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("size", [32, 64])
def test_ground_truth_accuracy_is_at_least_99_percent(size):
    samples = sample_shapes(300, seed=11, size=size)
    result = judge(samples, [s.image for s in samples])
    assert result["n"] == 300
    assert result["both"] >= 0.99, result


@settings(max_examples=60, deadline=None)
@given(
    color=st.sampled_from(list(COLORS)),
    shape=st.sampled_from(SHAPES),
    seed=st.integers(0, 2**32 - 1),
    rotate=st.booleans(),
)
def test_any_drawn_shape_is_recognised(color, shape, seed, rotate):
    verdict = classify(draw_shape(color, shape, random.Random(seed), size=64, rotate=rotate))
    assert (verdict.color, verdict.shape) == (color, shape), verdict


def test_blank_and_grey_images_show_no_shape():
    assert classify(PIL.Image.new("RGB", (64, 64), "white")).color is None
    assert classify(PIL.Image.new("RGB", (64, 64), (128, 128, 128))).shape is None


def test_a_few_stray_pixels_do_not_change_the_verdict():
    image = draw_shape("blue", "triangle", random.Random(3), size=64)
    pixels = np.asarray(image).copy()
    rng = np.random.default_rng(0)
    for y, x in rng.integers(0, 64, size=(6, 2)):
        pixels[y, x] = COLORS["red"]
    verdict = classify(PIL.Image.fromarray(pixels))
    assert (verdict.color, verdict.shape) == ("blue", "triangle")


def test_accuracy_counts_colour_shape_and_both():
    rows = [
        {"color": "red", "shape": "circle", "predicted": {"color": "red", "shape": "circle"}},
        {"color": "red", "shape": "square", "predicted": {"color": "red", "shape": "circle"}},
        {"color": "blue", "shape": "square", "predicted": {"color": None, "shape": None}},
        {"color": "blue", "shape": "square", "predicted": {"color": "green", "shape": "square"}},
    ]
    assert accuracy(rows) == {"n": 4, "color": 0.5, "shape": 0.5, "both": 0.25}
