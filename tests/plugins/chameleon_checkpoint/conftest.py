"""Tiny models for the checkpoint-format tests."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk
from chameleon_sdk import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    fields = {"dim": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "vocab_size": 48, "ffn_dim": 40}
    return ModelConfig(**{**fields, **overrides})


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Every parameter random (norm gains and QK-norm rows included), so a misplaced row shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std + (1.0 if param.dim() == 1 else 0.0))
    return model.eval()


@pytest.fixture
def make_model():
    def make(*, stability=(), seed=0, **config):
        model = chameleon_sdk.build_model(tiny_config(**config), stability=stability)
        return randomize(model, seed)

    return make


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits
