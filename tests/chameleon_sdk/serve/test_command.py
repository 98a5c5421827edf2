"""``chameleon serve``: user mistakes are one-line errors, not tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from starlette.testclient import TestClient

import chameleon_sdk as cs
from chameleon_sdk.cli import main
from chameleon_sdk.serve.memory import _KERNEL_CACHE_VARIABLES


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


@pytest.fixture
def served(served_pipe, tmp_path, monkeypatch):
    """``chameleon serve`` with uvicorn and ``Pipeline.from_pretrained`` spied on: what it ran and loaded."""
    served_pipe.save_pretrained(tmp_path / "pipe")
    for name in _KERNEL_CACHE_VARIABLES:  # run_serve sets them; monkeypatch puts them back afterwards
        monkeypatch.delenv(name, raising=False)
    seen: dict = {"loaded": []}

    def fake_run(app, **kwargs):  # stands in for uvicorn
        seen["app"], seen["kwargs"] = app, kwargs

    monkeypatch.setattr("uvicorn.run", fake_run)
    original = cs.Pipeline.from_pretrained

    def spy(path, **kwargs):
        seen["loaded"].append(kwargs)
        return original(path, **kwargs)

    monkeypatch.setattr(cs.Pipeline, "from_pretrained", spy)
    seen["model"] = str(tmp_path / "pipe")
    return seen


def test_serve_loads_on_the_device_and_dtype_asked(served):
    assert main(["serve", "--model", served["model"], "--device", "cpu", "--dtype", "bfloat16"]) == 0
    assert served["loaded"][0]["device"] == torch.device("cpu") and served["loaded"][0]["dtype"] == torch.bfloat16
    assert served["kwargs"]["port"] == 8000


@pytest.mark.parametrize("native", [True, False])
def test_serve_picks_packed_bf16_by_default_where_the_cpu_computes_it(served, monkeypatch, capsys, native):
    monkeypatch.setattr("chameleon_sdk.serve.weights.native_bfloat16", lambda device: native)
    assert main(["serve", "--model", served["model"]]) == 0
    expected = torch.bfloat16 if native else torch.float32
    assert served["loaded"][0]["dtype"] == expected
    assert served["loaded"][0]["quantize"] == ("onednn-packed" if native else None)
    assert all(os.environ[name] == "64" for name in _KERNEL_CACHE_VARIABLES)  # set before loading
    weights = f"with {str(expected).removeprefix('torch.')} weights (--dtype auto)"
    assert weights + (", onednn-packed (--quantize auto) on" if native else " on") in capsys.readouterr().out
    with TestClient(served["app"]) as client:
        assert client.get("/v1/info").json()["dtype"] == str(expected).removeprefix("torch.")


def test_serve_names_a_bad_device(served_pipe, tmp_path, capsys):
    served_pipe.save_pretrained(tmp_path / "pipe")
    assert main(["serve", "--model", str(tmp_path / "pipe"), "--device", "gpu0"]) in (1, 2)
    err = capsys.readouterr().err
    assert err.startswith("error:") and "gpu0" in err and "Traceback" not in err


def test_the_clis_help_does_not_import_torch():
    script = (
        "import contextlib, io, sys\n"
        "from chameleon_sdk.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr


def test_serve_applies_the_quantization_asked(served, capsys):
    args = ["serve", "--model", served["model"], "--dtype", "bfloat16", "--quantize", "onednn-packed"]
    assert main(args) == 0
    assert served["loaded"][0]["quantize"] == "onednn-packed"
    assert "with bfloat16 weights, onednn-packed on" in capsys.readouterr().out
    with TestClient(served["app"]) as client:
        assert client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3}).status_code == 200


def test_serve_quantize_none_keeps_the_weights_as_loaded(served):
    assert main(["serve", "--model", served["model"], "--dtype", "bfloat16", "--quantize", "none"]) == 0
    assert served["loaded"][0]["quantize"] is None


def test_serve_names_an_unknown_quantization(served, capsys):
    assert main(["serve", "--model", served["model"], "--quantize", "int3"]) == 2
    err = capsys.readouterr().err
    assert "no quantization plugin named 'int3'" in err and "Traceback" not in err


def test_serve_compile_frozen_compiles_every_row_count_at_start_and_packs_nothing(served, monkeypatch, capsys):
    monkeypatch.setattr("chameleon_sdk.serve.weights.native_bfloat16", lambda device: True)
    torch._dynamo.reset()  # a fresh recompile budget for the step's row counts
    assert main(["serve", "--model", served["model"], "--compile-frozen", "--max-rows", "2"]) == 0
    loaded = served["loaded"][0]
    assert loaded["dtype"] == torch.bfloat16 and loaded["quantize"] is None
    assert "compiling the decode step for 1, 2 rows" in capsys.readouterr().out
    with TestClient(served["app"]) as client:
        assert client.get("/v1/info").json()["compile"] == "frozen"
        answer = client.post("/v1/generate", json={"prompt": "a", "max_new_tokens": 3, "sampler": "greedy"})
    assert answer.status_code == 200


def test_serve_takes_one_compile_flag(served, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--model", served["model"], "--compile", "--compile-frozen"])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_serve_options_name_a_bad_compile_choice():
    with pytest.raises(cs.ConfigError, match=r"ServeOptions\.compile"):
        cs.serve.ServeOptions(compile="yes")


def test_serve_refuses_a_compile_it_cannot_run_before_loading(served, capsys):
    assert main(["serve", "--model", served["model"], "--compile", "--max-rows", "1000"]) == 2
    err = capsys.readouterr().err
    assert "max_rows=1000 takes 11 row counts" in err and "Traceback" not in err
    assert served["loaded"] == []
