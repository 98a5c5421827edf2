"""The local trainer: learning, exact resume, accumulation, guard rails, checkpoints, metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.training.data import IGNORE, Batch

CAPTIONS = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("circle", "square", "triangle")]


class Stop(Exception):
    pass


@pytest.fixture
def make_pipe(registry, registered_plugin, trained_sentencepiece, digits_plugin, tmp_path):
    registered_plugin(digits_plugin, name="digits-plugin")
    data = tmp_path / "data.jsonl"
    lines = [
        {"segments": [{"text": c}, {"modality": "digits", "payload": [i % 10, (i * 3) % 10]}]}
        for i, c in enumerate(CAPTIONS)
    ]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def make(*, seed=0, dropout=0.0, **trainer):
        options = {"precision": "fp32", "progress": False, "lr": 3e-3, "warmup_steps": 2, **trainer}
        config = cs.PipelineConfig(
            text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
            modalities=({"name": "digits", "options": {"block": 2}},),
            model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=64, dropout=dropout),
            attention="sdpa",
            stability=("qk-norm", "z-loss", *(("dropout",) if dropout else ())),
            trainer={"name": "local", "options": options},
        )
        pipe = cs.Pipeline.from_config(config)
        torch.manual_seed(seed)
        pipe.model = pipe.build_model()
        return pipe

    make.data = cs.DataConfig(sources=(cs.SourceConfig(path=str(data)),), seq_len=32, batch_size=4)
    return make


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_loss_goes_down_and_run_folder_is_complete(make_pipe, tmp_path):
    pipe = make_pipe()
    result = pipe.train(make_pipe.data, steps=30, out_dir=tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(30))
    assert {"loss", "cross_entropy", "z_loss", "lr", "grad_norm", "tokens_per_s", "skipped_steps"} <= set(lines[0])
    assert result.final_loss < 0.7 * lines[0]["loss"]  # 30 steps of a 2-layer model: clearly learning
    assert result.checkpoint == tmp_path / "run" / "checkpoints" / "step-00000030"
    reloaded = cs.Pipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert torch.equal(reloaded.model.output.weight, pipe.model.output.weight)
    assert isinstance(cs.load_model(result.checkpoint / "model"), cs.ChameleonModel)
    state = torch.load(result.checkpoint / "trainer_state.pt", weights_only=True)
    assert all(group["fused"] for group in state["optimizer"]["param_groups"])  # one AdamW kernel per step


def test_training_computes_the_loss_in_forward_without_full_logits(make_pipe):
    pipe = make_pipe()
    seen = []
    pipe.model.register_forward_hook(lambda module, args, out: seen.append((out.logits, out.loss)))
    pipe.train(make_pipe.data, steps=2)
    assert [logits for logits, _ in seen] == [None, None]  # model.chunked_loss: qk-norm and z-loss allow it
    assert all(loss is not None and torch.isfinite(loss.loss) for _, loss in seen)


def test_resume_is_bitwise_exact(make_pipe, tmp_path):
    straight = make_pipe(dropout=0.1, checkpoint_every=5)
    straight.train(make_pipe.data, steps=20, out_dir=tmp_path / "a")

    class StopAtTen(cs.Callback):
        def on_checkpoint(self, step, path):
            if step == 10:
                raise Stop

    interrupted = make_pipe(dropout=0.1, checkpoint_every=5)
    with pytest.raises(Stop):
        interrupted.train(make_pipe.data, steps=20, out_dir=tmp_path / "b", callbacks=[StopAtTen()])
    torch.manual_seed(1234)  # a fresh process: other RNG state, other initial weights
    resumed = make_pipe(seed=99, dropout=0.1, checkpoint_every=5)
    result = resumed.train(make_pipe.data, steps=20, out_dir=tmp_path / "b")
    assert result.resumed_from == 10
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(20))


def test_a_finished_run_says_so_instead_of_training_nothing(make_pipe, tmp_path):
    pipe = make_pipe()
    first = pipe.train(make_pipe.data, steps=4, out_dir=tmp_path / "run")
    assert (first.steps, first.trained_steps, first.resumed_from) == (4, 4, None)
    before = _weights(pipe.model)
    with pytest.raises(cs.TrainingError, match=r"already finished: its newest checkpoint is step 4 of steps=4"):
        pipe.train(make_pipe.data, steps=4, out_dir=tmp_path / "run")
    with pytest.raises(cs.TrainingError, match=r"is at step 4, past steps=3"):
        pipe.train(make_pipe.data, steps=3, out_dir=tmp_path / "run")
    assert all(torch.equal(v, pipe.model.state_dict()[k]) for k, v in before.items())
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000004"]


def test_extending_a_run_keeps_its_schedule_and_counts_the_new_steps(make_pipe, tmp_path):
    pipe = make_pipe(schedule="cosine")
    pipe.train(make_pipe.data, steps=6, out_dir=tmp_path / "run")
    with pytest.warns(UserWarning, match=r"planned for 6 steps and now trains to 9: the learning-rate schedule"):
        more = pipe.train(make_pipe.data, steps=9, out_dir=tmp_path / "run")
    assert (more.steps, more.resumed_from, more.trained_steps) == (9, 6, 3)
    assert math.isfinite(more.final_loss)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {m["step"]: m["lr"] for m in lines}
    final = pipe.config.trainer.options["lr"] * 0.1  # min_lr_ratio's default
    assert lrs[5] == pytest.approx(final) and [lrs[s] for s in (6, 7, 8)] == pytest.approx([final] * 3)
    # an interrupted extension resumes on the schedule it was first planned with, without a new plan
    state = torch.load(more.checkpoint / "trainer_state.pt", weights_only=True)
    assert state["schedule_steps"] == 6


class FixedBatches:
    """A batch source serving one fixed batch, whole or in two halves."""

    def __init__(self, batch: Batch, halves: bool) -> None:
        self.batch, self.halves = batch, halves
        self.counters = {}

    def stage(self, step):
        return 1

    def batch_at(self, step, micro=0):
        if not self.halves:
            return self.batch
        rows = slice(0, 2) if micro == 0 else slice(2, 4)
        return Batch(self.batch.input_ids[rows], self.batch.targets[rows], self.batch.document_ids[rows])


def test_accumulation_equals_one_big_batch(make_pipe):
    pipe = make_pipe()
    batch = cs.MixtureData(pipe, make_pipe.data, total_steps=1).batch_at(0)
    batch.targets[0, 5:] = IGNORE  # uneven token counts: weighting by tokens must still be exact
    big, small = make_pipe(), make_pipe(grad_accum=2)
    big.train(FixedBatches(batch, halves=False), steps=3)
    small.train(FixedBatches(batch, halves=True), steps=3)
    for key, value in big.model.state_dict().items():
        torch.testing.assert_close(small.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_non_finite_steps_are_skipped_then_stop(make_pipe):
    pipe = make_pipe(max_nonfinite=3)
    with torch.no_grad():
        pipe.model.tok_embeddings.weight[:] = float("nan")
    before = _weights(pipe.model)
    with pytest.raises(cs.TrainingError, match="3 non-finite steps in a row"):
        pipe.train(make_pipe.data, steps=10)
    after = pipe.model.state_dict()
    assert all(torch.equal(before[k], after[k]) or torch.isnan(before[k]).any() for k in before)


def test_checkpoints_keep_the_last_k(make_pipe, tmp_path):
    pipe = make_pipe(checkpoint_every=4, keep_last=2)
    pipe.train(make_pipe.data, steps=12, out_dir=tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-00000008", "step-00000012"]


def test_schedules():
    from chameleon_training.options import TrainerOptions
    from chameleon_training.schedule import learning_rate

    warm = TrainerOptions(lr=1.0, warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    assert [learning_rate(warm, s, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(warm, 13, 14) == pytest.approx(0.1)
    linear = TrainerOptions(lr=1.0, schedule="linear", min_lr_ratio=0.0)
    assert learning_rate(linear, 5, 11) == pytest.approx(0.5)
    exponential = TrainerOptions(lr=1.0, schedule="exponential", min_lr_ratio=0.01)
    assert learning_rate(exponential, 5, 11) == pytest.approx(0.1)
    assert learning_rate(TrainerOptions(lr=2.0, schedule="constant"), 7, 10) == 2.0


def test_bad_trainer_options(make_pipe):
    with pytest.raises(cs.ConfigError, match="grad_accum must be >= 1"):
        make_pipe(grad_accum=0).train(make_pipe.data, steps=1)
    with pytest.raises(cs.ConfigError, match="steps must be > 0"):
        make_pipe().train(make_pipe.data, steps=0)


def test_freeze_patterns_keep_parameters_fixed(make_pipe):
    pipe = make_pipe(freeze=("layers.0.*", "tok_embeddings.*"))
    before = _weights(pipe.model)
    pipe.train(make_pipe.data, steps=3)
    after = pipe.model.state_dict()
    for key in before:
        frozen = key.startswith(("layers.0.", "tok_embeddings."))
        assert torch.equal(before[key], after[key]) == frozen, key


def test_anole_trains_only_the_image_rows_of_the_head(registry, trained_sentencepiece, tiny_image_options, tmp_path):
    import PIL.Image

    doc = cs.Document.of("a red circle", PIL.Image.new("RGB", (16, 16), (255, 0, 0)))
    data = tmp_path / "d.jsonl"
    cs.write_jsonl([doc], data)
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=1, num_heads=4, max_seq_len=64),
        trainer={"name": "local", "options": {"anole": True, "precision": "fp32", "progress": False, "lr": 1e-2}},
    )
    pipe = cs.Pipeline.from_config(config)
    pipe.model = pipe.build_model()
    before = _weights(pipe.model)
    pipe.train(cs.DataConfig(sources=(cs.SourceConfig(path=str(data)),), seq_len=32, batch_size=2), steps=3)
    after = pipe.model.state_dict()
    rows = pipe.vocabulary.code_mask("image")
    assert not torch.equal(before["output.weight"][rows], after["output.weight"][rows])
    assert torch.equal(before["output.weight"][~rows], after["output.weight"][~rows])
    assert all(torch.equal(before[k], after[k]) for k in before if k != "output.weight")


def test_auto_precision_follows_the_measured_rule(monkeypatch, tmp_path):
    from chameleon_training.local import resolve_precision
    from chameleon_training.options import TrainerOptions

    def cpu_with(flags):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: "avx512_bf16" in flags.split())
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: "amx_tile" in flags.split())

    cpu = torch.device("cpu")
    cpu_with("avx512f amx_bf16 amx_tile")
    assert resolve_precision(TrainerOptions(), cpu) == torch.bfloat16
    cpu_with("avx512f avx512_bf16")  # no AMX, but bf16 dot products: 0.65x the fp32 step time measured
    assert resolve_precision(TrainerOptions(), cpu) == torch.bfloat16
    cpu_with("avx2 fma")  # neither: bf16 would only add casts
    assert resolve_precision(TrainerOptions(), cpu) is None
    assert resolve_precision(TrainerOptions(precision="bf16"), cpu) == torch.bfloat16
    cpu_with("avx512f amx_bf16")
    assert resolve_precision(TrainerOptions(precision="fp32"), cpu) is None
