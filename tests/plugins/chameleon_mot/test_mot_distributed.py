"""``mot`` under ``ddp`` and ``fsdp``: 2-process gloo runs (torchrun) agree with ``local``.

The grouped weights are ``[groups, out, in]`` parameters: DDP reduces their gradients like any
other, FSDP shards them on the group dimension. All three runs continue one saved pipeline (the same
weights and the same untrained tiny image tokenizer on every rank) on the same text+picture data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import attrs
import pytest
import torch
from PIL import Image as PILImage

import chameleon_sdk as cs
from chameleon_sdk.cli import main

STEPS = 4
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, trained_sentencepiece, tiny_image_options):
    """Saved pipelines (one per trainer, same weights) and the run config, in one folder."""
    folder = tmp_path_factory.mktemp("mot-distributed")
    docs = [cs.Document.of(f"a {name} square", PILImage.new("RGB", (16, 16), rgb)) for name, rgb in COLOURS.items()]
    cs.write_jsonl(docs * 2, folder / "data.jsonl", images="files")
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=128),
        attention="sdpa",
        stability=("qk-norm", "mot"),
    )
    with cs.use_registry():
        torch.manual_seed(0)
        pipe = cs.Pipeline.from_config(config)
        pipe.model = pipe.build_model()
        for trainer in ("local", "ddp", "fsdp"):
            options = {"lr": 3e-3, "warmup_steps": 1, "precision": "fp32", "progress": False, "grad_accum": 2}
            pipe.config = attrs.evolve(pipe.config, trainer={"name": trainer, "options": options})
            pipe.save_pretrained(folder / f"start-{trainer}")
    for trainer in ("local", "ddp", "fsdp"):
        (folder / f"{trainer}.toml").write_text(
            f'steps = {STEPS}\nout_dir = {json.dumps(str(folder / f"out-{trainer}"))}\npretrained = "start-{trainer}"\n'
            '[data]\nseq_len = 48\nbatch_size = 4\nsources = [{ path = "data.jsonl" }]\n',
            encoding="utf-8",
        )
    return folder


def _losses(folder, trainer):
    lines = (folder / f"out-{trainer}" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_two_processes_train_mot_like_local(trainer, runs):
    if not (runs / "out-local").exists():
        with cs.use_registry():
            assert main(["train", str(runs / "local.toml")]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "chameleon_sdk", "train", str(runs / f"{trainer}.toml")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False, cwd=runs)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    losses, reference = _losses(runs, trainer), _losses(runs, "local")
    assert len(losses) == STEPS
    assert losses == pytest.approx(reference, abs=1e-5, rel=0)
    trained = cs.Pipeline.from_pretrained(runs / f"out-{trainer}" / "pipeline").model
    expected = cs.Pipeline.from_pretrained(runs / "out-local" / "pipeline").model
    assert trained.parameter_groups is not None and trained.parameter_groups.count == 2
    for (key, value), (_, reference_value) in zip(
        trained.state_dict().items(), expected.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(value, reference_value, rtol=0, atol=1e-5, msg=key)
