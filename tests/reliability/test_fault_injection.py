"""Crashes and full disks never cost a training run more than the steps since its last checkpoint.

- A run is killed with SIGKILL at random moments, half of them inside a checkpoint file write
  (half its bytes on disk), and resumed each time; after 10 kills it finishes with weights and
  optimizer state bitwise equal to a run that was never interrupted.
- A write that fails with ENOSPC halfway leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk import plugin_api
from chameleon_sdk.storage import atomic_files, json_files, tensor_files

HERE = Path(__file__).resolve().parent
KILLS = 10
#: model/config.json, model/model.safetensors, model/manifest.json, trainer_state.pt, manifest.json
WRITES_PER_CHECKPOINT = 5


@pytest.fixture(scope="module")
def forkserver():
    """A fork server that imported torch, the SDK and ``_train_worker`` once; each run forks from it.

    The server finds ``_train_worker`` through PYTHONPATH (Python 3.11's fork server does not take
    the parent's sys.path); were a server already running without it, runs only start slower.
    """
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), saved) if p)
    sys.path.insert(0, str(HERE))
    try:
        worker = importlib.import_module("_train_worker")
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["_train_worker"])
        yield ctx, worker
    finally:
        sys.path.remove(str(HERE))
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def attempt(forkserver, out: Path, *, stall=None, kill_when=None, delay=0.0, timeout=120.0):
    """One training process; SIGKILL it ``delay`` seconds after a message satisfies ``kill_when``.

    Returns the messages it sent and whether the kill landed before it finished.
    """
    ctx, worker = forkserver
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=worker.run, args=(str(out), send, stall))
    process.start()
    send.close()
    messages: list[str] = []
    try:
        while True:
            assert receive.poll(timeout), f"the training process went silent: {messages[-3:]}"
            try:
                messages.append(receive.recv())
            except EOFError:
                break
            if kill_when is not None and kill_when(messages[-1]):
                time.sleep(delay)
                process.kill()
                break
    finally:
        process.join(timeout)
        with contextlib.suppress(EOFError, OSError):
            while receive.poll(0):  # what it sent before it ended (a kill can come after the last step)
                messages.append(receive.recv())
        receive.close()
    killed = process.exitcode == -signal.SIGKILL
    assert killed or (process.exitcode == 0 and messages[-1] == "DONE"), (process.exitcode, messages[-3:])
    return messages, killed


def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the visible checkpoints, each verified against its manifests (and nested ones)."""
    root = out / "checkpoints"
    steps = []
    for path in sorted(root.glob("step-*")) if root.is_dir() else []:
        assert plugin_api.verify_manifest(path) is True, path
        steps.append(int(path.name.removeprefix("step-")))
    return steps


def final_state(out: Path, steps: int) -> dict[str, torch.Tensor]:
    path = out / "checkpoints" / f"step-{steps:08d}"
    state = {f"model.{k}": v for k, v in cs.load_model(path / "model").state_dict().items()}
    trainer = plugin_api.read_torch_file(path / "trainer_state.pt")
    for index, slots in trainer["optimizer"]["state"].items():
        state |= {f"adam.{index}.{name}": value for name, value in slots.items()}
    state["rng"] = trainer["rng"]["torch"]
    return state


def test_sigkill_at_random_moments_then_resume_is_bitwise_exact(forkserver, tmp_path):
    worker = forkserver[1]
    steps, every = worker.STEPS, worker.EVERY
    attempt(forkserver, tmp_path / "straight")
    rng = random.Random(9)
    out = tmp_path / "killed"
    kills, stalled, mid_checkpoint, resumed_from, runs = 0, 0, 0, [], 0
    while kills < KILLS:
        runs += 1
        assert runs <= 3 * KILLS, "kills keep missing the run"
        start = max(complete_checkpoints(out), default=0)
        assert start <= steps - 2 * every, "the run got too far to be killed 10 times; raise STEPS"
        staging = set((out / "checkpoints").glob(".step-*.tmp-*"))
        if kills % 2 == 0:  # inside one of the file writes of the next two checkpoints
            stall = rng.randint(1, 2 * WRITES_PER_CHECKPOINT)
            messages, killed = attempt(forkserver, out, stall=stall, kill_when=lambda m: m.startswith("WRITING"))
            stalled += killed
        else:  # 0-30 ms after the next checkpoint: in a step, or in the following checkpoint's writes
            target = f"CKPT {start + every}"
            delay = rng.uniform(0.0, 0.03)
            messages, killed = attempt(forkserver, out, kill_when=lambda m, t=target: m == t, delay=delay)
        assert messages[0] == f"START {start}"  # resumed from the newest complete checkpoint
        resumed_from.append(start)
        kills += killed
        mid_checkpoint += killed and bool(set((out / "checkpoints").glob(".step-*.tmp-*")) - staging)
        complete_checkpoints(out)  # whatever the kill interrupted, every visible checkpoint is whole
    messages, _ = attempt(forkserver, out)
    assert messages[-1] == "DONE"
    assert not list((out / "checkpoints").glob(".*")), "stale temporary directories were not cleaned up"
    expected, got = final_state(tmp_path / "straight", steps), final_state(out, steps)
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, different
    assert stalled >= KILLS // 2 - 1 and mid_checkpoint >= stalled
    print(
        f"\n{kills} SIGKILLs in {runs} runs ({stalled} stalled inside a file write, {mid_checkpoint} in all "
        f"inside a checkpoint write), resumed from steps {resumed_from}: {len(expected)} tensors bitwise equal"
    )


# -- full disk ---------------------------------------------------------------------------------


def fail_writing(monkeypatch, victim: str, *, skip: int = 0, root: Path | None = None) -> list[dict[str, bytes]]:
    """After ``skip`` writes of files named ``victim``, the next one puts half its bytes in a
    temporary file and fails with ENOSPC. Returns a list that then holds a snapshot of ``root``
    taken at that moment."""
    seen: list[Path] = []
    failed: list[dict[str, bytes]] = []
    atomic_write, torch_save = atomic_files.atomic_write_bytes, torch.save

    def check(path: Path, payload: bytes) -> None:
        if path.name != victim or failed:
            return
        seen.append(path)
        if len(seen) > skip:
            failed.append(snapshot(root) if root is not None else {})
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.write(fd, payload[: len(payload) // 2])
            os.close(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def atomic(path, payload):
        check(Path(path), payload)
        atomic_write(path, payload)

    def save(obj, f, *args, **kwargs):
        check(Path(f), b"x" * 64)
        torch_save(obj, f, *args, **kwargs)

    for writer in (json_files, tensor_files):  # the modules that write checkpoint files
        monkeypatch.setattr(writer, "atomic_write_bytes", atomic)
    monkeypatch.setattr(torch, "save", save)
    return failed


def snapshot(directory: Path) -> dict[str, bytes]:
    """The bytes of every file under ``directory``, skipping hidden (temporary) entries."""
    files = (p for p in sorted(directory.rglob("*")) if p.is_file())
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in files
        if not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }


@pytest.mark.parametrize(
    "victim, skip",
    [
        ("model.safetensors", 2),  # the third checkpoint's weights
        ("trainer_state.pt", 2),  # its optimizer state
        ("manifest.json", 4),  # its model/ manifest
        ("manifest.json", 5),  # its own manifest, the last file written
    ],
)
def test_a_full_disk_mid_checkpoint_keeps_the_previous_one(make_pipe, jsonl_data, tmp_path, monkeypatch, victim, skip):
    run = tmp_path / "run"
    failed = fail_writing(monkeypatch, victim, skip=skip, root=run / "checkpoints")
    with pytest.raises(OSError) as info:
        make_pipe(checkpoint_every=1).train(jsonl_data, steps=4, out_dir=run)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    [before] = failed
    assert sorted(os.listdir(run / "checkpoints")) == ["step-00000001", "step-00000002"]  # no half-written leftovers
    assert snapshot(run / "checkpoints") == before
    cs.load_model(run / "checkpoints" / "step-00000002" / "model")
    # the run goes on from there, to exactly what an uninterrupted run gives
    resumed = make_pipe(checkpoint_every=1)
    assert resumed.train(jsonl_data, steps=4, out_dir=run).resumed_from == 2
    straight = make_pipe(checkpoint_every=1)
    straight.train(jsonl_data, steps=4, out_dir=tmp_path / "straight")
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


@pytest.mark.parametrize("writer", ["save_model", "save_pretrained"])
@pytest.mark.parametrize("victim", ["model.safetensors", "manifest.json"])
def test_a_full_disk_while_replacing_a_checkpoint_keeps_the_old_one(make_pipe, tmp_path, monkeypatch, writer, victim):
    pipe = make_pipe()
    save = (lambda p: cs.save_model(pipe.model, p)) if writer == "save_model" else pipe.save_pretrained
    load = cs.load_model if writer == "save_model" else cs.Pipeline.from_pretrained
    target = save(tmp_path / "ckpt")
    before = snapshot(target)
    with torch.no_grad():
        pipe.model.output.weight.add_(1.0)  # the new version differs
    fail_writing(monkeypatch, victim)
    with pytest.raises(OSError, match="No space left"):
        save(target)
    monkeypatch.undo()
    assert snapshot(target) == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    load(target)
