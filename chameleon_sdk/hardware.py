"""What the device computes natively: the one rule for choosing bf16 (serving and training alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["native_bfloat16"]

#: torch's checks (CPUID, through its cpuinfo library) for instructions that compute bf16 products
_CPU_BF16_CHECKS = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls in hardware: a CUDA GPU that supports bf16, or a CPU
    with AVX512-BF16 or AMX. Elsewhere torch emulates bf16 arithmetic, slower than fp32."""
    import torch  # here, so that importing this (the CLI's argument parser does) stays light

    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return any(bool(getattr(torch.cpu, check, lambda: False)()) for check in _CPU_BF16_CHECKS)
    return False
