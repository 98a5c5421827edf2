"""The MoT lab: the relative-FLOPs arithmetic, the config's checks and a small run through the CLI."""

from __future__ import annotations

import json

import pytest
from chameleon_apps.lab.mot import MoTLabConfig, relative_steps_to_reach
from hypothesis import given, settings
from hypothesis import strategies as st

from chameleon_sdk import ConfigError
from chameleon_sdk.cli import main

TINY_PLAN = ["train_images=48", "train_stories=8", "vq_steps=4", "captions=4", "ground_truth_checks=8"]


@settings(max_examples=60, deadline=None)
@given(
    losses=st.lists(st.floats(0.1, 10.0), min_size=2, max_size=8),
    target=st.floats(0.1, 10.0),
    every=st.integers(1, 20),
)
def test_relative_steps_to_reach_finds_the_first_crossing(losses, target, every):
    steps = [i * every for i in range(len(losses))]
    share = relative_steps_to_reach(steps, losses, target)
    reached = [i for i, loss in enumerate(losses) if loss <= target]
    if not reached:
        assert share is None
        return
    first = reached[0]
    assert share is not None and 0.0 <= share <= 1.0
    crossing = share * steps[-1]
    assert (steps[first - 1] if first else 0) <= crossing + 1e-9 and crossing <= steps[first] + 1e-9


def test_an_exact_crossing_is_interpolated_linearly():
    assert relative_steps_to_reach([0, 10, 20], [4.0, 2.0, 1.0], 3.0) == pytest.approx(0.25)
    assert relative_steps_to_reach([0, 10, 20], [4.0, 2.0, 1.0], 0.5) is None


def test_config_refuses_bad_values():
    with pytest.raises(ConfigError, match="eval_every"):
        MoTLabConfig(eval_every=0)
    with pytest.raises(ConfigError, match="untie"):
        MoTLabConfig(untie=["embeddings"])
    with pytest.raises(ConfigError, match="steps"):
        MoTLabConfig(steps=-3)


def test_cli_run_writes_the_report_and_plot(tmp_path, capsys):
    out = tmp_path / "lab"
    argv = ["lab", "mot", "--quick", "--quiet", "--out", str(out), "--steps", "6", "--eval-every", "3"]
    for item in TINY_PLAN:
        argv += ["--set", item]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [c["arm"] for c in report["curves"]] == ["dense", "mot"]
    for curve in report["curves"]:
        assert curve["steps"] == [0, 3, 6]
        assert len(curve["text"]) == len(curve["image"]) == 3
    dense, mot = report["curves"]
    assert mot["parameters"] > dense["parameters"]
    assert dense["text"][0] != mot["text"][0]  # different weights (MoT holds two copies), same seed
    assert set(report["relative_flops_to_match_dense"]) == {"text", "image"}
    assert (out / "mot.png").read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "| dense |" in printed and "MoT's training FLOPs to match" in printed


def test_cli_bad_arguments_are_one_error_line(tmp_path, capsys):
    assert main(["lab", "mot", "--quick", "--steps", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "steps" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()
