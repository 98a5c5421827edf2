"""Fixtures of the training-data tests."""

from __future__ import annotations

import pytest

import chameleon_sdk as cs


@pytest.fixture
def pipe(registry, registered_plugin, trained_sentencepiece, digits_plugin):
    """sentencepiece text and ``digits``, a stand-in for images (a modality block of its own); no model."""
    registered_plugin(digits_plugin, name="digits-plugin")
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "digits", "options": {"block": 3}},),
    )
    return cs.Pipeline.from_config(config)
