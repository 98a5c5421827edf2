"""``chameleon demo --quick`` as ``make demo`` runs it: every file the demo promises, in the promised shape.

The quick run is small: it checks the plumbing and the manifest, not the quality bar (the default
run's figures are measured by ``make demo`` and reported in the README).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from chameleon_apps.demo import PLANS, QUALITY_BAR, caption_pairs
from chameleon_apps.shapes import COLORS, SHAPES, sample_shapes
from hypothesis import given, settings
from hypothesis import strategies as st

from chameleon_sdk import ChameleonError, Image
from chameleon_sdk.pipeline import Pipeline


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    script = shutil.which("chameleon") or str(Path(sys.executable).parent / "chameleon")
    if not Path(script).exists():
        pytest.skip("console script not installed")
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        [script, "demo", "--quick", "--quiet", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "training the transformer" not in result.stdout + result.stderr  # --quiet: no phase lines
    assert "\r" not in result.stderr  # and no progress bars
    return out, json.loads((out / "manifest.json").read_text()), result.stdout


def test_manifest_lists_every_sample_with_files_relative_to_the_folder(demo):
    out, manifest, _ = demo
    quick = PLANS["quick"]
    assert len(manifest["text_to_image"]) == len(COLORS) * len(SHAPES) * quick.draws_per_caption
    assert len(manifest["image_to_text"]) == quick.captions
    for item in manifest["text_to_image"]:
        assert set(item) == {"prompt", "color", "shape", "image"}
        assert item["prompt"] == f"a {item['color']} {item['shape']}"
    for item in manifest["image_to_text"]:
        assert set(item) == {"image", "color", "shape", "output"}
    for item in manifest["text_to_image"] + manifest["image_to_text"]:
        assert not Path(item["image"]).is_absolute()
        with PIL.Image.open(out / item["image"]) as image:
            assert image.mode == "RGB"


def test_metrics_hold_the_quality_table_and_the_validated_evaluator(demo):
    _, manifest, stdout = demo
    metrics = manifest["metrics"]
    assert set(metrics["quality"]) == set(QUALITY_BAR)
    assert metrics["evaluator_ground_truth"]["both"] >= 0.99  # the evaluator itself is validated every run
    assert metrics["passed"] is False or all(metrics["quality"][k] >= v for k, v in QUALITY_BAR.items())
    assert 0 <= metrics["text_to_image"]["color"] <= 1 and metrics["text_to_image"]["n"] == len(
        manifest["text_to_image"]
    )
    assert metrics["final_loss"] > 0 and "psnr" in metrics["image_tokenizer"]
    assert "image_to_text.exact" in stdout  # the table is printed at the end
    first = metrics["text_to_image_first_sample"]  # quick plan: best of 2 drawings; the 1st draw also scored
    assert first["n"] == metrics["text_to_image"]["n"] and "(not reranked)" in stdout


def test_caption_log_likelihoods_are_log_probabilities_that_batching_does_not_change(demo):
    from chameleon_apps.demo import caption_log_likelihoods
    from chameleon_apps.shapes import sample_shapes

    out, _, _ = demo
    pipe = Pipeline.from_pretrained(out / "model")
    shapes = sample_shapes(6, seed=11)
    right = caption_log_likelihoods(pipe, [s.image for s in shapes], [s.caption for s in shapes])
    one_by_one = [caption_log_likelihoods(pipe, [s.image], [s.caption])[0] for s in shapes]
    assert right == pytest.approx(one_by_one, abs=1e-4)  # padding in a batch changes nothing
    assert all(score < 0 for score in right)
    with pytest.raises(ChameleonError, match="2 pictures but 1 captions"):
        caption_log_likelihoods(pipe, [shapes[0].image] * 2, ["a red circle"])


def test_story_is_interleaved_and_checked(demo):
    out, manifest, _ = demo
    story = manifest["story"]
    assert story["stories"] and story["images"] == sum(len(s["checks"]) for s in story["stories"])
    for s in story["stories"]:
        assert s["segments"][0] == {"text": s["prompt"]}
        for seg in s["segments"]:
            assert ("image" in seg) != ("text" in seg)
            if "image" in seg:
                assert (out / seg["image"]).is_file()


def test_page_curves_metrics_and_a_loadable_model(demo):
    out, manifest, _ = demo
    page = (out / "index.html").read_text()
    images = manifest["text_to_image"] + manifest["image_to_text"]
    assert page.count("data:image/png") >= len(images)
    assert (out / "metrics.jsonl").read_text().count("\n") == manifest["metrics"]["steps"]
    with PIL.Image.open(out / "curves.png") as curves:
        assert curves.format == "PNG" and curves.size[0] > 100
    pipe = Pipeline.from_pretrained(out / manifest["files"]["model"])
    drawn = pipe.generate("a red circle", mode="image", max_new_tokens=80)
    assert [type(s) for s in drawn] == [Image]


def test_the_transformer_trains_at_the_plans_precision(demo):
    out, manifest, _ = demo
    pipe = Pipeline.from_pretrained(out / manifest["files"]["model"])
    assert pipe.config.trainer.options["precision"] == manifest["plan"]["precision"] == PLANS["quick"].precision


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium is not installed")
def test_the_page_renders_its_pictures_in_headless_chromium(demo, tmp_path):
    out, _, _ = demo
    shot = tmp_path / "page.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    command = ["chromium", *flags, "--window-size=1000,1600", f"--screenshot={shot}", (out / "index.html").as_uri()]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    with PIL.Image.open(shot) as page:
        rgb = np.asarray(page.convert("RGB"), dtype=np.int16)
        coloured = int((rgb.max(axis=-1) - rgb.min(axis=-1) > 60).sum())
    assert coloured > 2000  # the pictures (coloured shapes) are on screen, not just text


@settings(max_examples=30, deadline=None)
@given(count=st.integers(0, 40), share=st.floats(0.0, 1.0))
def test_pairs_put_the_asked_share_picture_first_spread_evenly(count, share):
    pairs = caption_pairs(sample_shapes(count, seed=0, size=16), share)
    first = [isinstance(doc.segments[0], Image) for doc in pairs]
    assert sum(first) == math.floor(count * share)
    for end in range(count + 1):  # every prefix holds its share, to within one pair
        assert abs(sum(first[:end]) - end * share) < 1
    assert all({type(s).__name__ for s in doc} == {"Text", "Image"} for doc in pairs)
