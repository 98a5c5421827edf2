"""Training: metrics, EMA codebook, restarts, data sources, and the train-image-tokenizer command."""

from __future__ import annotations

import json

import pytest
import torch
from chameleon_image import ImageTokenizerTrainer, ImageTrainingOptions

import chameleon_sdk
from chameleon_sdk import ConfigError, Document, ImageDecodeError, load_image_tokenizer, write_jsonl
from chameleon_sdk.cli import main


def test_short_training_learns_and_reports_metrics(trained, shapes, tiny_options):
    tokenizer, metrics = trained
    assert {"psnr", "codebook_usage", "perplexity", "codes_used", "steps", "restarted_codes"} <= set(metrics)
    assert metrics["steps"] == 60 and metrics["held_out_images"] == 40
    torch.manual_seed(0)
    untrained = chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "codebook_metric": "cosine"})
    held = torch.stack([untrained.preprocess(s) for s in shapes[:40]])
    before = ImageTokenizerTrainer(untrained, ImageTrainingOptions()).evaluate(held)["psnr"]
    assert metrics["psnr"] > before + 3.0
    assert metrics["codebook_usage"] > 0.5 and metrics["perplexity"] > 10
    assert metrics["restarted_codes"] > 0
    assert not tokenizer.model.training


def test_ema_codebook_updates_without_the_optimizer(tiny_options, shapes):
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", tiny_options)
    before = tokenizer.model.quantize.embedding.weight.detach().clone()
    metrics = tokenizer.fit(
        shapes[:40], {"steps": 4, "batch_size": 8, "codebook_update": "ema", "dead_code_threshold": 0.0}, progress=False
    )
    after = tokenizer.model.quantize.embedding.weight.detach()
    assert not torch.equal(before, after) and torch.isfinite(after).all()
    assert metrics["restarted_codes"] == 0 and torch.isfinite(torch.tensor(metrics["final_loss"]))


def test_time_budget_stops_training_early(tiny_tokenizer, shapes):
    metrics = tiny_tokenizer.fit(shapes[:20], {"steps": 10_000, "batch_size": 4, "max_seconds": 0.5}, progress=False)
    assert 1 <= metrics["steps"] < 10_000


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"stepz": 3}, "did you mean 'steps'"),
        ({"codebook_update": "kmeans"}, "codebook_update"),
        ({"l1_weight": 0.0, "l2_weight": 0.0}, "not both 0"),
        ({"held_out_fraction": 1.0}, r"held_out_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_training_options_raise_config_error(tiny_tokenizer, shapes, options, message):
    with pytest.raises(ConfigError, match=message):
        tiny_tokenizer.fit(shapes[:4], options, progress=False)


def test_encoder_only_tokenizer_cannot_be_trained(tiny_options, shapes):
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "decoder": False})
    with pytest.raises(ConfigError, match="without a decoder"):
        tokenizer.fit(shapes[:4], {"steps": 1}, progress=False)


def test_trains_from_jsonl_documents(tiny_tokenizer, shapes, tmp_path):
    write_jsonl([Document.of(f"shape {i}", s) for i, s in enumerate(shapes[:6])], tmp_path / "docs.jsonl")
    metrics = tiny_tokenizer.fit(tmp_path / "docs.jsonl", {"steps": 2, "batch_size": 2}, progress=False)
    assert metrics["train_images"] + metrics["held_out_images"] == 6


def _config(tmp_path, data, tiny_options, steps=3) -> str:
    config = {
        "data": data,
        "output": "out/tokenizer",
        "tokenizer": {"name": "image", "options": tiny_options},
        "training": {"steps": steps, "batch_size": 4},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path / "config.json")


def test_cli_trains_and_saves_a_loadable_tokenizer(tiny_options, shapes, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    for i, image in enumerate(shapes[:10]):
        image.save(tmp_path / "images" / f"{i}.png")
    assert main(["train-image-tokenizer", _config(tmp_path, "images", tiny_options), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no progress bar, no periodic lines
    metrics = json.loads(captured.out)
    out = tmp_path / "out" / "tokenizer"
    assert metrics["steps"] == 3 and json.loads((out / "training_metrics.json").read_text()) == metrics
    loaded = load_image_tokenizer(out)
    assert (
        loaded.options.architecture()
        == chameleon_sdk.get_registry().build("modality", "image", tiny_options).options.architecture()
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tokenizer"]  # no temporary leftovers


def test_cli_with_a_bad_image_writes_nothing(tiny_options, shapes, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    shapes[0].save(tmp_path / "images" / "good.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert main(["train-image-tokenizer", _config(tmp_path, "images", tiny_options), "--quiet"]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ImageDecodeError, match=r"broken\.png"):
        chameleon_sdk.train_image_tokenizer(_config(tmp_path, "images", tiny_options), progress=False)
