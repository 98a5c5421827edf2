"""A tiny served pipeline (sentencepiece text + an untrained 16 px image tokenizer) for the serve tests."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs

pytest.importorskip("starlette", reason="the serve extra (starlette) is not installed")

IMAGE_CODES = 64  # a 16 px image, downsampled twice -> 8 x 8


@pytest.fixture
def served_pipe(registry, trained_sentencepiece, tiny_image_options):
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=512),
        attention="eager",
    )
    pipe = cs.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe
