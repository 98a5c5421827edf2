"""No loader runs pickled code: every reader of .pt/.pth/.ckpt files refuses a file that would.

Each crafted file, if unpickled, writes a marker file (checked to really happen with
``weights_only=False``, so the test can fail). Fed to every loader that reads torch pickles, it must
be refused with :class:`CheckpointError` and the marker must never appear.
"""

from __future__ import annotations

import ast
import contextlib
import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import chameleon_sdk as cs
from chameleon_sdk import CheckpointError, plugin_api

ROOT = Path(__file__).resolve().parents[2]

#: the three ways a torch pickle can be laid out on disk
VARIANTS = ("zip", "legacy", "raw-pickle")


class Exploit:
    """Unpickling this runs ``exec``, which writes ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def write_exploit(path: Path, marker: Path, variant: str, wrap=lambda x: x) -> Path:
    payload = wrap(Exploit(marker))
    if variant == "zip":
        torch.save(payload, path)
    elif variant == "legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_crafted_files_really_run_code_when_unpickled(tmp_path, variant):
    marker = tmp_path / "pwned"
    path = write_exploit(tmp_path / "evil.pt", marker, variant)
    if variant == "raw-pickle":
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def _original_dir(tmp_path, marker, variant, name="consolidated.pth"):
    directory = tmp_path / "meta"
    directory.mkdir()
    (directory / "params.json").write_text(json.dumps({"dim": 32, "n_layers": 2, "n_heads": 4}))
    write_exploit(directory / name, marker, variant, wrap=lambda x: {"tok_embeddings.weight": x})
    return directory


def _vqgan_dir(tmp_path, marker, variant):
    directory = tmp_path / "vqgan"
    directory.mkdir()
    ddconfig = {"resolution": 16, "ch": 32, "ch_mult": [1, 1], "num_res_blocks": 1, "z_channels": 8}
    config = {"model": {"params": {"embed_dim": 8, "n_embed": 16, "ddconfig": ddconfig}}}
    (directory / "vqgan.yaml").write_text(yaml.safe_dump(config))
    write_exploit(directory / "vqgan.ckpt", marker, variant, wrap=lambda x: {"state_dict": {"encoder.w": x}})
    return directory


LOADERS = {
    "read_torch_weights": lambda tmp, m, v: plugin_api.read_torch_weights(write_exploit(tmp / "w.pt", m, v)),
    "load_model original": lambda tmp, m, v: cs.load_model(_original_dir(tmp, m, v)),
    "load_model original shard": lambda tmp, m, v: cs.load_model(
        _original_dir(tmp, m, v, name="consolidated.00.pth"), format="original"
    ),
    "load_image_tokenizer vqgan dir": lambda tmp, m, v: cs.load_image_tokenizer(_vqgan_dir(tmp, m, v)),
    "load_image_tokenizer vqgan.ckpt": lambda tmp, m, v: cs.load_image_tokenizer(_vqgan_dir(tmp, m, v) / "vqgan.ckpt"),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_torch_pickle_loader_refuses_code(registry, tmp_path, loader, variant):
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=r"refusing to load .*needs .*pickled code"):
        LOADERS[loader](tmp_path, marker, variant)
    assert not marker.exists()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("relist", [False, True], ids=["manifest-catches", "manifest-rewritten"])
def test_a_poisoned_trainer_state_is_refused_on_resume(make_pipe, jsonl_data, tmp_path, variant, relist):
    """trainer_state.pt swapped for a malicious file: the manifest notices; an attacker who also
    rewrites the manifest still meets ``weights_only=True``."""
    pipe = make_pipe(checkpoint_every=1)
    pipe.train(jsonl_data, steps=1, out_dir=tmp_path / "run")
    step = tmp_path / "run" / "checkpoints" / "step-00000001"
    marker = tmp_path / "pwned"
    write_exploit(step / "trainer_state.pt", marker, variant, wrap=lambda x: {"step": 1, "optimizer": x})
    if relist:
        plugin_api.write_manifest(step)
    match = r"trainer_state\.pt' is (truncated|corrupt)" if not relist else r"refusing to load .*trainer_state\.pt"
    with pytest.raises(CheckpointError, match=match):
        make_pipe(checkpoint_every=1).train(jsonl_data, steps=2, out_dir=tmp_path / "run")
    assert not marker.exists()


def test_the_trainer_state_is_an_ordinary_weights_only_file(make_pipe, jsonl_data, tmp_path):
    """The state the trainer writes loads under ``weights_only=True``: refusing pickles costs nothing."""
    make_pipe(checkpoint_every=1).train(jsonl_data, steps=1, out_dir=tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000001" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 1


def _dcp_checkpoint(directory: Path) -> dict:
    import torch.distributed.checkpoint as dcp

    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "step": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.distributed is disabled ... single process"
        dcp.save(state, checkpoint_id=directory)
    return state


def test_sharded_checkpoint_metadata_is_checked_before_dcp_unpickles_it(tmp_path):
    """``torch.distributed.checkpoint`` reads ``.metadata`` with plain pickle: the sharded trainer
    runs ``verify_dcp_metadata`` first, which allows only checkpoint-metadata classes."""
    import torch.distributed.checkpoint as dcp

    directory = tmp_path / "dcp"
    state = _dcp_checkpoint(directory)
    plugin_api.verify_dcp_metadata(directory)  # a real one passes
    marker = tmp_path / "pwned"
    write_exploit(directory / ".metadata", marker, "raw-pickle")
    with pytest.raises(CheckpointError, match=r"refusing to load .*\.metadata': it needs (__builtin__|builtins)\.exec"):
        plugin_api.verify_dcp_metadata(directory)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="corrupt"):
        (directory / ".metadata").write_bytes(b"\x80\x04 not a pickle")
        plugin_api.verify_dcp_metadata(directory)
    write_exploit(directory / ".metadata", marker, "raw-pickle")
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    with warnings.catch_warnings(), contextlib.suppress(CheckpointException):  # what dcp.load alone does
        warnings.simplefilter("ignore")
        dcp.load(state, checkpoint_id=directory)
    assert marker.exists(), "dcp.load runs the pickled code: the check above is needed"


def _unsafe_loads(source: str, label: str) -> list[str]:
    """Calls in ``source`` that could unpickle code: torch.load without weights_only=True, pickle/dill/
    joblib loads, numpy loads with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        name = f"{owner}.{node.func.attr}"
        true = {k.arg for k in node.keywords if isinstance(k.value, ast.Constant) and k.value.value is True}
        if name == "torch.load" and "weights_only" not in true:
            found.append(f"{label}:{node.lineno} torch.load without weights_only=True")
        elif owner in ("pickle", "dill", "joblib", "cloudpickle") and node.func.attr in ("load", "loads"):
            found.append(f"{label}:{node.lineno} {name}")
        elif name in ("np.load", "numpy.load") and "allow_pickle" in true:
            found.append(f"{label}:{node.lineno} {name}(allow_pickle=True)")
    return found


def test_no_code_path_unpickles_without_weights_only():
    files = [p for d in ("chameleon_sdk", "plugins") for p in sorted((ROOT / d).rglob("*.py"))]
    torch_loads = sum("torch.load(" in p.read_text(encoding="utf-8") for p in files)
    assert torch_loads >= 3, "the scan should see the known readers (original, vqgan, trainer state)"
    offenders = [hit for p in files for hit in _unsafe_loads(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))]
    offenders += [  # dcp.load unpickles .metadata with plain pickle: its callers must check it first
        f"{p.relative_to(ROOT)} calls dcp.load without verify_dcp_metadata"
        for p in files
        if "dcp.load(" in (text := p.read_text(encoding="utf-8")) and "verify_dcp_metadata(" not in text
    ]
    assert not offenders, offenders


def test_the_scan_catches_unsafe_loads():
    source = "torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\nnp.load(f, allow_pickle=True)\n"
    assert len(_unsafe_loads(source, "probe")) == 4
    assert _unsafe_loads("torch.load(f, weights_only=True)\nnp.load(f)\n", "probe") == []
