"""``--dtype auto`` is bf16 where the device computes it natively; ``--quantize auto`` packs it on a CPU."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.plugins import get_registry
from chameleon_sdk.serve import weights as serve_weights
from chameleon_sdk.serve.weights import PACKED_QUANTIZATION, serving_dtype, serving_quantization

CPU = torch.device("cpu")


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_where_the_device_computes_it_natively(monkeypatch, native):
    monkeypatch.setattr(serve_weights, "native_bfloat16", lambda device: native)
    assert serving_dtype("auto", CPU) == (torch.bfloat16 if native else torch.float32)


def test_auto_asks_the_device_it_is_given():
    assert serving_dtype("auto", torch.device("meta")) == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_choice_is_kept_whatever_the_device(monkeypatch, native):
    monkeypatch.setattr(serve_weights, "native_bfloat16", lambda device: native)
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


@pytest.mark.parametrize(
    ("compile", "expected"), [(False, PACKED_QUANTIZATION), (True, PACKED_QUANTIZATION), ("frozen", None)]
)
def test_auto_packs_nothing_for_a_frozen_step_which_lays_out_its_weights_itself(compile, expected):
    assert serving_quantization("auto", torch.bfloat16, CPU, get_registry(), compile=compile) == expected


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
