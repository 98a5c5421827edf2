"""Every example config under examples/configs/ loads; the text one trains end to end via the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from chameleon_sdk.cli import main
from chameleon_sdk.training.run import RunConfig, load_run_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.toml"))


def test_there_are_example_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads(path):
    config = load_run_config(path)
    assert isinstance(config, RunConfig)
    for source in config.data.sources:
        assert (path.parent / source.path).is_file()


def test_cli_train_runs_and_resumes(tmp_path, capsys, registry):
    path = next(p for p in CONFIGS if p.name == "shapes-text.toml")
    out = tmp_path / "run"
    args = [
        "train",
        str(path),
        "--set",
        f"out_dir={out}",
        "--set",
        "steps=6",
        "--set",
        "pipeline.trainer.options.progress=false",
    ]
    assert main(args) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    assert (out / "pipeline" / "pipeline.json").is_file() and (out / "metrics.jsonl").is_file()
    assert main([*args[:-4], "--set", "steps=8", "--set", "pipeline.trainer.options.progress=false"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8


def test_overrides_and_errors(tmp_path):
    from chameleon_sdk.training.run import apply_overrides

    data = apply_overrides(
        {"pipeline": {"trainer": "local"}}, ["pipeline.trainer.options.lr=0.01", "steps=3", "out_dir=x"]
    )
    assert data == {"pipeline": {"trainer": {"name": "local", "options": {"lr": 0.01}}}, "steps": 3, "out_dir": "x"}
    bad = tmp_path / "bad.toml"
    bad.write_text('steps = 3\nout_dir = "x"\n[data]\nsources = [{path = "a"}]\n')
    with pytest.raises(Exception, match="exactly one of"):
        load_run_config(bad)
