"""Mid-training checkpoints: N steps + resume + N steps is bitwise the uninterrupted 2N-step run on CPU."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk
from chameleon_sdk import CheckpointError, ConfigError, TrainingError, plugin_api

#: EMA codebook, dead-code restarts, dropout (global RNG) and a discriminator: every kind of state
TRAINING = {
    "steps": 6,
    "batch_size": 4,
    "warmup_steps": 2,
    "codebook_update": "ema",
    "restart_every": 2,
    "held_out_fraction": 0.2,
    "losses": [{"name": "patch-gan", "options": {"start_step": 2, "base_channels": 8}}],
    "checkpoint_every": 3,
}


class Interrupted(Exception):
    pass


def _tokenizer(tiny_options, seed):
    torch.manual_seed(seed)
    return chameleon_sdk.get_registry().build("modality", "image", {**tiny_options, "dropout": 0.1})


def _stop_after(last_step):
    def callback(step, stats):
        if step == last_step:
            raise Interrupted

    return callback


def test_resumed_run_equals_the_uninterrupted_run_bitwise(tiny_options, shapes, tmp_path):
    data = shapes[:30]
    whole = _tokenizer(tiny_options, seed=0)
    expected = whole.fit(data, {**TRAINING, "checkpoint_dir": str(tmp_path / "whole")}, progress=False)

    first = _tokenizer(tiny_options, seed=0)
    with pytest.raises(Interrupted):  # killed right after the step-3 checkpoint
        first.fit(data, {**TRAINING, "checkpoint_dir": str(tmp_path / "run")}, progress=False, callback=_stop_after(2))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["step-00000003"]

    seen = []
    resumed = _tokenizer(tiny_options, seed=123)  # other initial weights: everything must come from the checkpoint
    metrics = resumed.fit(
        data,
        {**TRAINING, "checkpoint_dir": str(tmp_path / "run")},
        progress=False,
        callback=lambda step, stats: seen.append((step, stats)),
    )
    assert [step for step, _ in seen] == [3, 4, 5]
    assert "d_loss" in seen[-1][1] and "g_loss" in seen[-1][1]
    ours, theirs = resumed.model.state_dict(), whole.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), [k for k in ours if not torch.equal(ours[k], theirs[k])]
    timing = {"seconds", "images_per_second"}
    assert {k: v for k, v in metrics.items() if k not in timing} == {
        k: v for k, v in expected.items() if k not in timing
    }
    # the newest checkpoints of both runs hold the same discriminator and trainer state
    saved = [torch.load(tmp_path / run / "step-00000006" / "trainer_state.pt") for run in ("whole", "run")]
    d_weights = [s["losses"][0]["discriminator"] for s in saved]
    assert all(torch.equal(d_weights[0][k], d_weights[1][k]) for k in d_weights[0])
    assert torch.equal(saved[0]["ema_sum"], saved[1]["ema_sum"]) and saved[0]["restarted"] == saved[1]["restarted"]


def test_keeps_the_last_k_checkpoints_and_each_loads(tiny_options, shapes, tmp_path):
    tokenizer = _tokenizer(tiny_options, seed=0)
    options = {"steps": 5, "batch_size": 4, "checkpoint_every": 2, "keep_last": 2, "held_out_fraction": 0.0}
    tokenizer.fit(shapes[:8], {**options, "checkpoint_dir": str(tmp_path)}, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["step-00000004", "step-00000005"]  # every 2 steps, and after the last one
    assert plugin_api.verify_manifest(tmp_path / "step-00000005")
    final = chameleon_sdk.load_image_tokenizer(tmp_path / "step-00000005" / "tokenizer")
    assert torch.equal(final.encode_batch(shapes[:4]), tokenizer.encode_batch(shapes[:4]))
    # a finished run resumes to no further steps
    again = tokenizer.fit(shapes[:8], {**options, "checkpoint_dir": str(tmp_path)}, progress=False)
    assert again["steps"] == 5


def test_resume_refuses_a_different_run_and_resume_false_starts_afresh(tiny_options, shapes, tmp_path):
    tokenizer = _tokenizer(tiny_options, seed=0)
    options = {"steps": 2, "batch_size": 4, "held_out_fraction": 0.0, "checkpoint_dir": str(tmp_path)}
    tokenizer.fit(shapes[:8], options, progress=False)
    with pytest.raises(TrainingError, match="batch_size: checkpoint 4, now 2"):
        tokenizer.fit(shapes[:8], {**options, "steps": 4, "batch_size": 2}, progress=False)
    with pytest.raises(TrainingError, match="training images: checkpoint 8, now 6"):
        tokenizer.fit(shapes[:6], {**options, "steps": 4}, progress=False)
    seen = []
    tokenizer.fit(
        shapes[:8],
        {**options, "steps": 3, "batch_size": 2, "resume": False},
        progress=False,
        callback=lambda step, stats: seen.append(step),
    )
    assert seen == [0, 1, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003"]


def test_a_damaged_checkpoint_is_named_not_trained_from(tiny_options, shapes, tmp_path):
    tokenizer = _tokenizer(tiny_options, seed=0)
    options = {"steps": 2, "batch_size": 4, "held_out_fraction": 0.0, "checkpoint_dir": str(tmp_path)}
    tokenizer.fit(shapes[:8], options, progress=False)
    state = tmp_path / "step-00000002" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt' is truncated or altered"):
        tokenizer.fit(shapes[:8], {**options, "steps": 3}, progress=False)


def test_checkpoint_every_needs_a_directory(tiny_tokenizer, shapes):
    with pytest.raises(ConfigError, match="checkpoint_every needs checkpoint_dir"):
        tiny_tokenizer.fit(shapes[:4], {"steps": 2, "checkpoint_every": 1}, progress=False)
