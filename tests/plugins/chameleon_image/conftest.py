"""Shared fixtures: tiny tokenizer configs, synthetic shape images, one briefly trained tokenizer."""

from __future__ import annotations

import math
import random

import PIL.Image
import PIL.ImageDraw
import pytest
import torch

import chameleon_sdk

#: 32 px, 3 levels -> an 8 x 8 grid of 64 codes; a few hundred thousand parameters.
TINY = {
    "resolution": 32,
    "base_channels": 32,
    "channel_multipliers": [1, 1, 2],
    "num_res_blocks": 1,
    "latent_channels": 32,
    "embed_dim": 16,
    "codebook_size": 64,
}

COLORS = [(220, 30, 30), (30, 170, 40), (30, 60, 220), (230, 210, 20)]


def draw_shape(rng: random.Random, size: int = 32) -> PIL.Image.Image:
    """A white image with one filled circle, square or triangle in a random colour and place."""
    image = PIL.Image.new("RGB", (size, size), (255, 255, 255))
    draw = PIL.ImageDraw.Draw(image)
    color = rng.choice(COLORS)
    r = rng.uniform(0.15, 0.3) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    sides = rng.choice([0, 3, 4])
    if sides == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        a0 = rng.uniform(0, 2 * math.pi)
        draw.polygon(
            [
                (cx + r * math.cos(a0 + 2 * math.pi * i / sides), cy + r * math.sin(a0 + 2 * math.pi * i / sides))
                for i in range(sides)
            ],
            fill=color,
        )
    return image


@pytest.fixture(scope="session")
def tiny_options() -> dict:
    """Options of a tiny tokenizer (do not mutate; copy with ``{**tiny_options, ...}``)."""
    return dict(TINY)


@pytest.fixture(scope="session")
def shape_drawer():
    """``draw(rng) -> PIL image`` of one random shape (see :func:`draw_shape`)."""
    return draw_shape


@pytest.fixture
def tiny_tokenizer():
    torch.manual_seed(0)
    return chameleon_sdk.get_registry().build("modality", "image", TINY)


@pytest.fixture(scope="session")
def shapes() -> list[PIL.Image.Image]:
    rng = random.Random(0)
    return [draw_shape(rng) for _ in range(400)]


@pytest.fixture(scope="session")
def trained(shapes):
    """A tokenizer trained briefly on shapes (cosine codebook), and its metrics."""
    torch.manual_seed(0)
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", {**TINY, "codebook_metric": "cosine"})
    metrics = tokenizer.fit(
        shapes,
        {
            "steps": 60,
            "batch_size": 16,
            "learning_rate": 3e-3,
            "warmup_steps": 5,
            "restart_every": 10,
            "held_out_fraction": 0.1,
        },
        progress=False,
    )
    return tokenizer, metrics
