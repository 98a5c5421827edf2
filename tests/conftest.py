"""Shared test setup: few threads (CI has 2 cores), a bounded hypothesis profile, an isolated registry."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import chameleon_sdk

torch.set_num_threads(int(os.environ.get("CHAMELEON_TEST_THREADS", "2")))

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def registry():
    """A fresh registry (built-ins loaded from entry points) installed as the default for one test."""
    with chameleon_sdk.use_registry() as reg:
        yield reg
