"""``chameleon serve``: user mistakes are one-line errors, not tracebacks."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.cli import main


def test_serve_refuses_bad_limits_before_loading(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--max-rows", "0"]) == 2
    assert "ServeOptions.max_rows must be > 0" in capsys.readouterr().err


def test_serve_names_a_missing_pipeline(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path / "nothing"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nothing" in err and "Traceback" not in err


def test_serve_help_lists_the_limits(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--host", "--api-key", "--max-queue", "--request-timeout", "--max-body-bytes"))


def test_create_app_names_an_unknown_option(served_pipe):
    with pytest.raises(cs.ConfigError, match="unknown option 'max_row'"):
        cs.serve.create_app(served_pipe, max_row=3)


def test_serve_loads_on_the_device_and_dtype_asked(served_pipe, tmp_path, monkeypatch):
    served_pipe.save_pretrained(tmp_path / "pipe")
    seen = {}

    def fake_run(app, **kwargs):  # stands in for uvicorn
        seen["kwargs"] = kwargs

    monkeypatch.setattr("uvicorn.run", fake_run)
    loaded = []
    original = cs.Pipeline.from_pretrained

    def spy(path, **kwargs):
        loaded.append(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(cs.Pipeline, "from_pretrained", spy)
    assert main(["serve", "--model", str(tmp_path / "pipe"), "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert loaded[0]["device"] == "cpu" and loaded[0]["dtype"] == torch.bfloat16
    assert seen["kwargs"]["port"] == 8000


def test_serve_names_a_bad_device(served_pipe, tmp_path, capsys):
    served_pipe.save_pretrained(tmp_path / "pipe")
    assert main(["serve", "--model", str(tmp_path / "pipe"), "--device", "gpu0"]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error:") and "gpu0" in err and "Traceback" not in err
