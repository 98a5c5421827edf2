"""Every checkpoint directory we write carries ``manifest.json`` (SHA-256 and size per file), written
last; loaders check it, so a flipped byte or a truncated file is a CheckpointError naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import chameleon_sdk as cs
import chameleon_sdk.storage.directories as staging
from chameleon_sdk import CheckpointError, plugin_api


def _listed(directory: Path) -> set[Path]:
    data = json.loads((directory / plugin_api.MANIFEST_FILE).read_text())
    assert data["format"] == "chameleon-sdk/manifest"
    return {directory / name for name in data["files"]}


def covered_files(directory: Path) -> set[Path]:
    """Files the manifests cover, following nested manifests; asserts nothing is left out."""
    listed = _listed(directory)
    covered = set(listed)
    for path in listed:
        if path.name == plugin_api.MANIFEST_FILE:
            covered |= covered_files(path.parent)
    every = {p for p in directory.rglob("*") if p.is_file()} - {directory / plugin_api.MANIFEST_FILE}
    nested = {p.parent for p in listed if p.name == plugin_api.MANIFEST_FILE}
    uncovered = {p for p in every - covered if not any(d in p.parents for d in nested)}
    assert not uncovered, f"files no manifest lists: {sorted(map(str, uncovered))}"
    return covered


# -- the writers: each returns (directory, load) --------------------------------------------------


def _native(tmp_path, make_model, **_):
    target = cs.save_model(make_model(), tmp_path / "native")
    return target, lambda: cs.load_model(target)


def _hf(tmp_path, make_model, **_):
    target = cs.save_model(make_model(), tmp_path / "hf", format="hf", options={"max_shard_bytes": 20_000})
    return target, lambda: cs.load_model(target)


def _pipeline(tmp_path, make_pipe, tiny_image_options, trained_sentencepiece, **_):
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=96),
    )
    pipe = cs.Pipeline.from_config(config)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    target = pipe.save_pretrained(tmp_path / "pipeline")
    return target, lambda: cs.Pipeline.from_pretrained(target)


def _trainer_step(tmp_path, make_pipe, jsonl_data, **_):
    make_pipe(checkpoint_every=1).train(jsonl_data, steps=1, out_dir=tmp_path / "run")
    target = tmp_path / "run" / "checkpoints" / "step-00000001"
    return target, lambda: make_pipe(checkpoint_every=1).train(jsonl_data, steps=2, out_dir=tmp_path / "run")


def _image_tokenizer(tmp_path, tiny_image_options, **_):
    torch.manual_seed(0)
    tokenizer = cs.get_registry().build("modality", "image", tiny_image_options)
    target = tmp_path / "tokenizer"
    tokenizer.save(target)
    return target, lambda: cs.load_image_tokenizer(target)


WRITERS = {
    "native": _native,
    "hf": _hf,
    "pipeline": _pipeline,
    "trainer-step": _trainer_step,
    "image-tokenizer": _image_tokenizer,
}


@pytest.fixture(params=sorted(WRITERS))
def saved(request, tmp_path, make_model, make_pipe, jsonl_data, tiny_image_options, trained_sentencepiece):
    return WRITERS[request.param](
        tmp_path,
        make_model=make_model,
        make_pipe=make_pipe,
        jsonl_data=jsonl_data,
        tiny_image_options=tiny_image_options,
        trained_sentencepiece=trained_sentencepiece,
    )


def test_every_checkpoint_lists_every_file_and_loads(saved):
    directory, load = saved
    assert len(covered_files(directory)) >= 2
    assert plugin_api.verify_manifest(directory) is True
    load()


def test_a_flipped_byte_or_a_truncated_file_is_named(saved):
    """Damage each covered file in turn (one flipped bit, then half the bytes): the loader refuses
    and names the file. The top-level manifest itself: refused (its own name, or the file whose hash
    no longer matches)."""
    directory, load = saved
    damaged = 0
    for path in sorted(covered_files(directory) | {directory / plugin_api.MANIFEST_FILE}):
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x01
        for broken in (bytes(flipped), original[: len(original) // 2]):
            path.write_bytes(broken)
            with pytest.raises(CheckpointError) as info:
                load()
            if path != directory / plugin_api.MANIFEST_FILE:
                assert str(path) in str(info.value), (path, str(info.value))
            damaged += 1
        path.write_bytes(original)
    assert damaged >= 6
    load()  # restored: loads again
    print(f"\n{directory.name}: {damaged} damaged copies refused")


def test_a_missing_file_is_named(saved):
    directory, load = saved
    victim = max(
        (p for p in covered_files(directory) if p.name != plugin_api.MANIFEST_FILE), key=lambda p: p.stat().st_size
    )
    victim.unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load()


def test_directories_without_a_manifest_still_load(registry, make_model, tmp_path):
    """Hugging Face downloads and releases carry no manifest: they load as they are."""
    target = cs.save_model(make_model(), tmp_path / "hf", format="hf")
    (target / plugin_api.MANIFEST_FILE).unlink()
    assert plugin_api.verify_manifest(target) is False
    cs.load_model(target)
    (target / plugin_api.MANIFEST_FILE).write_text(json.dumps({"name": "someone else's manifest"}))
    assert plugin_api.verify_manifest(target) is False
    cs.load_model(target)


OURS = {"format": "chameleon-sdk/manifest", "format_version": 1}


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "not valid JSON"),
        ({"format": "other/tool", "files": {}}, "is corrupt: not a valid chameleon-sdk/manifest manifest"),
        ({**OURS, "files": {"../escape": {"sha256": "0" * 64, "size": 1}}}, "malformed entry"),
        ({**OURS, "files": {"config.json": {"sha256": 5}}}, "malformed entry"),
        ({**OURS, "files": {"gone": {"sha256": "0" * 64, "size": 1}}}, "gone' is missing"),
        ({"format": "chameleon-sdk/manifest", "files": {}}, "keys"),  # no version
        ({**OURS, "filet": {}}, "keys"),
    ],
)
def test_bad_manifests_are_checkpoint_errors(registry, make_model, tmp_path, manifest, message):
    target = cs.save_model(make_model(), tmp_path / "ckpt")
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (target / plugin_api.MANIFEST_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=message):
        cs.load_model(target)


def test_the_manifest_is_written_last_inside_the_staging_directory(registry, make_model, tmp_path, monkeypatch):
    """Nothing is visible at the target until the manifest exists; a failure leaves nothing behind."""
    seen = []
    real = staging.write_manifest

    def spy(directory, **kwargs):
        seen.append((Path(directory).name, (tmp_path / "ckpt").exists(), sorted(os.listdir(directory))))
        return real(directory, **kwargs)

    monkeypatch.setattr(staging, "write_manifest", spy)
    cs.save_model(make_model(), tmp_path / "ckpt")
    [(name, target_existed, files)] = seen
    assert name.startswith(".ckpt.tmp-") and not target_existed
    assert files == ["config.json", "model.safetensors"]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


def test_shape_and_config_mismatches_name_the_key_and_both_shapes(make_pipe, jsonl_data, tmp_path):
    make_pipe(checkpoint_every=1).train(jsonl_data, steps=1, out_dir=tmp_path / "run")
    wider = make_pipe(checkpoint_every=1)
    wider.model = cs.build_model(
        cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=64, ffn_dim=48, vocab_size=wider.vocabulary.size)
    )
    key = r"'layers\.0\.feed_forward\.w1\.weight'"
    with pytest.raises(CheckpointError, match=key + r" has shape \[\d+, 32\], the model expects \[48, 32\]"):
        wider.train(jsonl_data, steps=2, out_dir=tmp_path / "run")
    deeper = make_pipe(checkpoint_every=1)
    deeper.model = cs.build_model(
        cs.ModelConfig(dim=32, num_layers=3, num_heads=4, max_seq_len=64, vocab_size=deeper.vocabulary.size)
    )
    with pytest.raises(CheckpointError, match=r"lacks \d+ tensor\(s\) the model needs: \['layers\.2\."):
        deeper.train(jsonl_data, steps=2, out_dir=tmp_path / "run")
