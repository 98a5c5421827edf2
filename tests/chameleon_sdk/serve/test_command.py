"""``chameleon serve``: user mistakes are one-line errors, not tracebacks."""

from __future__ import annotations

import pytest

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
