"""Activation checkpointing per block changes memory, never the gradients (fp32, 1e-5)."""

from __future__ import annotations

import attrs
import pytest
import torch
from chameleon_training.local import enable_activation_checkpointing

import chameleon_sdk as cs


def _dense(seed: int = 0) -> cs.ChameleonModel:
    torch.manual_seed(seed)
    config = cs.ModelConfig(
        dim=32, num_layers=3, num_heads=4, num_kv_heads=2, vocab_size=96, max_seq_len=64, dropout=0.1
    )
    return cs.build_model(config, stability=["qk-norm", "dropout", "z-loss"])


def _gradients(model: torch.nn.Module, ids: torch.Tensor, documents: torch.Tensor) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(7)  # the same dropout masks in both runs; checkpointing replays the RNG state
    out = model(ids[:, :-1], document_ids=documents, targets=ids[:, 1:])
    out.loss.loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _assert_same_gradients(build, ids, documents):
    reference = _gradients(build(), ids, documents)
    model = build()
    names = [name for name, _ in model.named_parameters()]
    enable_activation_checkpointing(model)
    enable_activation_checkpointing(model)  # twice: still once
    assert [name for name, _ in model.named_parameters()] == names  # no wrapper prefix in any name
    checkpointed = _gradients(model, ids, documents)
    assert reference.keys() == checkpointed.keys() and reference
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], atol=1e-5, rtol=1e-5, msg=name)


IDS = torch.randint(0, 96, (2, 25), generator=torch.Generator().manual_seed(1))
DOCUMENTS = torch.tensor([[0] * 10 + [1] * 14, [0] * 24])  # packed: per-document attention


def test_gradients_equal_with_and_without_checkpointing():
    _assert_same_gradients(_dense, IDS, DOCUMENTS)


def test_gradients_of_a_lora_adapter_equal_with_and_without_checkpointing():
    pytest.importorskip("peft")

    def build():
        model = cs.attach_adapter(_dense(), {"name": "lora", "options": {"rank": 4, "targets": ["attention", "mlp"]}})
        with torch.no_grad():  # B starts at zero; make A's gradient non-zero too
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
        return model

    _assert_same_gradients(build, IDS, DOCUMENTS)


def test_routed_blocks_get_their_route_through_checkpointing(tiny_image_pipe):
    """MoT blocks take a per-token ``route``; the checkpointed block must receive it."""
    pipe = tiny_image_pipe
    pipe.config = attrs.evolve(pipe.config, stability=(cs.ComponentSpec(name="mot"),))
    vocabulary = pipe.vocabulary
    text, codes = vocabulary.text_mask().nonzero().flatten(), vocabulary.code_mask("image").nonzero().flatten()
    ids = torch.cat([text[:12], codes[:12], text[12:13]]).unsqueeze(0)

    def build():
        torch.manual_seed(0)
        return pipe.build_model()

    _assert_same_gradients(build, ids, torch.zeros(1, 24, dtype=torch.long))
