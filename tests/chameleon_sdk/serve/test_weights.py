"""``--dtype auto`` is bf16 where the device computes it natively; ``--quantize auto`` packs it on a CPU."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.plugins import get_registry
from chameleon_sdk.serve import weights as serve_weights
from chameleon_sdk.serve.weights import PACKED_QUANTIZATION, native_bfloat16, serving_dtype, serving_quantization

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
    for check in serve_weights._CPU_BF16_CHECKS:
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


@pytest.mark.parametrize(
    ("dtype", "device", "expected"),
    [
        (torch.bfloat16, "cpu", PACKED_QUANTIZATION),
        (torch.float32, "cpu", None),
        (torch.bfloat16, "cuda", None),
        (torch.bfloat16, "meta", None),
    ],
)
def test_auto_packs_bf16_weights_on_a_cpu_only(dtype, device, expected):
    assert serving_quantization("auto", dtype, torch.device(device), get_registry()) == expected


def test_auto_packs_nothing_without_onednn_or_without_the_plugin(monkeypatch):
    class NoQuantizations:
        def records(self, kind):
            return []

    assert serving_quantization("auto", torch.bfloat16, CPU, NoQuantizations()) is None  # type: ignore[arg-type]
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert serving_quantization("auto", torch.bfloat16, CPU, get_registry()) is None


def test_none_and_a_name_are_kept_as_asked():
    assert serving_quantization("none", torch.bfloat16, CPU, get_registry()) is None
    name = "int8-weight-only"
    assert serving_quantization(name, torch.float32, CPU, get_registry()) == name
