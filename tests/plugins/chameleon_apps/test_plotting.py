"""``chameleon plot`` and :mod:`chameleon_apps.plotting`: a valid PNG from metrics, typed errors otherwise."""

from __future__ import annotations

import builtins
import json

import pytest
from chameleon_apps.plotting import MetricsFileError, MissingExtraError, plot_metrics, read_metrics, require_matplotlib

from chameleon_sdk.cli import main
from chameleon_sdk.errors import ChameleonError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_metrics(path, steps=6, **extra):
    lines = []
    for step in range(steps):
        record = {
            "step": step,
            "loss": 5.0 / (step + 1),
            "cross_entropy": 4.9 / (step + 1),
            "z_loss": 1e-3 * (step + 1),
            "lr": 1e-3 * min(1.0, (step + 1) / 3),
            "grad_norm": 0.5 + step,
            "tokens_per_s": 100.0,
            "max_attention_logit": [1.0 + step, 2.0],
            "layer_output_norm": [3.0, 4.0 + step],
            "mean_log_z": 6.0,
            **extra,
        }
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_writes_a_png_with_one_panel_per_metric(tmp_path):
    pytest.importorskip("matplotlib")
    a = _write_metrics(tmp_path / "a.jsonl")
    b = _write_metrics(tmp_path / "b.jsonl", steps=3)
    out = plot_metrics([a, b], tmp_path / "plots" / "curves.png", dpi=50)
    width, height = _png_size(out.read_bytes())
    # eight panels in two columns of 6x3 inches: 600 x 600 pixels at 50 dpi
    assert (width, height) == (600, 600)
    assert not [p for p in out.parent.iterdir() if p.name != "curves.png"]  # no temp files left behind

    only_loss = tmp_path / "loss.jsonl"
    only_loss.write_text('{"step": 0, "loss": 2.0}\n{"step": 1, "loss": 1.5}\n', encoding="utf-8")
    assert _png_size(plot_metrics(only_loss, tmp_path / "one.png", dpi=50).read_bytes()) == (300, 150)


def test_cli_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    metrics = _write_metrics(tmp_path / "metrics.jsonl")
    assert main(["plot", str(metrics), "-o", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": \n', "line 2 is not valid JSON"),
        ("[1, 2]\n", "line 1: expected a JSON object"),
        ('{"loss": 1.0}\n', "integer 'step'"),
        ("\n\n", "has no records"),
        ('{"step": 0, "stage": "one"}\n', "no plottable metrics"),
    ],
)
def test_malformed_metrics_give_a_typed_error(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MetricsFileError, match=match) as info:
        plot_metrics(path, tmp_path / "out.png")
    assert str(path) in str(info.value) and isinstance(info.value, ChameleonError)
    assert not (tmp_path / "out.png").exists()


def test_missing_file_gives_a_typed_error_and_cli_exit_code(tmp_path, capsys):
    with pytest.raises(MetricsFileError, match="does not exist"):
        read_metrics(tmp_path / "nope.jsonl")
    assert main(["plot", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "c.png")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


def test_require_matplotlib_names_the_extra_when_missing(monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(MissingExtraError, match=r"chameleon-sdk\[plot\]") as info:
        require_matplotlib()
    assert isinstance(info.value, ImportError) and isinstance(info.value, ChameleonError)
