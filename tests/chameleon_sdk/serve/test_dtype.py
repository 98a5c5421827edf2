"""``--dtype``: ``auto`` is bf16 where the device computes it natively, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.serve import dtype as serve_dtype
from chameleon_sdk.serve.dtype import native_bfloat16, serving_dtype

CPU = torch.device("cpu")


def _cpu_with(monkeypatch: pytest.MonkeyPatch, *, avx512_bf16: bool, amx: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "native"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_a_cpu_is_native_with_avx512_bf16_or_amx(monkeypatch, avx512_bf16, amx, native):
    _cpu_with(monkeypatch, avx512_bf16=avx512_bf16, amx=amx)
    assert native_bfloat16(CPU) is native
    assert serving_dtype("auto", CPU) == (torch.bfloat16 if native else torch.float32)


def test_a_torch_without_the_cpu_checks_counts_as_not_native(monkeypatch):
    for check in serve_dtype._CPU_BF16_CHECKS:
        monkeypatch.delattr(torch.cpu, check)
    assert serving_dtype("auto", CPU) == torch.float32


def test_cuda_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert serving_dtype("auto", torch.device("cuda")) == (torch.bfloat16 if supported else torch.float32)


def test_other_devices_stay_in_float32():
    assert serving_dtype("auto", torch.device("meta")) == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_choice_is_kept_whatever_the_device(monkeypatch, native):
    _cpu_with(monkeypatch, avx512_bf16=native, amx=False)
    assert serving_dtype("float32", CPU) == torch.float32
    assert serving_dtype("bfloat16", CPU) == torch.bfloat16


def test_an_unknown_choice_names_the_choices():
    with pytest.raises(cs.ConfigError, match=r"--dtype must be one of \['auto', 'float32', 'bfloat16'\], got 'half'"):
        serving_dtype("half", CPU)
