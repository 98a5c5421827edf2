"""How a server keeps the weights: ``chameleon serve --dtype`` and ``--quantize``, and their ``auto``.

``--dtype auto`` serves in bf16 where the device computes bf16 matmuls in hardware, and in fp32
elsewhere. Meta's reference inference builds Chameleon in bf16, and vLLM's ``--dtype auto`` also
serves an fp32 checkpoint in 16 bits. The weights take half the memory, and a batch of rows is
cheaper: on a CPU oneDNN's bf16 matmul costs about the same for 1 to 8 rows, where MKL's fp32 one
slows down from 4 rows on (docs/serving.md has the measurements).

``--quantize auto`` packs bf16 weights on a CPU for oneDNN (the ``onednn-packed`` quantization):
torch's bf16 matmul there otherwise reorders every weight on every call. Under ``--compile-frozen``
it packs nothing: inductor lays out the frozen weights itself, and faster than the packed op (bench
config, bf16, one row: 2.6 against 4.8 ms a step).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk.errors import ConfigError
from chameleon_sdk.hardware import native_bfloat16

if TYPE_CHECKING:
    import torch

    from chameleon_sdk.generation.compiled import CompileChoice
    from chameleon_sdk.plugins import PluginRegistry

__all__ = ["DTYPE_CHOICES", "PACKED_QUANTIZATION", "serving_dtype", "serving_quantization"]

#: what ``--dtype`` accepts
DTYPE_CHOICES = ("auto", "float32", "bfloat16")

#: the quantization ``--quantize auto`` picks for bf16 weights on a CPU
PACKED_QUANTIZATION = "onednn-packed"


def serving_dtype(choice: str, device: torch.device) -> torch.dtype:
    """The weights' dtype for ``--dtype choice`` on ``device``: ``auto`` is bf16 where
    :func:`native_bfloat16` holds and fp32 elsewhere (a bf16 checkpoint included, since emulated bf16
    is slower); ``float32`` and ``bfloat16`` are themselves."""
    if choice not in DTYPE_CHOICES:
        raise ConfigError(f"--dtype must be one of {list(DTYPE_CHOICES)}, got {choice!r}")
    import torch

    if choice == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return getattr(torch, choice)  # type: ignore[no-any-return]


def serving_quantization(
    choice: str, dtype: torch.dtype, device: torch.device, registry: PluginRegistry, *, compile: CompileChoice = False
) -> str | None:
    """The quantization plugin for ``--quantize choice`` (None: the weights as loaded): ``auto`` is
    :data:`PACKED_QUANTIZATION` for bf16 weights on a CPU with oneDNN, where ``registry`` has it,
    unless the step is compiled ``"frozen"``, and none elsewhere; ``none`` is none; any other name is
    itself (the registry refuses an unknown one)."""
    import torch

    if choice == "none":
        return None
    if choice != "auto":
        return choice
    on_cpu = device.type == "cpu" and torch.backends.mkldnn.is_available()
    packable = dtype == torch.bfloat16 and on_cpu and compile != "frozen"
    registered = {record.name for record in registry.records("quantization")}
    return PACKED_QUANTIZATION if packable and PACKED_QUANTIZATION in registered else None
