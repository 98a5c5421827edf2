"""native_bfloat16: a bf16 GPU, or a CPU with AVX512-BF16 or AMX; nothing else."""

from __future__ import annotations

import pytest
import torch

from chameleon_sdk import hardware
from chameleon_sdk.hardware import native_bfloat16

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_a_cpu_is_native_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert native_bfloat16(CPU) is native


def test_a_torch_without_the_cpu_checks_counts_as_not_native(monkeypatch):
    for check in hardware._CPU_BF16_CHECKS:
        monkeypatch.delattr(torch.cpu, check)
    assert native_bfloat16(CPU) is False


def test_cuda_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert native_bfloat16(torch.device("cuda")) is supported
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_bfloat16(torch.device("cuda")) is False


def test_other_devices_are_not_native():
    assert native_bfloat16(torch.device("meta")) is False
