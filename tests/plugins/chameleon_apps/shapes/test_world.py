"""Shapes World is seeded, well-formed, and its stories are interleaved documents."""

from __future__ import annotations

import random

import pytest
from chameleon_apps.shapes import COLORS, SHAPES, draw_shape, sample_shapes, story_document

from chameleon_sdk import Document, Image, Text


def test_samples_are_a_pure_function_of_the_seed():
    a, b = sample_shapes(20, seed=4), sample_shapes(20, seed=4)
    assert [(s.color, s.shape, s.image.tobytes()) for s in a] == [(s.color, s.shape, s.image.tobytes()) for s in b]
    assert [s.image.tobytes() for s in a] != [s.image.tobytes() for s in sample_shapes(20, seed=5)]


def test_samples_cover_every_colour_and_shape_on_white():
    samples = sample_shapes(200, seed=0)
    assert {s.color for s in samples} == set(COLORS) and {s.shape for s in samples} == set(SHAPES)
    image = samples[0].image
    assert image.size == (64, 64) and image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)
    assert samples[0].caption == f"a {samples[0].color} {samples[0].shape}"


def test_unknown_colour_is_a_clear_error():
    with pytest.raises(ValueError, match="purple"):
        draw_shape("purple", "circle", random.Random(0))


def test_story_interleaves_captions_and_pictures():
    a, b = sample_shapes(2, seed=7)
    doc = story_document([a, b])
    assert isinstance(doc, Document)
    kinds = [type(s) for s in doc]
    assert kinds == [Text, Image, Text, Image]
    assert doc.segments[0].text == f"Here is {a.caption}:"
    assert doc.segments[2].text == f" Next to it, {b.caption}:"
