"""Test setup of the audio plugin: few threads and a bounded hypothesis profile, as in the core suite."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("CHAMELEON_TEST_THREADS", "2")))

settings.register_profile(
    "audio-ci",
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "audio-ci"))


@pytest.fixture
def registry(chameleon_registry):
    """``chameleon_sdk.testing``'s fresh per-test registry under a short name."""
    return chameleon_registry
