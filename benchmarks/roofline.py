"""The memory-bandwidth roofline of decoding, shared by ``generate.py`` and ``gpu_decode_check.py``.

At batch 1 a decode step reads every weight that takes part in it once (all but the input
embedding table, whose one row per token is negligible; the output head counts) plus the KV cache
up to the current length. Its speed limit is therefore ``bandwidth / bytes_per_step`` steps per
second, whatever the FLOPs. The bandwidth is measured in the same process (the best of several
reads of a large tensor), so load from other processes lowers the limit and the rate together.
"""

from __future__ import annotations

import time

import torch

__all__ = ["decode_bytes", "fraction_of_limit", "kv_bytes", "read_bandwidth", "weight_bytes"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_bandwidth(device: torch.device | str = "cpu", *, megabytes: int = 256, repeats: int = 10) -> float:
    """Bytes per second of the best of ``repeats`` full reads (``tensor.sum()``) of a large tensor."""
    device = torch.device(device)
    big = torch.ones(megabytes * 2**20 // 4, device=device)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        big.sum()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return big.numel() * big.element_size() / best


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a parameter as stored: a quantized tensor subclass counts its int8 data and scales."""
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None and type(tensor) is not torch.nn.Parameter and type(tensor) is not torch.Tensor:
        names, _ = inner()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights a decode step reads: every parameter but the input embedding table, and
    the weights a quantization keeps as buffers (``onednn-packed``'s, in oneDNN's layout)."""
    skip = {id(model.tok_embeddings.weight)}
    packed = [b for b in model.buffers() if b.is_mkldnn]
    return sum(_tensor_bytes(p) for p in [*model.parameters(), *packed] if id(p) not in skip)


def kv_bytes(model: torch.nn.Module, length: float, *, rows: int = 1, dtype: torch.dtype | None = None) -> float:
    """Bytes of keys and values that ``rows`` rows of ``length`` cached tokens hold."""
    config = model.config
    size = torch.empty((), dtype=dtype or model.tok_embeddings.weight.dtype).element_size()
    return 2.0 * config.num_layers * config.kv_heads * config.head_dim * length * rows * size


def decode_bytes(model: torch.nn.Module, *, prompt: int, tokens: int, rows: int = 1) -> float:
    """Bytes one decode step reads on average over ``tokens`` steps after a ``prompt``-token prefill."""
    return weight_bytes(model) + kv_bytes(model, prompt + tokens / 2, rows=rows)


def fraction_of_limit(steps_per_second: float, bytes_per_step: float, bandwidth: float) -> float:
    """Measured steps/s over the roofline's ``bandwidth / bytes_per_step``."""
    return steps_per_second * bytes_per_step / bandwidth
