"""The stability lab: a quick sweep end to end, typed config errors, and numbers that come from the model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from chameleon_apps.lab import (
    StabilityReport,
    StabilitySweepConfig,
    held_out_batch,
    lr_sensitivity,
    parse_arm,
    run_stability_sweep,
    train_run,
)
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError, ModelConfig, PluginNotFoundError, from_dict, to_dict
from chameleon_sdk.cli import main

QUICK = StabilitySweepConfig.quick(steps=8)


def test_cli_quick_sweep_writes_a_well_formed_report_and_png(tmp_path, capsys):
    rng = torch.get_rng_state()
    out = tmp_path / "lab"
    argv = ["lab", "stability", "--quick", "--out", str(out), "--steps", "6", "--lrs", "1e-3", "0.3"]
    assert main([*argv, "--arms", "baseline", "qk-norm+z-loss"]) == 0
    assert torch.equal(torch.get_rng_state(), rng)  # the sweep forks the RNG, the caller's stream is untouched
    printed = capsys.readouterr()
    assert "| qk-norm+z-loss |" in printed.out and "LR sensitivity" in printed.out
    assert printed.err.count("lr ") == 4  # one progress line per run

    assert sorted(p.name for p in out.iterdir()) == ["report.json", "stability.png"]  # no temp files left
    assert (out / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    assert report["config"]["steps"] == 6 and report["config"]["lrs"] == [1e-3, 0.3]
    assert [a["arm"] for a in report["arms"]] == ["baseline", "qk-norm+z-loss"]
    assert [a["tricks"] for a in report["arms"]] == [[], ["qk-norm", "z-loss"]]
    assert [(r["arm"], r["lr"]) for r in report["runs"]] == [
        ("baseline", 1e-3),
        ("baseline", 0.3),
        ("qk-norm+z-loss", 1e-3),
        ("qk-norm+z-loss", 0.3),
    ]
    for run in report["runs"]:
        assert run["steps_completed"] == 6 and isinstance(run["diverged"], bool)
        for key in ("initial_loss", "max_attention_logit", "last_layer_output_norm", "mean_log_z"):
            assert isinstance(run[key], float) and math.isfinite(run[key]), key
        assert [h["step"] for h in run["history"]] == [0, 1, 2, 3, 4, 5]
        assert all("max_attention_logit" in h and "mean_log_z" in h for h in run["history"])
    low = report["runs"][0]
    assert not low["diverged"] and low["final_loss"] < low["initial_loss"]  # a gentle rate learns
    for arm in report["arms"]:
        assert arm["lr_sensitivity"] >= 0.0
    assert set(report["entropy_nats_per_token"]) == {"text", "image"}

    # report.json reads back (to redraw or merge sweeps); a foreign JSON object is a typed error
    again = StabilityReport.from_json(report)
    assert again.to_json() == report and again.run("baseline", 0.3).lr == 0.3
    with pytest.raises(ConfigError, match="not a stability report"):
        StabilityReport.from_json({"runs": []})


@torch.no_grad()
def _layer_norm_bound(model) -> float:
    """The largest attention logit LayerNormed q and k allow: (max|g| sqrt(Dh) + |b|) for q and k, times the scale.

    LayerNorm's normalised vector has norm <= sqrt(Dh); the gain and bias stretch and shift it; rotary
    embedding is a rotation (norm-preserving). The bound is taken per layer from its trained weights.
    """
    bounds = []
    for block in model.blocks:
        attention = block.attention
        root = math.sqrt(attention.head_dim)

        def norm_bound(norm, root=root):
            return float((norm.weight.abs().amax(dim=1) * root + norm.bias.norm(dim=1)).max())

        bounds.append(norm_bound(attention.q_norm) * norm_bound(attention.k_norm) * attention.scale)
    return max(bounds)


@torch.no_grad()
def _own_stats(model, config):
    batch = held_out_batch(config)
    model.eval()
    model.collect_stats = True
    out = model(batch.input_ids, document_ids=batch.document_ids)
    loss = model.loss(out.logits, batch.targets)
    return out.stats, loss.terms["cross_entropy"]


def test_reported_monitors_are_the_trained_models_and_qk_norm_bounds_the_attention_logits():
    qk_result, qk_model = train_run(QUICK, "qk-norm", 1.0)
    stats, cross_entropy = _own_stats(qk_model, QUICK)
    assert qk_result.max_attention_logit == pytest.approx(float(stats["max_attention_logit"].max()), rel=1e-5)
    assert qk_result.last_layer_output_norm == pytest.approx(float(stats["layer_output_norm"][-1]), rel=1e-5)
    assert qk_result.mean_log_z == pytest.approx(float(stats["mean_log_z"]), rel=1e-5)
    if not math.isnan(qk_result.final_loss):
        assert qk_result.final_loss == pytest.approx(float(cross_entropy), rel=1e-5)
    bound = _layer_norm_bound(qk_model)
    assert 0 < qk_result.max_attention_logit <= bound * (1 + 1e-5)
    assert qk_result.peak_attention_logit >= qk_result.max_attention_logit * 0.5  # it was tracked during training

    low, _ = train_run(QUICK, "baseline", 1e-3)
    high, _ = train_run(QUICK, "baseline", 1.0)
    assert high.max_attention_logit > 100 * low.max_attention_logit  # without qk-norm the logits grow with the LR
    assert high.max_attention_logit > bound  # past what LayerNormed q and k allow at the same LR


def test_lr_sensitivity_follows_wortsmans_definition():
    # min(L, L0) caps a bad or diverged run at L0 = 5: mean(3, 2, 5, 5) - min = 3.75 - 2
    assert lr_sensitivity([3.0, 2.0, math.nan, 7.0], initial_loss=5.0) == pytest.approx(1.75)
    with pytest.raises(ConfigError):
        lr_sensitivity([], initial_loss=5.0)


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=8), st.floats(0.0, 10.0))
def test_lr_sensitivity_is_non_negative_order_free_and_zero_when_flat(losses, initial):
    value = lr_sensitivity(losses, initial)
    assert value >= 0.0
    assert value == pytest.approx(lr_sensitivity(list(reversed(losses)), initial))
    assert lr_sensitivity([losses[0]] * len(losses), initial) == pytest.approx(0.0, abs=1e-12)


def test_parse_arm():
    assert parse_arm("baseline") == ()
    assert parse_arm("qk-norm+z-loss") == ("qk-norm", "z-loss")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"lrs": ()}, "at least one learning rate"),
        ({"lrs": (1e-3, 0.0)}, "finite and > 0"),
        ({"lrs": (float("nan"),)}, "finite and > 0"),
        ({"lrs": (1e-3, 1e-3)}, "each learning rate once"),
        ({"lrs": "fast"}, "list of numbers"),
        ({"arms": ()}, "at least one arm"),
        ({"arms": ("qk-norm+",)}, "joined by"),
        ({"arms": ("baseline+qk-norm",)}, "joined by"),
        ({"arms": ("z-loss+z-loss",)}, "twice"),
        ({"arms": ("baseline", "baseline")}, "each arm once"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"model": ModelConfig(dim=32, num_layers=1, num_heads=2, vocab_size=7)}, "vocab_size"),
        ({"model": ModelConfig(dim=32, num_layers=1, num_heads=2, max_seq_len=16)}, "max_seq_len"),
        ({"trainer_options": {"lr": 1.0}}, "set by the sweep"),
        ({"trick_options": {"z-loss": 1e-4}}, "must be a mapping"),
    ],
)
def test_bad_configs_raise_config_error(changes, match):
    with pytest.raises(ConfigError, match=match):
        StabilitySweepConfig(**changes)


def test_config_round_trips_and_unknown_tricks_fail_before_training(tmp_path, capsys):
    assert from_dict(StabilitySweepConfig, to_dict(QUICK)) == QUICK
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        from_dict(StabilitySweepConfig, {"lr": [1e-3]})
    with pytest.raises(PluginNotFoundError, match="qk-norm"):  # "did you mean"
        run_stability_sweep(QUICK.quick(arms=("baseline", "qk-nrom")), out_dir=tmp_path / "never")
    with pytest.raises(ConfigError, match="coef"):
        run_stability_sweep(QUICK.quick(arms=("z-loss",), trick_options={"z-loss": {"coef": -1.0}}))
    with pytest.raises(ConfigError, match="betas"):
        run_stability_sweep(QUICK.quick(trainer_options={"betas": "fast"}))
    assert not (tmp_path / "never").exists()
    assert StabilitySweepConfig.quick(arms="qk-norm").arms == ("qk-norm",)
    assert main(["lab", "stability", "--quick", "--steps", "0", "--out", str(tmp_path / "x")]) == 2
    assert "steps must be >= 1" in capsys.readouterr().err
