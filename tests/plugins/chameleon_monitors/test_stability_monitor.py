"""The ``stability-monitor`` callback records the model's monitors and warns on growth."""

from __future__ import annotations

import json
import math

import pytest
import torch
from chameleon_monitors import StabilityWarning

import chameleon_sdk
from chameleon_sdk import ConfigError, ModelConfig, build_model
from chameleon_sdk.training import Batch

TINY = ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=64, ffn_dim=48, max_seq_len=32)


def build(**options):
    return chameleon_sdk.get_registry().build("callback", "stability-monitor", options)


def test_monitor_records_stats_and_loss_terms():
    torch.manual_seed(0)
    model = build_model(TINY, attention="eager", stability=["qk-norm", "z-loss"])
    monitor = build(every=2)
    ids = torch.randint(0, 64, (2, 8))
    with pytest.raises(ConfigError, match="attach"):
        monitor.on_step(0, model(ids))
    monitor.attach(model)
    records = []
    for step in range(3):
        out = model(ids)
        records.append(monitor.on_step(step, out, model.loss(out.logits[:, :-1], ids[:, 1:])))
    assert records[1] is None and len(monitor.history) == 2
    first = records[0]
    assert len(first["layer_output_norm"]) == len(first["max_attention_logit"]) == 2
    assert first["last_layer_output_norm"] == first["layer_output_norm"][-1]
    assert first["loss"] == pytest.approx(first["cross_entropy"] + first["z_loss"], rel=1e-5)
    assert first["mean_log_z"] == pytest.approx(math.log(64), abs=0.1)  # near-uniform logits at init
    assert first["warnings"] == []
    monitor.detach()
    assert model(ids).stats == {}


def test_monitor_warns_when_the_last_layer_norm_explodes():
    torch.manual_seed(0)
    model = build_model(TINY, attention="eager")
    monitor = build(growth_warning=5.0)
    monitor.attach(model)
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        assert monitor.on_step(0, model(ids))["warnings"] == []
        model.layers[-1].feed_forward.w2.weight.mul_(1000.0)
        warnings = monitor.on_step(1, model(ids))["warnings"]
    assert any("grew" in w for w in warnings)


def test_monitor_options_are_validated():
    with pytest.raises(ConfigError):
        build(every=0)


class RandomBatches:
    """A pure batch source of random tokens (enough for a few trainer steps)."""

    @property
    def counters(self):
        return {}

    def stage(self, step):
        return 1

    def batch_at(self, step, micro=0):
        ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(step))
        return Batch(ids[:, :-1], ids[:, 1:], torch.zeros(2, 8, dtype=torch.long))


def test_as_a_trainer_callback_it_turns_the_monitors_on_and_warns(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY, attention="eager", stability=["qk-norm"])
    monitor = build(growth_warning=1.01)
    metrics = chameleon_sdk.get_registry().build("callback", "metrics-jsonl", {})
    trainer = chameleon_sdk.get_registry().build("trainer", "local", {"lr": 0.3, "progress": False, "warmup_steps": 0})
    with pytest.warns(StabilityWarning, match="grew"):
        trainer.fit(model, RandomBatches(), steps=6, out_dir=tmp_path, callbacks=[metrics, monitor], resume=False)
    assert [r["step"] for r in monitor.history] == list(range(6))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(len(line["layer_output_norm"]) == 2 and "max_attention_logit" in line for line in lines)
    assert model.collect_stats is False  # detached at the end of the run
