"""The checkpoint core: format detection, atomic saves, and the tensor/JSON I/O helpers."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import chameleon_sdk
from chameleon_sdk import CheckpointError, plugin_api
from chameleon_sdk.plugin_api import CheckpointFormat, hookimpl


class MarkerFormat:
    """A test format: a directory holding ``marker.<name>`` and ``weights.safetensors``."""

    def __init__(self, name: str, *, fail_after_first_file: bool = False) -> None:
        self.name = name
        self.fail_after_first_file = fail_after_first_file

    def detect(self, path: Path) -> bool:
        return (path / f"marker.{self.name}").is_file()

    def load(self, path: Path, *, registry) -> nn.Module:
        model = nn.Linear(3, 2)
        state = plugin_api.read_safetensors(path / "weights.safetensors")
        plugin_api.load_weights(model, state, source=str(path))
        return model

    def save(self, model: nn.Module, path: Path) -> None:
        (path / f"marker.{self.name}").write_text("")
        if self.fail_after_first_file:
            raise RuntimeError("disk full")
        plugin_api.write_safetensors(model.state_dict(), path)
        (path / "model.safetensors").rename(path / "weights.safetensors")


class FormatsPlugin:
    def __init__(self, *formats: MarkerFormat) -> None:
        self.formats = formats

    @hookimpl
    def register_checkpoint_formats(self, register):
        for fmt in self.formats:
            register(fmt.name, lambda fmt=fmt: fmt)


@pytest.fixture
def formats(registry, registered_plugin):
    registered_plugin(
        FormatsPlugin(MarkerFormat("alpha"), MarkerFormat("beta"), MarkerFormat("broken", fail_after_first_file=True))
    )
    return registry


def test_marker_format_follows_the_protocol():
    assert isinstance(MarkerFormat("alpha"), CheckpointFormat)


def test_save_then_load_round_trips_and_returns_eval_mode(formats, tmp_path):
    model = nn.Linear(3, 2)
    target = chameleon_sdk.save_model(model, tmp_path / "ckpt", format="alpha")
    assert chameleon_sdk.detect_format(target) == "alpha"
    loaded = chameleon_sdk.load_model(target)
    assert not loaded.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert chameleon_sdk.load_model(target, dtype=torch.float64).weight.dtype == torch.float64


def test_failed_save_leaves_the_previous_checkpoint_and_no_debris(formats, tmp_path):
    model = nn.Linear(3, 2)
    target = chameleon_sdk.save_model(model, tmp_path / "ckpt", format="alpha")
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(RuntimeError, match="disk full"):
        chameleon_sdk.save_model(nn.Linear(3, 2), target, format="broken")
    assert sorted(p.name for p in target.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    torch.testing.assert_close(chameleon_sdk.load_model(target).weight, model.weight)


def test_save_replaces_an_existing_checkpoint(formats, tmp_path):
    first, second = nn.Linear(3, 2), nn.Linear(3, 2)
    chameleon_sdk.save_model(first, tmp_path / "ckpt", format="alpha")
    chameleon_sdk.save_model(second, tmp_path / "ckpt", format="beta")
    assert chameleon_sdk.detect_format(tmp_path / "ckpt") == "beta"
    torch.testing.assert_close(chameleon_sdk.load_model(tmp_path / "ckpt").weight, second.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_detection_errors_name_the_path_and_the_formats(formats, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        chameleon_sdk.load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint format recognises .*'alpha'"):
        chameleon_sdk.load_model(tmp_path / "empty")
    both = tmp_path / "both"
    both.mkdir()
    (both / "marker.alpha").write_text("")
    (both / "marker.beta").write_text("")
    with pytest.raises(CheckpointError, match=r"several checkpoint formats \['alpha', 'beta'\]"):
        chameleon_sdk.detect_format(both)


def test_unknown_format_name_is_a_plugin_error(formats, tmp_path):
    with pytest.raises(chameleon_sdk.PluginNotFoundError, match="alpha"):
        chameleon_sdk.save_model(nn.Linear(3, 2), tmp_path / "x", format="alpah")


# -- I/O helpers -------------------------------------------------------------------------------


def test_read_json_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"config\.json' is missing"):
        plugin_api.read_json(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json' is not valid JSON"):
        plugin_api.read_json(tmp_path / "config.json")
    plugin_api.write_json(tmp_path / "config.json", {"a": [1, 2]})
    assert plugin_api.read_json(tmp_path / "config.json") == {"a": [1, 2]}


_shapes = st.lists(st.integers(1, 5), min_size=0, max_size=3)
_tensor_sets = st.dictionaries(
    st.from_regex(r"[a-z]{1,3}(\.[a-z0-9]{1,3}){0,2}", fullmatch=True),
    st.tuples(_shapes, st.sampled_from([torch.float32, torch.bfloat16, torch.int64])),
    min_size=1,
    max_size=8,
)


@given(specs=_tensor_sets, shard=st.one_of(st.none(), st.integers(1, 200)), seed=st.integers(0, 2**16))
def test_safetensors_write_read_round_trip_single_and_sharded(tmp_path_factory, specs, shard, seed):
    generator = torch.Generator().manual_seed(seed)
    tensors = {key: (torch.randn(shape, generator=generator) * 100).to(dtype) for key, (shape, dtype) in specs.items()}
    directory = tmp_path_factory.mktemp("st")
    written = plugin_api.write_safetensors(tensors, directory, max_shard_bytes=shard)
    assert sorted(written) == sorted(p.name for p in directory.iterdir())
    back = plugin_api.read_safetensors(directory)
    assert back.keys() == tensors.keys()
    for key, value in tensors.items():
        assert back[key].dtype == value.dtype
        torch.testing.assert_close(back[key], value, rtol=0, atol=0)
    if "model.safetensors.index.json" in written:
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(tensors)


def test_read_safetensors_by_prefix(tmp_path):
    tensors = {"model.vqmodel.a": torch.ones(2), "model.vqmodel.b.c": torch.zeros(3), "lm_head.weight": torch.ones(1)}
    plugin_api.write_safetensors(tensors, tmp_path, max_shard_bytes=8)
    vq = plugin_api.read_safetensors(tmp_path, prefix="model.vqmodel.", strip_prefix=True)
    assert sorted(vq) == ["a", "b.c"]


def test_read_safetensors_names_corrupt_and_missing_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is not a readable safetensors file"):
        plugin_api.read_safetensors(tmp_path)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    plugin_api.write_safetensors({"a": torch.ones(4), "b": torch.ones(4)}, sharded, max_shard_bytes=16)
    (sharded / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model-00002-of-00002\.safetensors' is missing"):
        plugin_api.read_safetensors(sharded)
    (tmp_path / "none").mkdir()
    with pytest.raises(CheckpointError, match="has neither"):
        plugin_api.read_safetensors(tmp_path / "none")


def test_load_weights_names_the_key_and_both_shapes():
    model = nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"'weight' has shape \[2, 4\], the model expects \[2, 3\]"):
        plugin_api.load_weights(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, source="ckpt")
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor.*\['bias'\]"):
        plugin_api.load_weights(model, {"weight": torch.zeros(2, 3)}, source="ckpt")
    with pytest.raises(CheckpointError, match=r"does not know: \['extra'\]"):
        plugin_api.load_weights(
            model, {"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "extra": torch.zeros(1)}, source="ckpt"
        )


class NotATensor:
    pass


def test_read_torch_weights_refuses_pickled_objects_and_garbage(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pth")
    torch.testing.assert_close(plugin_api.read_torch_weights(tmp_path / "ok.pth")["w"], torch.ones(2))
    torch.save({"w": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refusing to load '.*evil\.pth': it needs pickled code"):
        plugin_api.read_torch_weights(tmp_path / "evil.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth'"):
        plugin_api.read_torch_weights(tmp_path / "garbage.pth")
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="mapping of names to tensors"):
        plugin_api.read_torch_weights(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth' is missing"):
        plugin_api.read_torch_weights(tmp_path / "missing.pth")


@attrs.frozen(kw_only=True)
class RequiredOptions:
    secret: str


class NeedsOptionsPlugin:
    @hookimpl
    def register_checkpoint_formats(self, register):
        register("needs-options", lambda options: MarkerFormat("alpha"), options=RequiredOptions)


def test_a_format_that_needs_options_does_not_break_detection(formats, registered_plugin, tmp_path):
    registered_plugin(NeedsOptionsPlugin())
    chameleon_sdk.save_model(nn.Linear(3, 2), tmp_path / "ckpt", format="alpha")
    assert chameleon_sdk.detect_format(tmp_path / "ckpt") == "alpha"
    loaded = chameleon_sdk.load_model(tmp_path / "ckpt", format="needs-options", options={"secret": "x"})
    assert isinstance(loaded, nn.Linear)


def test_prune_step_directories_keeps_the_newest_and_clears_crash_leftovers(tmp_path):
    for step in (10, 20, 30):
        (tmp_path / f"step-{step:08d}").mkdir()
        (tmp_path / f"step-{step:08d}" / "weights").write_text("x")
    (tmp_path / ".step-00000040.tmp-123").mkdir()  # a write killed half-way
    (tmp_path / "notes").mkdir()  # not a checkpoint: left alone
    plugin_api.prune_step_directories(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "step-00000020", "step-00000030"]


@given(steps=st.sets(st.integers(0, 10**8 - 1), max_size=6))
def test_step_directories_lists_step_folders_oldest_first(tmp_path_factory, steps):
    root = tmp_path_factory.mktemp("steps")
    for step in steps:
        plugin_api.step_directory(root, step).mkdir()
    (root / "step-12").mkdir()  # not eight digits
    (root / "step-00000099x").mkdir()
    (root / ".step-00000001.tmp-abc").mkdir()  # a staging folder
    (root / "step-00000007.json").write_text("{}")  # a file, not a folder
    found = plugin_api.step_directories(root)
    assert [step for step, _ in found] == sorted(steps)
    assert all(path == root / f"step-{step:08d}" for step, path in found)
    assert plugin_api.step_directories(root / "absent") == []


def test_global_rng_state_round_trips():
    state = plugin_api.global_rng_state()
    first = torch.rand(4)
    torch.rand(7)  # move on
    plugin_api.set_global_rng_state(state)
    assert torch.equal(torch.rand(4), first)


def test_load_weights_on_a_meta_model_converts_once_and_checks_shapes_first():
    with plugin_api.parameters_on_meta():
        model = nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match=r"'weight' has shape \[2, 4\], the model expects \[2, 3\]"):
        plugin_api.load_weights(model, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, source="ckpt")
    assert model.weight.is_meta  # nothing was assigned
    weight, bias = torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(2, dtype=torch.bfloat16)
    plugin_api.load_weights(model, {"weight": weight, "bias": bias}, source="ckpt")
    assert model.weight.dtype == torch.float32  # the placeholder's dtype by default
    assert torch.equal(model.weight, weight.float())
    with plugin_api.parameters_on_meta():
        model = nn.Linear(3, 2)
    plugin_api.load_weights(model, {"weight": weight, "bias": bias}, source="ckpt", dtype=torch.bfloat16)
    assert model.weight.data_ptr() == weight.data_ptr()  # already bfloat16: taken as it is


def test_load_weights_keeps_tied_tensors_apart():
    with plugin_api.parameters_on_meta():
        model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    shared = torch.randn(2, 2)
    plugin_api.load_weights(model, {"0.weight": shared, "1.weight": shared}, source="ckpt")
    assert model[0].weight.data_ptr() != model[1].weight.data_ptr()
    assert torch.equal(model[0].weight, model[1].weight)
