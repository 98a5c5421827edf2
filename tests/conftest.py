"""Shared test setup: few threads (CI has 2 cores), a bounded hypothesis profile, an isolated registry."""

from __future__ import annotations

import os

import attrs
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


@pytest.fixture(scope="session")
def trained_sentencepiece(tmp_path_factory):
    """Path of a small sentencepiece model trained once on the bundled corpus."""
    from chameleon_sdk.demo import bundled_corpus

    tokenizer = chameleon_sdk.PluginRegistry().build("text_tokenizer", "sentencepiece", {"vocab_size": 400})
    tokenizer.train(bundled_corpus())
    directory = tmp_path_factory.mktemp("sentencepiece")
    tokenizer.save(directory)
    return directory / "sentencepiece.model"


@attrs.frozen(kw_only=True)
class DigitsOptions:
    base: int = 10
    block: int | None = None  # fixed codes per payload, or variable length


class DigitsModality:
    """A tiny real modality for tests: a list of digits, one code per digit."""

    payload_types = (list,)

    def __init__(self, options: DigitsOptions) -> None:
        self.codebook_size = options.base
        self.block_length = options.block

    def encode(self, payload):
        return torch.tensor(payload, dtype=torch.long)

    def decode(self, codes):
        return codes.tolist()

    def decode_partial(self, codes):
        return codes.tolist()


class DigitsPlugin:
    @chameleon_sdk.hookimpl
    def register_modalities(self, register):
        register("digits", DigitsModality, options=DigitsOptions)


@pytest.fixture
def digits_plugin():
    """A plugin object registering the ``digits`` modality (register it with ``registered_plugin``)."""
    return DigitsPlugin()


@pytest.fixture
def tiny_image_options():
    """Options of a tiny, untrained ``image`` tokenizer: 16 px -> 8 x 8 = 64 codes of 16."""
    return {
        "resolution": 16,
        "base_channels": 32,
        "channel_multipliers": [1, 1],
        "num_res_blocks": 1,
        "latent_channels": 8,
        "embed_dim": 8,
        "codebook_size": 16,
        "mid_attention": False,
    }
