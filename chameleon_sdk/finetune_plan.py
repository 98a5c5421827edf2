"""How much memory a training run needs per device, before it starts: ``chameleon plan CONFIG``.

The plan counts, per device, the weights, the gradients, AdamW's two moments, the activations a
step keeps for its backward pass at the configured batch and length, and the adapter, for three
ways to train: full fine-tuning (``full``), LoRA (``lora``) and LoRA with activation checkpointing
(``lora+ac``), on 1..N devices (the ``fsdp`` trainer shards weights, gradients and optimizer state
over the devices; every device computes ``batch / N`` rows).

Activations are counted per token and block from what autograd saves in this SDK's block (counted
with ``torch.autograd.graph.saved_tensors_hooks``): with weights in fp32, ``4 * (14 d + 4 f)``
bytes for full fine-tuning and ``4 * (10 d + 4 f)`` for LoRA (a frozen projection keeps no copy of
its input for a weight gradient); in bf16 ``32 d + 8 f`` and ``24 d + 8 f`` (the norms keep fp32
copies); plus the packed-document attention mask (one element per key) and ``r`` per LoRA target.
With checkpointing a block keeps only its input (``d``), and one block at a time is recomputed in
the backward pass. The LM head computes the loss a chunk of rows at a time: its hidden-state
gradient, its weight gradient when it trains, and about three logits-sized buffers per chunk; a head
with an adapter (LoRA target ``head`` or ``head-image-rows``) computes the whole logits instead.
``benchmarks/finetune_memory.py`` measures real steps against these figures.

The peak of a step is taken as the optimizer state, the gradients and the activations together,
plus the transient buffers of one block's backward pass (about ``4 f + 4 d`` per token; with
checkpointing the recomputed block stands for them). Gradients appear while activations are still
held, so for full fine-tuning, where they are large, the sum is what a step reaches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import attrs

from chameleon_sdk.config import ModelConfig
from chameleon_sdk.errors import ConfigError

__all__ = ["MODES", "MemoryPlan", "plan_memory", "plan_run", "plan_table"]

Mode = Literal["full", "lora", "lora+ac"]
MODES: tuple[Mode, ...] = ("full", "lora", "lora+ac")

#: LoRA target groups -> the projections of a block they cover (in, out as multiples of d, f, kv)
_ATTENTION, _MLP = ("wq", "wk", "wv", "wo"), ("w1", "w2", "w3")
#: logits elements in one chunk of the head's loss (chameleon_sdk.model.head_loss)
_CHUNK_ELEMENTS = {"cpu": 2**24, "cuda": 2**26}
_CHUNK_BUFFERS = 3  # the chunk's fp32 logits, their softmax and its gradient
_HEAD_TARGETS = ("head", "head-image-rows")
#: the image codes of Chameleon's vocabulary: the head rows ``head-image-rows`` adapts
IMAGE_ROWS = 8192


@attrs.frozen(kw_only=True)
class MemoryPlan:
    """Expected bytes per device of one way of training (``mode``) on ``devices`` devices."""

    mode: str
    devices: int
    trainable: int  #: trainable parameters (all devices together)
    parameters: int  #: the model's weights, on this device
    adapters: int  #: the adapter's weights, on this device
    gradients: int
    optimizer: int
    activations: int  #: saved for backward at the configured batch and length (this device's rows), and transients

    @property
    def training_bytes(self) -> int:
        """What training adds to the loaded weights and adapter: the step's peak minus them."""
        return self.optimizer + self.gradients + self.activations

    @property
    def total(self) -> int:
        """The expected peak per device."""
        return self.parameters + self.adapters + self.training_bytes


def _lora_shapes(config: ModelConfig, targets: Sequence[str]) -> list[tuple[int, int]]:
    """(in, out) of every projection of one block that the LoRA targets cover (groups only)."""
    d, f, kv = config.dim, config.hidden_dim, config.kv_heads * config.head_dim
    shapes = {"wq": (d, d), "wk": (d, kv), "wv": (d, kv), "wo": (d, d), "w1": (d, f), "w3": (d, f), "w2": (f, d)}
    names: list[str] = []
    for target in targets:
        if target == "attention":
            names += _ATTENTION
        elif target == "mlp":
            names += _MLP
        elif target not in _HEAD_TARGETS:
            raise ConfigError(
                f"plan: LoRA targets must be groups 'attention', 'mlp', 'head' or 'head-image-rows', got {target!r}"
            )
    return [shapes[name] for name in dict.fromkeys(names)]


def _parameter_count(config: ModelConfig, stability: Sequence[Any]) -> int:
    """The parameters of the model, counted on the meta device (no memory, no initialisation)."""
    import torch

    from chameleon_sdk.model.build import build_model

    if config.dropout > 0 and not stability:  # dropout holds no parameters; without its trick it is refused
        config = attrs.evolve(config, dropout=0.0)
    with torch.device("meta"):
        model = build_model(config, stability=list(stability))
    return sum(p.numel() for p in model.parameters())


def plan_memory(
    config: ModelConfig,
    *,
    mode: str,
    batch: int,
    seq: int,
    rank: int = 8,
    targets: Sequence[str] = ("attention", "mlp"),
    stability: Sequence[Any] = (),
    bf16: bool = False,
    devices: int = 1,
    device_type: str = "cuda",
    packed: bool = True,
    image_rows: int = IMAGE_ROWS,
) -> MemoryPlan:
    """The expected memory per device of training ``config`` in ``mode`` (see the module docstring).

    :param batch: rows of the global batch (each of ``devices`` computes ``batch / devices``).
    :param seq: tokens per row.
    :param stability: the model's stability tricks (names or specs): some hold parameters.
    :param bf16: weights (and so gradients and optimizer state) in bf16; else fp32.
    :param device_type: ``"cuda"`` or ``"cpu"``: the head's loss chunk differs.
    :param packed: rows hold packed documents (the trainers' batches do): a dense attention mask.
    :param image_rows: the head rows of image codes, for the LoRA target ``head-image-rows``.
    """
    if mode not in MODES:
        raise ConfigError(f"plan: mode must be one of {list(MODES)}, got {mode!r}")
    if config.vocab_size is None:
        raise ConfigError("plan: the model config needs a vocab_size")
    for name, value in (("batch", batch), ("seq", seq), ("rank", rank), ("devices", devices)):
        if value <= 0:
            raise ConfigError(f"plan: {name} must be > 0, got {value}")
    w = 2 if bf16 else 4
    d, f, v, layers = config.dim, config.hidden_dim, config.vocab_size, config.num_layers
    lora = mode != "full"
    lora_shapes = _lora_shapes(config, targets) if lora else []
    head_rows = {"head": v, "head-image-rows": min(image_rows, v)}
    head_adapted = [head_rows[t] for t in targets if t in head_rows] if lora else []
    adapter_count = layers * sum(rank * (i + o) for i, o in lora_shapes) + sum(rank * (d + n) for n in head_adapted)
    base_count = _parameter_count(config, stability)
    trainable = adapter_count if lora else base_count

    rows = -(-batch // devices)
    tokens = rows * seq
    c_d = (10 if lora else 14) if not bf16 else (12 if lora else 16)
    per_block = w * (c_d * d + 4 * f + len(lora_shapes) * rank) + (w * seq if packed else 0)
    if mode == "lora+ac":
        saved = layers * w * d * tokens + per_block * tokens  # block inputs, and one block recomputed
    else:
        saved = layers * per_block * tokens + w * (4 * f + 4 * d) * tokens  # and one block's backward
    chunk = min(tokens * v, _CHUNK_ELEMENTS.get(device_type, _CHUNK_ELEMENTS["cuda"]))
    if head_adapted:  # an adapted head is not a plain nn.Linear: the loss takes its whole logits
        chunk = tokens * v
    head = 2 * w * d * tokens + _CHUNK_BUFFERS * 4 * chunk + (0 if lora else w * v * d)
    return MemoryPlan(
        mode=mode,
        devices=devices,
        trainable=trainable,
        parameters=w * base_count // devices,
        adapters=w * adapter_count // devices,
        gradients=w * trainable // devices,
        optimizer=2 * w * trainable // devices,
        activations=saved + head,
    )


def plan_table(plans: Sequence[MemoryPlan]) -> str:
    """The plans as a text table, in GiB per device."""
    gib = 1024**3
    rows: list[tuple[str, ...]] = [
        ("mode", "devices", "trainable", "weights", "adapter", "grads", "optimizer", "activations", "total GiB")
    ]
    for p in plans:
        rows.append(
            (
                p.mode,
                str(p.devices),
                f"{p.trainable:,}",
                *(f"{x / gib:.2f}" for x in (p.parameters, p.adapters, p.gradients, p.optimizer, p.activations)),
                f"{p.total / gib:.2f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))
        )
        for row in rows
    )


def plan_run(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    *,
    max_devices: int = 8,
    rank: int = 8,
    targets: Sequence[str] = ("attention", "mlp"),
    preset: str | None = None,
    device_type: str = "cuda",
    bf16: bool | None = None,
) -> list[MemoryPlan]:
    """Plans for a ``chameleon train`` run config: every mode on 1, 2, 4, ... ``max_devices`` devices.

    The model is ``[pipeline] model`` (with its ``vocab_size``; a pretrained run names it with
    ``preset``, e.g. ``"7b"``); batch and length come from ``[data]``; weights are bf16 when ``bf16``
    says so or, unset, when the trainer's ``precision`` is ``bf16``; ``rank`` and ``targets`` are the
    LoRA options.
    """
    from chameleon_sdk.model.presets import model_preset
    from chameleon_sdk.training.run import load_run_config

    path = Path(path)
    run = load_run_config(path, overrides)
    stability: Sequence[Any] = ()
    if preset is not None:
        config, stability = model_preset(preset).model, model_preset(preset).stability
    elif run.pipeline is not None and run.pipeline.model is not None:
        config, stability = run.pipeline.model, run.pipeline.stability
    else:
        raise ConfigError(f"{path.name}: a plan needs [pipeline] model = {{...}}, or a preset such as '7b'")
    if config.vocab_size is None:
        raise ConfigError(f"{path.name}: set [pipeline] model.vocab_size (the tokenizer's size) for a plan")
    trainer = run.pipeline.trainer if run.pipeline is not None else None
    if bf16 is None:
        bf16 = trainer is not None and (trainer.options or {}).get("precision") == "bf16"
    counts = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= max_devices] or [1]
    return [
        plan_memory(
            config,
            mode=mode,
            batch=run.data.batch_size,
            seq=run.data.seq_len,
            rank=rank,
            targets=targets,
            stability=stability,
            bf16=bf16,
            devices=n,
            device_type=device_type,
        )
        for n in counts
        for mode in MODES
    ]
