"""Fixtures of the quantization plugins' tests."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs


@pytest.fixture
def saved_pipe(registry, registered_plugin, trained_sentencepiece, digits_plugin, tmp_path):
    registered_plugin(digits_plugin, name="digits-plugin")
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "digits", "options": {"block": 3}},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=128),
    )
    pipe = cs.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe.save_pretrained(tmp_path / "p")
