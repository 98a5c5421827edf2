"""The training process that test_fault_injection.py kills: a tiny model trained by the ``local``
trainer, checkpointing every 2 steps, resuming from ``out_dir`` when it holds checkpoints.

It runs in children of a ``forkserver`` that imported this module once (torch, the SDK, its
plugins), so each start costs milliseconds and every kill lands in training, not in imports.
Progress goes to the parent through ``conn``: ``START <step resumed from>``, ``STEP <n>`` after
each step, ``CKPT <n>`` after each checkpoint, ``WRITING <path>`` (see :func:`stall_the_kth_write`)
and ``DONE``.
"""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # the first optimizer imports it (seconds): here once, in the fork server
from tqdm import tqdm

import chameleon_sdk as cs
from chameleon_sdk.storage import atomic_files, json_files, tensor_files
from chameleon_sdk.training.data import Batch

cs.available_plugins()  # load the plugin entry points once, in the fork server
tqdm.get_lock()  # its multiprocessing lock: made here, not in each killed child (it would leak a semaphore)

VOCAB, ROWS, LENGTH = 64, 4, 16
#: 10 kills advance the run by at most 40 steps (a stall at most 2, a timed kill at most 6)
STEPS, EVERY = 44, 2


class Source:
    """Batches as a pure function of the step, as exact resume requires."""

    @property
    def counters(self) -> dict[str, int]:
        return {}

    def batch_at(self, step: int, micro: int = 0) -> Batch:
        generator = torch.Generator().manual_seed(1000 + step)
        ids = torch.randint(0, VOCAB, (ROWS, LENGTH + 1), generator=generator)
        documents = torch.zeros(ROWS, LENGTH, dtype=torch.long)
        return Batch(input_ids=ids[:, :-1], targets=ids[:, 1:], document_ids=documents)

    def stage(self, step: int) -> int:
        return 1


class Report(cs.Callback):
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def on_train_start(self, info):
        self.conn.send(f"START {info['start_step']}")

    def on_step_end(self, metrics):
        self.conn.send(f"STEP {metrics['step'] + 1}")

    def on_checkpoint(self, step, path):
        self.conn.send(f"CKPT {step}")


def stall_the_kth_write(k: int, conn: Any) -> None:
    """The k-th checkpoint file write of this process (through the core's atomic writer or
    ``torch.save``) puts half its bytes in a temporary file, says ``WRITING <path>`` and waits to be killed."""
    count = [0]

    def stall(path: Path, payload: bytes) -> None:
        count[0] += 1
        if count[0] == k:
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.write(fd, payload[: len(payload) // 2])
            conn.send(f"WRITING {path}")
            time.sleep(60)

    atomic_write, torch_save = atomic_files.atomic_write_bytes, torch.save

    def atomic(path: Path, payload: bytes) -> None:
        stall(path, payload)
        atomic_write(path, payload)

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        buffer = io.BytesIO()
        torch_save(obj, buffer, *args, **kwargs)
        stall(Path(f), buffer.getvalue())
        torch_save(obj, f, *args, **kwargs)

    json_files.atomic_write_bytes = tensor_files.atomic_write_bytes = atomic  # the checkpoint files' writers
    torch.save = save


def run(out_dir: str, conn: Any, stall_write: int | None = None) -> None:
    """Train to :data:`STEPS` in ``out_dir`` (resuming), reporting to ``conn``."""
    torch.set_num_threads(1)
    if stall_write:
        stall_the_kth_write(stall_write, conn)
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, vocab_size=VOCAB, max_seq_len=LENGTH, dropout=0.1)
    model = cs.build_model(config, stability=("qk-norm", "z-loss", "dropout"))
    options = {"precision": "fp32", "progress": False, "lr": 3e-3, "warmup_steps": 2, "checkpoint_every": EVERY}
    trainer = cs.get_registry().build("trainer", "local", options)
    trainer.fit(model, Source(), steps=STEPS, out_dir=Path(out_dir), callbacks=[Report(conn)])
    conn.send("DONE")
