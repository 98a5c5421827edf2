"""``ddp`` and ``fsdp``: 2-process gloo runs under torchrun agree with ``local``; sharded checkpoints resume.

The 2-process runs go through the user's own entry point, ``torchrun ... -m chameleon_sdk train``,
on a tiny fp32 config; ``local`` runs the same config (same global batch) in this process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.cli import main
from chameleon_sdk.training import Batch
from chameleon_sdk.training.data import IGNORE

STEPS = 6
CAPTIONS = [f"a {c} {s} next to a {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square")]


@pytest.fixture(scope="module")
def config(tmp_path_factory, trained_sentencepiece):
    """A tiny fp32 run config; two micro-batches of 4 rows per step (the global batch)."""
    folder = tmp_path_factory.mktemp("distributed")
    (folder / "data.jsonl").write_text("".join(json.dumps({"segments": [{"text": c}]}) + "\n" for c in CAPTIONS))
    path = folder / "run.toml"
    path.write_text(
        f"""
steps = {STEPS}
out_dir = "unused"
seed = 0
[pipeline]
text_tokenizer = {{ name = "sentencepiece", options = {{ model_file = {json.dumps(str(trained_sentencepiece))} }} }}
attention = "sdpa"
stability = ["qk-norm", "z-loss"]
model = {{ dim = 32, num_layers = 2, num_heads = 4, max_seq_len = 32 }}
[pipeline.trainer]
name = "local"
options = {{ lr = 3e-3, warmup_steps = 2, precision = "fp32", progress = false, grad_accum = 2 }}
[data]
seq_len = 16
batch_size = 4
sources = [{{ path = "data.jsonl" }}]
""",
        encoding="utf-8",
    )
    return path


def _torchrun(config: Path, out: Path, trainer: str, *sets: str) -> str:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "chameleon_sdk", "train", str(config), "--set", f"out_dir={out}"]
    command += ["--set", f"pipeline.trainer.name={trainer}"]
    for item in sets:
        command += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result.stdout


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return cs.Pipeline.from_pretrained(out / "pipeline").model.state_dict()


@pytest.fixture(scope="module")
def local_run(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "run"
    with cs.use_registry():
        assert main(["train", str(config), "--set", f"out_dir={out}"]) == 0
    return out


@pytest.fixture(scope="module")
def two_process_run(config, tmp_path_factory):
    """trainer -> (run folder, stdout) of a 2-process torchrun run, made once per module."""
    runs: dict[str, tuple[Path, str]] = {}

    def run(trainer: str) -> tuple[Path, str]:
        if trainer not in runs:
            out = tmp_path_factory.mktemp(trainer) / "run"
            runs[trainer] = out, _torchrun(config, out, trainer, "pipeline.trainer.options.checkpoint_every=3")
        return runs[trainer]

    return run


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_two_processes_match_local(trainer, two_process_run, local_run):
    out, stdout = two_process_run(trainer)
    assert stdout.count("trained 6 steps") == 1  # one report, from rank 0
    losses, reference = _losses(out), _losses(local_run)
    assert len(losses) == STEPS and losses[-1] < losses[0]
    assert losses == pytest.approx(reference, abs=1e-5, rel=0)
    expected = _weights(local_run)
    for key, value in _weights(out).items():  # the trained weights, gathered back for the saved pipeline
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-5, msg=key)
    checkpoint = out / "checkpoints" / "step-00000006"
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert (meta["trainer"], meta["world_size"]) == (trainer, 2)
    assert (checkpoint / "manifest.json").is_file()
    if trainer == "ddp":  # the local layout: a plain model checkpoint
        assert isinstance(cs.load_model(checkpoint / "model"), cs.ChameleonModel)
    else:  # sharded by torch.distributed.checkpoint: one file per rank, no gathered model
        assert sorted(p.name for p in (checkpoint / "dcp").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
        assert not (checkpoint / "model").exists()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000006"]  # keep_last = 2, no temporary folders left


def test_fsdp_resume_is_bitwise_exact(two_process_run, config, tmp_path):
    """3 steps, a sharded checkpoint, a new torchrun that resumes, 3 more steps == 6 steps straight."""
    straight, _ = two_process_run("fsdp")
    out = tmp_path / "resumed"
    shutil.copytree(straight, out)
    shutil.rmtree(out / "checkpoints" / "step-00000006")  # as if the run had been killed after step 3
    shutil.rmtree(out / "pipeline")
    _torchrun(config, out, "fsdp", "pipeline.trainer.options.checkpoint_every=3")
    assert _losses(out) == _losses(straight)
    resumed, expected = _weights(out), _weights(straight)
    assert resumed.keys() == expected.keys()
    for key, value in resumed.items():
        assert torch.equal(value, expected[key]), key


def _train_here(config: Path, out: Path, trainer: str, *sets: str) -> int:
    args = ["train", str(config), "--set", f"out_dir={out}", "--set", f"pipeline.trainer.name={trainer}"]
    for item in sets:
        args += ["--set", item]
    with cs.use_registry():
        return main(args)


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_without_torchrun_a_group_of_one(trainer, config, local_run, tmp_path):
    out = tmp_path / "run"
    assert _train_here(config, out, trainer) == 0
    assert not torch.distributed.is_initialized()  # the group the trainer made is closed again
    assert _losses(out) == pytest.approx(_losses(local_run), abs=1e-5, rel=0)
    model = cs.Pipeline.from_pretrained(out / "pipeline").model
    assert all(type(p.data) is torch.Tensor for p in model.parameters())  # plain weights, no shards


def test_fsdp_does_not_rely_on_a_pre_backward_hook_on_the_model_output(config, local_run, tmp_path, monkeypatch):
    """Older PyTorch releases (2.11, seen failing on CUDA) hook FSDP's pre-backward all-gather only
    onto outputs that are pytree tensors, never into a dataclass such as ModelOutput."""
    from torch.utils._pytree import tree_flatten

    state = pytest.importorskip("torch.distributed.fsdp._fully_shard._fsdp_state")

    def only_pytree_tensors(self, output):
        if torch.is_grad_enabled():
            for tensor in tree_flatten(output)[0]:
                if torch.is_tensor(tensor) and tensor.requires_grad:
                    tensor.register_hook(self._pre_backward)
        return output

    monkeypatch.setattr(state.FSDPState, "_register_pre_backward_hook", only_pytree_tensors)
    out = tmp_path / "run"
    assert _train_here(config, out, "fsdp") == 0
    assert _losses(out) == pytest.approx(_losses(local_run), abs=1e-5, rel=0)


def test_fsdp_does_not_resume_an_unsharded_checkpoint(config, local_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(local_run, out)
    assert _train_here(config, out, "fsdp", f"steps={STEPS + 2}") == 2
    assert "has no sharded state" in capsys.readouterr().err
    assert not torch.distributed.is_initialized()


def test_fsdp_refuses_anole(config, tmp_path, capsys):
    assert _train_here(config, tmp_path / "run", "fsdp", "pipeline.trainer.options.anole=true") == 2
    assert "anole is not supported by 'fsdp'" in capsys.readouterr().err


def test_each_rank_takes_its_rows_and_ranks_must_agree(monkeypatch):
    from chameleon_training.distributed import DDPStrategy

    ids = torch.arange(15).reshape(5, 3)
    targets = ids.clone()
    targets[0, 0] = IGNORE
    batch = Batch(ids, targets, torch.zeros_like(ids))
    strategy = DDPStrategy()
    strategy.rank, strategy.world_size = 1, 2
    monkeypatch.setattr(strategy, "gather", lambda value: [value, value])
    rows = strategy.rows(batch)
    assert torch.equal(rows.input_ids, ids[3:]) and torch.equal(rows.targets, targets[3:])
    with pytest.raises(cs.ConfigError, match=r"set data\.batch_size to at least 2"):
        strategy.rows(Batch(ids[:1], targets[:1], ids[:1]))
    strategy.checked_data = False
    monkeypatch.setattr(strategy, "gather", lambda value: [value, "another"])
    with pytest.raises(cs.TrainingError, match="different global batches"):
        strategy.rows(batch)


def test_fsdp_cpu_offload_matches_local(config, local_run, tmp_path):
    """Offloading moves the shards, gradients and AdamW's state to the CPU; the arithmetic is the same."""
    out = tmp_path / "run"
    _torchrun(config, out, "fsdp", "pipeline.trainer.options.cpu_offload=true")
    assert _losses(out) == pytest.approx(_losses(local_run), abs=1e-5, rel=0)


def test_fsdp_bf16_mixed_precision_trains_close_to_fp32(config, local_run, tmp_path):
    out = tmp_path / "run"
    _torchrun(config, out, "fsdp", "pipeline.trainer.options.mixed_precision=bf16")
    losses, reference = _losses(out), _losses(local_run)
    assert losses[-1] < losses[0]
    assert losses == pytest.approx(reference, abs=3e-2, rel=0)
    assert max(abs(a - b) for a, b in zip(losses, reference)) > 1e-5  # computed in bf16, not in fp32
    assert all(value.dtype == torch.float32 for value in _weights(out).values())  # fp32 master weights


def test_fsdp_gathers_bf16_weights_over_fp32_shards_on_the_cpu():
    from chameleon_training.distributed import FSDPOptions, FSDPStrategy

    torch.manual_seed(0)
    model = cs.build_model(cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=64, max_seq_len=16))
    strategy = FSDPStrategy()
    strategy.setup(FSDPOptions(mixed_precision="bf16", cpu_offload=True))
    try:
        module = strategy.wrap(strategy.prepare(model))
        seen: list[torch.dtype] = []
        module.layers[0].attention.wq.register_forward_pre_hook(lambda m, args: seen.append(m.weight.dtype))
        ids = torch.randint(0, 64, (2, 9))
        module(ids[:, :-1], targets=ids[:, 1:]).loss.loss.backward()
        assert seen == [torch.bfloat16]  # gathered for compute in bf16
        for name, param in module.named_parameters():  # the shards, their gradients: fp32 in CPU memory
            assert (param.dtype, param.grad.dtype, param.device.type) == (torch.float32, torch.float32, "cpu"), name
    finally:
        strategy.close()
    with pytest.raises(cs.ConfigError, match="mixed_precision"):
        cs.get_registry().build("trainer", "fsdp", {"mixed_precision": "fp16"})


LORA = 'adapter={"name": "lora", "options": {"rank": 2, "targets": ["attention", "mlp"]}}'


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_a_lora_adapter_trains_on_two_processes_as_on_one(trainer, config, tmp_path):
    pytest.importorskip("peft")
    assert _train_here(config, tmp_path / "local", "local", LORA) == 0
    _torchrun(config, tmp_path / trainer, trainer, LORA)
    assert not (tmp_path / trainer / "pipeline").exists()
    assert _losses(tmp_path / trainer) == pytest.approx(_losses(tmp_path / "local"), abs=1e-5, rel=0)
    local = plugin_api.read_safetensors(tmp_path / "local" / "adapter" / "adapter.safetensors")
    sharded = plugin_api.read_safetensors(tmp_path / trainer / "adapter" / "adapter.safetensors")
    assert local.keys() == sharded.keys() and any(t.abs().sum() > 0 for k, t in local.items() if "lora_B" in k)
    for key in local:
        torch.testing.assert_close(sharded[key], local[key], atol=1e-5, rtol=1e-4, msg=key)


def test_a_lora_runs_sharded_checkpoints_hold_the_adapter_and_resume_exactly(config, tmp_path):
    """FSDP + LoRA: the sharded checkpoint holds the adapter (and its optimizer state), not the frozen
    base; a new torchrun resumes from it onto the base the run config names, as if never stopped."""
    pytest.importorskip("peft")
    import torch.distributed.checkpoint as dcp

    every = "pipeline.trainer.options.checkpoint_every=3"
    straight = tmp_path / "straight"
    _torchrun(config, straight, "fsdp", LORA, every)
    stored = dcp.FileSystemReader(straight / "checkpoints" / "step-00000003" / "dcp").read_metadata()
    model_keys = [key for key in stored.state_dict_metadata if key.startswith("model.")]
    assert model_keys and all("lora_" in key for key in model_keys), model_keys[:5]
    out = tmp_path / "resumed"
    shutil.copytree(straight, out)
    shutil.rmtree(out / "checkpoints" / "step-00000006")  # as if the run had been killed after step 3
    shutil.rmtree(out / "adapter")
    _torchrun(config, out, "fsdp", LORA, every)
    assert _losses(out) == _losses(straight)
    resumed = plugin_api.read_safetensors(out / "adapter" / "adapter.safetensors")
    expected = plugin_api.read_safetensors(straight / "adapter" / "adapter.safetensors")
    assert resumed.keys() == expected.keys()
    for key, value in resumed.items():
        assert torch.equal(value, expected[key]), key
