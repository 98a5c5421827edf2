"""``chameleon plan``: the counts it rests on agree with real models; the figures order as they must."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.cli import main
from chameleon_sdk.finetune_plan import MODES, plan_memory, plan_run

configs = st.builds(
    lambda heads, kv_div, head_dim, layers, ffn, vocab: cs.ModelConfig(
        dim=heads * head_dim,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=heads // kv_div,
        ffn_dim=ffn,
        vocab_size=vocab,
        max_seq_len=64,
    ),
    heads=st.sampled_from([2, 4]),
    kv_div=st.sampled_from([1, 2]),
    head_dim=st.sampled_from([4, 8]),
    layers=st.integers(1, 3),
    ffn=st.integers(8, 40),
    vocab=st.integers(16, 80),
)


@settings(max_examples=10, deadline=None)
@given(config=configs)
def test_the_planned_weights_are_the_models_parameters(config):
    model = cs.build_model(config)
    count = sum(p.numel() for p in model.parameters())
    plan = plan_memory(config, mode="full", batch=1, seq=8)
    assert plan.trainable == count and plan.parameters == 4 * count
    assert plan_memory(config, mode="full", batch=1, seq=8, bf16=True).parameters == 2 * count


_IMAGE_ROWS = 6  # the image codes of the test vocabularies: ids 5..10


def _vocabulary_with_image_rows(size: int) -> cs.Vocabulary:
    """A vocabulary of ``size`` ids with specials 0-2, an image block 3/4 and ``_IMAGE_ROWS`` image codes."""
    block = plugin_api.ModalityBlock(
        modality="image", begin_id=3, end_id=4, code_ids=torch.arange(5, 5 + _IMAGE_ROWS), block_length=2
    )
    return cs.Vocabulary(layout="test", size=size, specials={"bos": 0, "eos": 1, "pad": 2}, blocks=[block])


@settings(max_examples=10, deadline=None)
@given(
    config=configs,
    rank=st.integers(1, 6),
    targets=st.lists(st.sampled_from(["attention", "mlp", "head", "head-image-rows"]), min_size=1, unique=True).filter(
        lambda t: not {"head", "head-image-rows"} <= set(t)
    ),
)
def test_the_planned_adapter_is_what_lora_attaches(config, rank, targets):
    pytest.importorskip("peft")
    model = cs.build_model(config)
    model.vocabulary = _vocabulary_with_image_rows(config.vocab_size)
    model = cs.attach_adapter(model, {"name": "lora", "options": {"rank": rank, "targets": targets}})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = plan_memory(config, mode="lora", batch=1, seq=8, rank=rank, targets=targets, image_rows=_IMAGE_ROWS)
    assert plan.trainable == trainable and plan.adapters == 4 * trainable


def test_sharding_divides_the_state_and_checkpointing_the_activations():
    config = cs.MODEL_PRESETS["7b"].model
    plans = {
        (mode, n): plan_memory(config, mode=mode, batch=8, seq=2048, bf16=True, devices=n)
        for mode in MODES
        for n in (1, 8)
    }
    full, lora, ac = plans["full", 1], plans["lora", 1], plans["lora+ac", 1]
    assert full.optimizer == 2 * full.gradients == 2 * full.parameters  # AdamW: two moments in the weights' dtype
    assert lora.gradients < full.gradients / 100 and lora.parameters == full.parameters
    assert ac.activations < lora.activations / 5 < full.activations / 5
    assert plans["full", 8].parameters == full.parameters // 8
    assert plans["lora+ac", 8].activations < ac.activations  # one row per device instead of eight
    assert 12 < full.parameters / 2**30 < 14  # the 7B in bf16: 7.0e9 parameters


def test_bad_plans_are_config_errors():
    config = cs.MODEL_PRESETS["debug"].model
    with pytest.raises(cs.ConfigError, match="mode"):
        plan_memory(config, mode="qlora", batch=1, seq=8)
    with pytest.raises(cs.ConfigError, match="batch"):
        plan_memory(config, mode="full", batch=0, seq=8)
    with pytest.raises(cs.ConfigError, match="targets"):
        plan_memory(config, mode="lora", batch=1, seq=8, targets=["layers.0.*"])


RUN = """
steps = 10
out_dir = "run"
[pipeline]
trainer = {{ name = "local", options = {{ precision = "bf16" }} }}
model = {{ dim = 64, num_layers = 2, num_heads = 4, max_seq_len = 128{vocab} }}
[data]
seq_len = 128
batch_size = 4
sources = [{{ path = "train.jsonl" }}]
"""


def test_chameleon_plan_prints_every_mode_for_each_device_count(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(RUN.format(vocab=", vocab_size = 512"))
    assert main(["plan", str(config), "--devices", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["mode", "devices"]
    assert [(line.split()[0], line.split()[1]) for line in lines[1:]] == [(m, str(n)) for n in (1, 2, 4) for m in MODES]
    plans = plan_run(config, max_devices=1)
    assert plans[0].parameters == 2 * sum(p.numel() for p in cs.build_model(plans_config(config)).parameters())


def plans_config(path: Path) -> cs.ModelConfig:
    from chameleon_sdk.training.run import load_run_config

    model = load_run_config(path).pipeline.model
    assert model is not None
    return model


def test_chameleon_plan_asks_for_the_vocabulary(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(RUN.format(vocab=""))
    assert main(["plan", str(config)]) == 2
    err = capsys.readouterr().err
    assert "vocab_size" in err and "Traceback" not in err
    assert main(["plan", str(config), "--preset", "7b"]) == 0
    assert "7,013,158,912" in capsys.readouterr().out  # the 7B with its per-layer QK-norm


def test_the_plan_counts_the_weights_of_the_stability_tricks_too():
    with torch.device("meta"):
        model = cs.build_model(cs.MODEL_PRESETS["7b"].model, stability=cs.MODEL_PRESETS["7b"].stability)
    count = sum(p.numel() for p in model.parameters())
    stability = cs.MODEL_PRESETS["7b"].stability
    assert (
        plan_memory(model.config, mode="full", batch=1, seq=1, stability=stability, bf16=True).parameters == 2 * count
    )
