"""Shapes World end to end at small scale: LoRA vs full fine-tuning of a checkpoint in the released HF layout.

1. **Base.** A pipeline of released-style components (the tiny byte-level BPE tokenizer and 16 px
   VQGAN image tokenizer of ``chameleon_sdk.tiny_release``; the VQGAN trained on Shapes World
   pictures first, since a random one maps most pictures to the same few codes) with a model of
   ``--dim`` x ``--layers``, pre-trained briefly on Shapes World caption/picture pairs and plain
   captioning lines (a stand-in for the released model's pre-training: it knows the pictures, not
   the chat format), written in the Hugging Face layout and read back from it.
2. **Data.** Shapes World conversations in the chat format (docs/formats.md):
   ``What is in this picture? <picture>`` -> ``A red circle.`` and ``Draw a red circle.`` -> ``<picture>``.
3. **Fine-tuning.** Full fine-tuning and LoRA (``--rank`` on ``--lora-targets``, by default the
   attention and MLP projections), each also with activation checkpointing (``+ac``: the same
   updates, recomputing each block's activations in the backward pass), each in a fresh child
   process with the ``local`` trainer: same data, steps, batches and seed.
4. **Quality** on held-out pictures: the model ranks the 12 answers ``A {colour} {shape}.`` by their
   likelihood after the chat prompt; colour, shape and joint accuracy by the demo's evaluator
   (``chameleon_apps.shapes.evaluate.accuracy``). Drawing is not judged: the HF layout's VQGAN has
   no decoder.
5. **Printed:** trainable parameters, accuracy, memory and time per mode, and LoRA against full
   fine-tuning: without checkpointing, LoRA + checkpointing against plain full fine-tuning, and both
   with checkpointing.
   *Training memory* is what a GPU would hold: the weights plus what training adds on top of them
   (peak RSS growth over the loaded model while training: gradients, AdamW's state, activations);
   the process's peak RSS (which also counts Python, torch and peft themselves) is printed too.
   At this size the growth is mostly activations and the first step's fixed allocations, which
   LoRA pays as well; the memory LoRA saves (gradients and AdamW state of the frozen weights) is
   what dominates at the released sizes (docs/finetuning.md has the 7B measurement).

    python3 finetune_shapes.py                 # the comparison (minutes on 2 CPU cores)
    python3 finetune_shapes.py --shape tiny    # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import torch
from chameleon_apps.demo import caption_pairs
from chameleon_apps.shapes.evaluate import accuracy
from chameleon_apps.shapes.world import COLORS, SHAPES, Shape, sample_shapes

import chameleon_sdk as cs
from chameleon_sdk.model.cross_entropy import per_token_cross_entropy
from chameleon_sdk.release_writer import write_release
from chameleon_sdk.tiny_release import TINY_RESOLUTION, tiny_release_pipeline
from chameleon_sdk.training.chat import chat_tokens
from chameleon_sdk.training.data import IGNORE

#: shape -> model size, steps and examples
SHAPES_OF_RUN: dict[str, dict[str, int]] = {
    "tiny": dict(
        dim=32, layers=2, vq_steps=4, pretrain_pairs=48, pretrain_steps=10, steps=6, train=48, held_out=12, batch=4
    ),
    "small": dict(
        dim=256,
        layers=4,
        vq_steps=300,
        pretrain_pairs=4000,
        pretrain_steps=1500,
        steps=300,
        train=384,
        held_out=48,
        batch=8,
    ),
}
SHAPES_OF_RUN["medium"] = {**SHAPES_OF_RUN["small"], "dim": 512, "layers": 6}  # weights outweigh activations
MODES = ("full", "full+ac", "lora", "lora+ac")
#: (LoRA mode, full mode) pairs whose ratios are printed
COMPARED = (("lora", "full"), ("lora+ac", "full"), ("lora+ac", "full+ac"))
QUESTION = "What is in this picture? "
MIB = 1024**2


def answer(color: str, shape: str) -> str:
    return f"A {color} {shape}."


def conversations(samples: list[Shape]) -> list[cs.Conversation]:
    """Every sample twice: described (picture -> caption) and drawn (caption -> picture)."""
    out = []
    for s in samples:
        out.append(cs.Conversation.of(("user", [QUESTION, s.image]), ("assistant", answer(s.color, s.shape))))
        out.append(cs.Conversation.of(("user", f"Draw {s.caption}."), ("assistant", s.image)))
    return out


def write_jsonl(records: list[Any], path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record.to_json()) + "\n")  # images inline (base64)
    return path


def mixture(pipe: cs.Pipeline, sources: list[tuple[Path, bool, float]], *, steps: int, batch: int) -> cs.MixtureData:
    """Batches from ``(file, sft, weight)`` sources."""
    config = cs.DataConfig(
        sources=tuple(cs.SourceConfig(path=str(path), sft=sft, weight=weight) for path, sft, weight in sources),
        seq_len=64,
        batch_size=batch,
        stage2_fraction=0.0,
    )
    return cs.MixtureData(pipe, config, total_steps=steps)


def captioning_lines(samples: list[Shape], path: Path) -> Path:
    """SFT lines in the plain (pre-training) format: the picture is the prompt, its caption the answer."""
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            line = {"prompt": cs.Document.of(s.image).to_json(), "answer": {"segments": [{"text": s.caption}]}}
            f.write(json.dumps(line) + "\n")
    return path


def train(pipe: cs.Pipeline, data: cs.MixtureData, *, steps: int, lr: float, checkpointing: bool = False) -> None:
    options = {"lr": lr, "precision": "fp32", "progress": False, "warmup_steps": max(1, steps // 10)}
    options["activation_checkpointing"] = checkpointing
    trainer = cs.get_registry().build("trainer", "local", options)
    assert pipe.model is not None
    trainer.fit(pipe.model, data, steps=steps, out_dir=None)


def make_base(work: Path, run: dict[str, int]) -> Path:
    """The pre-trained base, written in the released Hugging Face layout."""
    pipe = tiny_release_pipeline(seed=0, decoder=True)  # the decoder trains the VQGAN; the hf layout drops it
    pictures = sample_shapes(2000, seed=5, size=TINY_RESOLUTION)
    pipe.modalities["image"].fit(  # type: ignore[attr-defined]
        [s.image for s in pictures], {"steps": run["vq_steps"], "batch_size": 32, "learning_rate": 2e-3}, progress=False
    )
    model = cs.ModelConfig(dim=run["dim"], num_layers=run["layers"], num_heads=4, num_kv_heads=2, max_seq_len=128)
    pipe.config = attrs.evolve(pipe.config, model=model)
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    shapes = sample_shapes(run["pretrain_pairs"], seed=1, size=TINY_RESOLUTION)
    pairs_file = write_jsonl(caption_pairs(shapes, picture_first=0.5), work / "pairs.jsonl")
    captions_file = captioning_lines(shapes, work / "captioning.jsonl")
    sources = [(pairs_file, False, 0.5), (captions_file, True, 0.5)]
    data = mixture(pipe, sources, steps=run["pretrain_steps"], batch=run["batch"])
    train(pipe, data, steps=run["pretrain_steps"], lr=3e-3)
    return write_release(pipe, work / "base", "hf")


def rank_answers(pipe: cs.Pipeline, pictures: list[Shape]) -> list[dict[str, str]]:
    """For each picture, the (colour, shape) whose answer the model finds most likely after the question."""
    candidates = [(c, s) for c in COLORS for s in SHAPES]
    chats = [
        cs.Conversation.of(("user", [QUESTION, p.image]), ("assistant", answer(c, s)))
        for p in pictures
        for c, s in candidates
    ]
    assert pipe.model is not None
    pipe.model.eval()
    scores = []
    for start in range(0, len(chats), 96):
        tokens = chat_tokens(pipe, chats[start : start + 96])
        width = max(len(ids) for ids, _ in tokens)
        ids = torch.zeros(len(tokens), width, dtype=torch.long)
        targets = torch.full((len(tokens), width), IGNORE, dtype=torch.long)
        for r, (row, mask) in enumerate(tokens):
            ids[r, : len(row)] = torch.tensor(row)
            counted = torch.tensor(mask[1:], dtype=torch.bool)
            targets[r, : len(row) - 1] = torch.where(counted, torch.tensor(row[1:]), IGNORE)
        with torch.no_grad():
            logits = pipe.model(ids).logits.float().flatten(0, 1)
            nll = per_token_cross_entropy(logits, targets.flatten(), IGNORE).view(len(tokens), width)
        scores += (-nll.sum(1)).tolist()
    best = torch.tensor(scores).view(len(pictures), len(candidates)).argmax(1).tolist()
    return [{"color": candidates[b][0], "shape": candidates[b][1]} for b in best]


def rss_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_child(mode: str, work: Path, run: dict[str, int], rank: int, lr: float, targets: list[str]) -> dict[str, Any]:
    """In a fresh process: load the base, fine-tune it in ``mode``, and measure."""
    torch.manual_seed(0)
    pipe = cs.Pipeline.from_pretrained(work / "base")
    assert pipe.model is not None
    if mode.startswith("lora"):
        cs.attach_adapter(pipe.model, {"name": "lora", "options": {"rank": rank, "targets": targets}})
    trainable = sum(p.numel() for p in pipe.model.parameters() if p.requires_grad)
    held_out = sample_shapes(run["held_out"], seed=3, size=TINY_RESOLUTION)
    before_quality = accuracy(
        {"color": s.color, "shape": s.shape, "predicted": p} for s, p in zip(held_out, rank_answers(pipe, held_out))
    )
    data = mixture(pipe, [(work / "chat.jsonl", True, 1.0)], steps=run["steps"], batch=run["batch"])  # tokenized here
    pipe.model.train()
    with torch.no_grad():
        sum(float(p.sum()) for p in pipe.model.parameters())  # every weight resident
    with contextlib.suppress(OSError):  # reset the peak-RSS mark, so it measures training, not loading
        Path("/proc/self/clear_refs").write_text("5")
    before = rss_bytes("VmRSS")
    started = time.perf_counter()
    train(pipe, data, steps=run["steps"], lr=lr, checkpointing=mode.endswith("+ac"))
    seconds = time.perf_counter() - started
    peak = rss_bytes("VmHWM")
    predicted = rank_answers(pipe, held_out)
    quality = accuracy({"color": s.color, "shape": s.shape, "predicted": p} for s, p in zip(held_out, predicted))
    return {
        "mode": mode,
        "trainable": trainable,
        "quality_before": before_quality["both"],
        "quality": quality,
        "weights": sum(p.numel() * p.element_size() for p in pipe.model.parameters()),
        "growth": peak - before,
        "peak": peak,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES_OF_RUN), default="small")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--lr-full", type=float, default=1e-3)
    parser.add_argument("--lr-lora", type=float, default=5e-3, help="LoRA is usually trained at a higher rate")
    parser.add_argument(
        "--lora-targets", default="attention,mlp", help="the LoRA targets: groups or module-name patterns"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = SHAPES_OF_RUN[args.shape]
    if args.child:
        lr = args.lr_lora if args.child.startswith("lora") else args.lr_full
        targets = args.lora_targets.split(",")
        print(json.dumps(run_child(args.child, args.work, run, args.rank, lr, targets)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        make_base(work, run)
        write_jsonl(conversations(sample_shapes(run["train"], seed=2, size=TINY_RESOLUTION)), work / "chat.jsonl")
        print(
            f"shape {args.shape}: model {run['dim']} x {run['layers']} layers, base pre-trained "
            f"{run['pretrain_steps']} steps and written in the hf layout ({time.perf_counter() - started:.0f} s); "
            f"fine-tuning {run['steps']} steps x {run['batch']} rows on {2 * run['train']} conversations; "
            f"{run['held_out']} held-out pictures",
            flush=True,
        )
        results = {}
        for mode in MODES:
            command = [sys.executable, os.path.abspath(__file__), "--child", mode, "--work", str(work)]
            command += ["--shape", args.shape, "--rank", str(args.rank), "--threads", str(args.threads)]
            command += [
                "--lr-full",
                str(args.lr_full),
                "--lr-lora",
                str(args.lr_lora),
                "--lora-targets",
                args.lora_targets,
            ]
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
            child = subprocess.run(command, capture_output=True, text=True, env=env)
            if child.returncode != 0:
                sys.stderr.write(child.stderr[-4000:])
                raise SystemExit(f"the {mode} child failed (exit {child.returncode})")
            results[mode] = json.loads(child.stdout.strip().splitlines()[-1])
    header = f"{'mode':<7} {'trainable':>11} {'acc before':>10} {'colour':>7} {'shape':>6} {'both':>6}"
    print(f"{header} {'train MiB':>9} {'growth MiB':>10} {'peak RSS MiB':>12} {'s':>6}")
    for mode, r in results.items():
        q = r["quality"]
        print(
            f"{mode:<7} {r['trainable']:>11,} {r['quality_before']:>10.3f} {q['color']:>7.3f} {q['shape']:>6.3f} "
            f"{q['both']:>6.3f} {(r['weights'] + r['growth']) / MIB:>9.1f} {r['growth'] / MIB:>10.1f} "
            f"{r['peak'] / MIB:>12.1f} {r['seconds']:>6.1f}"
        )
    for mode, baseline in COMPARED:
        lora, full = results[mode], results[baseline]
        quality = lora["quality"]["both"] / full["quality"]["both"] if full["quality"]["both"] else float("nan")
        memory = (lora["weights"] + lora["growth"]) / (full["weights"] + full["growth"])
        print(
            f"{mode} / {baseline}: quality {quality:.3f} (target >= 0.9), "
            f"training memory {memory:.3f} (target <= 0.5), "
            f"its growth {lora['growth'] / full['growth']:.3f}, peak RSS {lora['peak'] / full['peak']:.3f}, "
            f"trainable parameters {lora['trainable'] / full['trainable']:.4f}, "
            f"time {lora['seconds'] / full['seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
