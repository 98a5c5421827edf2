"""The ``lora`` adapter: what it trains, what it saves, and that merging changes no logit."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.cli import main
from chameleon_sdk.tiny_release import write_tiny_release

pytest.importorskip("peft")

IDS = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))


def _model(seed: int = 0) -> cs.ChameleonModel:
    torch.manual_seed(seed)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=96, max_seq_len=64)
    return cs.build_model(config).eval()


def _randomize_adapter(model: torch.nn.Module, scale: float = 2.0, seed: int = 3) -> None:
    """peft (and RowLoRA) start B at zero (the adapter is a no-op); a trained adapter is not. The update
    ``scale * B A`` is drawn about as large as the base weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name or "rows_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15 / scale**0.5)


def _logits(model: torch.nn.Module, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def test_only_the_adapter_requires_gradients():
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 4, "targets": ["attention", "mlp"]}})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    wrapped = {name.split(".lora_")[0] for name in trainable}
    assert {n.rsplit(".", 1)[1] for n in wrapped} == {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}
    assert len(wrapped) == 2 * 7
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) < 0.2 * sum(
        p.numel() for p in model.parameters()
    )


def test_patterns_pick_modules_by_name():
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"targets": ["layers.1.attention.w[qv]", "head"]}})
    wrapped = {name.split(".lora_")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert wrapped == {"layers.1.attention.wq", "layers.1.attention.wv", "output"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"targets": ["nothing.*"]}, "match no module"),
        ({"targets": ["layers.0"]}, "nn.Linear"),
        ({"targets": []}, "non-empty"),
        ({"rank": 0}, "rank must be > 0"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(cs.ConfigError, match=match):
        cs.attach_adapter(_model(), {"name": "lora", "options": options})


def test_a_second_adapter_is_refused():
    model = cs.attach_adapter(_model(), "lora")
    with pytest.raises(cs.ConfigError, match="already carries an adapter"):
        cs.attach_adapter(model, "lora")


@settings(max_examples=8, deadline=None)
@given(
    targets=st.lists(st.sampled_from(["attention", "mlp", "head", "layers.0.*.w[12]"]), min_size=1, unique=True),
    rank=st.integers(1, 8),
    alpha=st.floats(0.5, 64),
)
def test_merged_logits_equal_adapter_logits(targets, rank, alpha):
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": rank, "alpha": alpha, "targets": targets}})
    _randomize_adapter(model, alpha / rank)
    adapted = _logits(model)
    assert not torch.allclose(adapted, _logits(_model()), atol=1e-3)  # the adapter does something
    merged = cs.merge_adapter(model)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert set(merged.state_dict()) == set(_model().state_dict())
    torch.testing.assert_close(_logits(merged), adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_frozen_decode_after_merging_reads_the_merged_weights(dtype):
    # peft merges through ``weight.data``, a write torch does not count, and frozen compiled code
    # keeps the weights it was compiled with unless told. In bf16 it holds its own laid-out copies;
    # fp32 one-row steps read the weights' own storage, so they alone would not show stale code
    model, prompt, options = _model().to(dtype), [0, 5, 9, 40], {"max_new_tokens": 8, "stop_ids": []}
    before = cs.generate_tokens(model, prompt, **options, compile="frozen")
    adapted = cs.attach_adapter(model, {"name": "lora", "options": {"rank": 4, "targets": ["attention", "mlp"]}})
    _randomize_adapter(adapted)
    merged = cs.merge_adapter(adapted)
    assert merged is model  # the model whose frozen code was compiled before the merge
    eager = cs.generate_tokens(merged, prompt, **options)
    assert not torch.equal(eager[1:], before[1:])  # the merge changes the tokens the compiled steps give
    assert torch.equal(cs.generate_tokens(merged, prompt, **options, compile="frozen"), eager)


def test_saved_adapter_loads_onto_a_fresh_base(tmp_path):
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 4, "targets": ["attention"]}})
    _randomize_adapter(model)
    path = cs.save_adapter(model, tmp_path / "adapter")
    assert sorted(p.name for p in path.iterdir()) == ["adapter.json", "adapter.safetensors", "manifest.json"]
    config = json.loads((path / "adapter.json").read_text())
    assert config["name"] == "lora" and config["options"]["rank"] == 4
    stored = plugin_api.read_safetensors(path / "adapter.safetensors")
    per_layer = (4 * 32 + 32 * 4) * 2 + (4 * 32 + 16 * 4) * 2  # wq, wo: 32 -> 32; wk, wv: 32 -> 16 (2 kv heads)
    assert sum(t.numel() for t in stored.values()) == 2 * per_layer
    loaded = cs.load_adapter(_model(), path)
    torch.testing.assert_close(_logits(loaded), _logits(model), atol=0, rtol=0)


def test_an_adapter_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"targets": ["mlp"]}})
    path = cs.save_adapter(model, tmp_path / "adapter")
    other = cs.build_model(cs.ModelConfig(dim=64, num_layers=2, num_heads=4, vocab_size=96, max_seq_len=64))
    with pytest.raises(cs.CheckpointError, match="does not fit"):
        cs.load_adapter(other, path)
    with pytest.raises(cs.CheckpointError, match="not an adapter folder"):
        cs.load_adapter(_model(), tmp_path)
    weights = path / "adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    with pytest.raises(cs.CheckpointError, match="corrupt: its SHA-256"):
        cs.load_adapter(_model(), path)


class _Repeat:
    """The same batch at every step."""

    def __init__(self) -> None:
        ids = torch.randint(0, 96, (4, 17), generator=torch.Generator().manual_seed(2))
        documents = torch.zeros(4, 16, dtype=torch.long)
        self.batch = plugin_api.Batch(input_ids=ids[:, :-1], targets=ids[:, 1:], document_ids=documents)

    def batch_at(self, step: int, micro: int = 0) -> plugin_api.Batch:
        return self.batch

    def stage(self, step: int) -> int:
        return 1

    @property
    def counters(self):
        return {}


def test_the_local_trainer_trains_only_the_adapter(tmp_path):
    base = {name: t.clone() for name, t in _model().state_dict().items()}
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 4, "alpha": 8, "targets": ["attention"]}})
    before = {name: t.clone() for name, t in model.state_dict().items()}
    trainer = cs.get_registry().build("trainer", "local", {"lr": 1e-2, "precision": "fp32", "progress": False})
    result = trainer.fit(model, _Repeat(), steps=5, out_dir=None)
    after = model.state_dict()
    changed = {name for name in after if not torch.equal(after[name], before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert result.final_loss < 10
    merged = cs.merge_adapter(model)
    moved = {name for name, t in merged.state_dict().items() if not torch.equal(t, base[name])}
    assert moved == {f"layers.{i}.attention.w{p}.weight" for i in range(2) for p in "qkvo"}


@pytest.fixture(scope="module")
def hf_release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("release") / "hf", "hf")


@pytest.mark.parametrize("layout", ["hf", "native"])
def test_chameleon_merge_writes_what_the_adapter_computed(hf_release, tmp_path, layout, capsys):
    pipe = cs.Pipeline.from_pretrained(hf_release)
    cs.attach_adapter(pipe.model, {"name": "lora", "options": {"rank": 2, "targets": ["attention", "mlp"]}})
    _randomize_adapter(pipe.model)
    ids = torch.randint(0, pipe.model.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(4))
    adapted = _logits(pipe.model, ids)
    cs.save_adapter(pipe.model, tmp_path / "adapter")
    argv = ["merge", str(hf_release), str(tmp_path / "adapter"), str(tmp_path / "merged"), "--format", layout]
    assert main(argv) == 0
    assert f"({layout}, adapter merged)" in capsys.readouterr().out
    merged = cs.Pipeline.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(_logits(merged.model, ids), adapted, atol=1e-5, rtol=1e-5)


def test_chameleon_merge_names_a_wrong_adapter_folder(hf_release, tmp_path, capsys):
    assert main(["merge", str(hf_release), str(hf_release), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "not an adapter folder" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_chameleon_train_with_an_adapter_then_merge(hf_release, tmp_path, capsys):
    """A released checkpoint -> LoRA-tuned by `chameleon train` -> merged -> loaded like any checkpoint."""
    cs.write_jsonl(
        [cs.Document.of(f"a red square and a blue circle, number {i}") for i in range(8)], tmp_path / "t.jsonl"
    )
    (tmp_path / "run.toml").write_text(
        f"""
steps = 2
out_dir = "{tmp_path / "run"}"
pretrained = "{hf_release}"
adapter = {{ name = "lora", options = {{ rank = 2, targets = ["attention"] }} }}
trainer = {{ name = "local", options = {{ activation_checkpointing = true, precision = "fp32" }} }}
[data]
seq_len = 16
batch_size = 2
sources = [{{ path = "t.jsonl" }}]
"""
    )
    assert main(["train", str(tmp_path / "run.toml"), "--quiet"]) == 0
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
    assert not (tmp_path / "run" / "pipeline").exists()  # the base is unchanged: nothing else to save
    adapted = cs.load_adapter(cs.Pipeline.from_pretrained(hf_release).model, tmp_path / "run" / "adapter")
    assert main(["merge", str(hf_release), str(tmp_path / "run" / "adapter"), str(tmp_path / "merged")]) == 0
    merged = cs.Pipeline.from_pretrained(tmp_path / "merged")
    ids = torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(_logits(merged.model, ids), _logits(adapted, ids), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(_logits(merged.model, ids), _logits(cs.Pipeline.from_pretrained(hf_release).model, ids))


def test_a_pipeline_with_an_adapter_is_not_saved_whole(hf_release, tmp_path):
    pipe = cs.Pipeline.from_pretrained(hf_release)
    cs.attach_adapter(pipe.model, "lora")
    with pytest.raises(cs.CheckpointError, match="carries an adapter"):
        pipe.save_pretrained(tmp_path / "whole")
    assert not (tmp_path / "whole").exists()


def test_lora_on_the_head_trains_through_the_training_loss():
    """A head an adapter wraps is not a plain nn.Linear: the loss is computed from whole logits, so the
    head's adapter gets gradients (the chunked path reads ``output.weight`` and would skip it)."""
    model = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 4, "targets": ["head"]}})
    assert not model.chunked_loss
    out = model(IDS, targets=IDS)
    out.loss.loss.backward()
    assert float(model.output.lora_B["default"].weight.grad.abs().sum()) > 0
    reference = model(IDS).logits
    expected = torch.nn.functional.cross_entropy(reference.flatten(0, 1), IDS.flatten())
    torch.testing.assert_close(out.loss.terms["cross_entropy"], expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def released_model(hf_release):
    """A model whose vocabulary has an image block (the tiny release's), so its head has image rows."""
    return cs.Pipeline.from_pretrained(hf_release).model


def _image_rows(model) -> torch.Tensor:
    return model.vocabulary.code_mask("image")[: model.config.vocab_size].nonzero().squeeze(1)


@settings(max_examples=6, deadline=None)
@given(rank=st.integers(1, 8), alpha=st.floats(0.5, 64), with_attention=st.booleans())
def test_head_image_rows_change_only_the_image_rows_and_merge_exactly(released_model, rank, alpha, with_attention):
    import copy

    base = copy.deepcopy(released_model).eval()
    targets = ["head-image-rows", *(["attention"] if with_attention else [])]
    model = cs.attach_adapter(
        copy.deepcopy(base), {"name": "lora", "options": {"rank": rank, "alpha": alpha, "targets": targets}}
    )
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert {"output.rows_A", "output.rows_B"} <= trainable
    assert (
        all(".lora_" in n for n in trainable - {"output.rows_A", "output.rows_B"})
        and (len(trainable) > 2) is with_attention
    )
    _randomize_adapter(model, alpha / rank)
    ids = torch.randint(0, base.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(5))
    adapted = _logits(model, ids)
    merged = cs.merge_adapter(model)
    scale = float(adapted.abs().max())  # this model's logits reach ~11: 1e-5 of that scale (fp32 rounding)
    torch.testing.assert_close(_logits(merged, ids) / scale, adapted / scale, atol=1e-5, rtol=0)
    assert set(merged.state_dict()) == set(base.state_dict())
    moved = (merged.output.weight - base.output.weight).abs().sum(dim=1) > 0
    assert moved.any() and set(moved.nonzero().squeeze(1).tolist()) <= set(_image_rows(base).tolist())


def test_head_image_rows_save_load_and_train_with_the_local_trainer(released_model, tmp_path):
    import copy

    options = {"name": "lora", "options": {"rank": 2, "targets": ["head-image-rows"]}}
    model = cs.attach_adapter(copy.deepcopy(released_model), options)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == ["output.rows_A", "output.rows_B"]
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (4, 17), generator=torch.Generator().manual_seed(2))
    image = _image_rows(model)
    ids[:, 1::2] = image[torch.randint(0, len(image), (4, 8), generator=torch.Generator().manual_seed(3))]
    batch = plugin_api.Batch(
        input_ids=ids[:, :-1], targets=ids[:, 1:], document_ids=torch.zeros(4, 16, dtype=torch.long)
    )
    data = _Repeat()
    data.batch = batch
    trainer = cs.get_registry().build("trainer", "local", {"lr": 1e-2, "precision": "fp32", "progress": False})
    before = model.output.rows_B.detach().clone()
    trainer.fit(model, data, steps=3, out_dir=None)
    assert not torch.equal(model.output.rows_B, before)
    stored = cs.save_adapter(model, tmp_path / "rows")
    tensors = plugin_api.read_safetensors(stored / "adapter.safetensors")
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {
        "output.rows_A": (2, model.config.dim),
        "output.rows_B": (len(image), 2),
    }
    loaded = cs.load_adapter(copy.deepcopy(released_model), stored)
    torch.testing.assert_close(_logits(loaded.eval(), ids), _logits(model.eval(), ids), atol=0, rtol=0)


def test_head_image_rows_needs_an_image_vocabulary_and_excludes_head():
    with pytest.raises(cs.ConfigError, match="vocabulary has an 'image' block"):
        cs.attach_adapter(_model(), {"name": "lora", "options": {"targets": ["head-image-rows"]}})
    with pytest.raises(cs.ConfigError, match="overlap"):
        cs.attach_adapter(_model(), {"name": "lora", "options": {"targets": ["head", "head-image-rows"]}})


def _lora_model() -> cs.ChameleonModel:
    return cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 4, "alpha": 8, "targets": ["attention"]}})


def test_a_lora_runs_checkpoints_hold_the_adapter_and_resume_exactly(tmp_path):
    """Step checkpoints of a model with an adapter hold the adapter (not the unchanged base), and
    resuming from one onto the same base gives the weights of an uninterrupted run."""
    options = {"lr": 1e-2, "precision": "fp32", "progress": False, "checkpoint_every": 2, "keep_last": 5}
    trainer = cs.get_registry().build("trainer", "local", options)
    straight = _lora_model()
    trainer.fit(straight, _Repeat(), steps=4, out_dir=tmp_path / "straight")
    checkpoint = tmp_path / "straight" / "checkpoints" / "step-00000002"
    assert (checkpoint / "adapter" / "adapter.safetensors").is_file() and not (checkpoint / "model").exists()
    stored = plugin_api.read_safetensors(checkpoint / "adapter" / "adapter.safetensors")
    assert stored and all("lora_" in key for key in stored)

    class StopAtTwo(cs.Callback):
        def on_checkpoint(self, step, path):
            if step == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_lora_model(), _Repeat(), steps=4, out_dir=tmp_path / "resumed", callbacks=[StopAtTwo()])
    torch.manual_seed(1234)  # a fresh process: other RNG state (the base and the adapter are seeded alike)
    resumed = _lora_model()
    result = trainer.fit(resumed, _Repeat(), steps=4, out_dir=tmp_path / "resumed")
    assert result.resumed_from == 2
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    with pytest.raises(cs.CheckpointError, match="holds only an adapter"):
        trainer.fit(_model(), _Repeat(), steps=6, out_dir=tmp_path / "resumed")
    other = cs.attach_adapter(_model(), {"name": "lora", "options": {"rank": 2, "targets": ["attention"]}})
    with pytest.raises(cs.CheckpointError, match="already carries"):
        trainer.fit(other, _Repeat(), steps=6, out_dir=tmp_path / "resumed")


def test_row_lora_gradients_are_those_of_its_formula():
    """RowLoRA adds its update into the base output in place; autograd gives what the plain formula does."""
    from chameleon_adapters.rows import RowLoRA

    torch.manual_seed(0)
    base = torch.nn.Linear(8, 20, bias=False)
    layer = RowLoRA(base, torch.tensor([3, 5, 7, 11]), rank=2, alpha=4.0, dropout=0.0)
    with torch.no_grad():
        layer.rows_B.normal_()
    x = torch.randn(3, 8, requires_grad=True)
    grads = torch.autograd.grad(layer(x).square().sum(), (x, layer.rows_A, layer.rows_B))
    update = (x @ layer.rows_A.t() @ layer.rows_B.t()) * layer.scaling
    reference = base(x).index_add(-1, layer.rows, update)
    expected = torch.autograd.grad(reference.square().sum(), (x, layer.rows_A, layer.rows_B))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=0, rtol=0)
