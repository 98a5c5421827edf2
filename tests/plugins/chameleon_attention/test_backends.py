"""Every registered attention backend agrees with ``eager`` (timm style: parametrised over the registry).

A newly registered backend is picked up automatically; a backend that cannot run here (no
flash-attn, no CUDA) is skipped with its own reason.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk
from chameleon_sdk import BackendUnavailableError, ModelConfig, build_model
from chameleon_sdk.plugin_api import MaskKind, MaskSpec

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

BACKENDS = [record.name for record in chameleon_sdk.available_plugins("attention")]


def build(name: str):
    try:
        return chameleon_sdk.get_registry().build("attention", name)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def mask_kinds(name: str) -> frozenset[str]:
    return frozenset(chameleon_sdk.get_registry().get("attention", name).traits["mask_kinds"])


def run(backend, *args):
    try:
        with torch.no_grad():  # flex has no CPU backward; gradients are not what is compared here
            return backend(*args)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@st.composite
def attention_case(draw):
    batch = draw(st.integers(1, 2))
    kv_heads = draw(st.sampled_from([1, 2]))
    heads = kv_heads * draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([8, 16]))
    q_len = draw(st.integers(1, 9))
    cached = draw(st.booleans())
    offsets = draw(st.lists(st.integers(0, 7), min_size=batch, max_size=batch)) if cached else None
    kv_len = q_len + (max(offsets) + draw(st.integers(0, 4)) if offsets else 0)
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))

    def packed():  # sorted small ids: contiguous packed documents / spans
        return torch.sort(torch.randint(0, 3, (batch, kv_len), generator=gen), dim=1).values

    docs = packed() if draw(st.booleans()) else None
    spans = packed() - 1 if draw(st.booleans()) else None  # -1: causal tokens
    offset = torch.tensor(offsets) if offsets else None
    rows = offset.unsqueeze(1) + torch.arange(q_len) if offset is not None else torch.arange(q_len).expand(batch, q_len)
    mask = MaskSpec(
        q_offset=offset,
        q_document_ids=docs.gather(1, rows) if docs is not None else None,
        kv_document_ids=docs,
        q_span_ids=spans.gather(1, rows) if spans is not None else None,
        kv_span_ids=spans,
    )
    q = torch.randn(batch, heads, q_len, head_dim, generator=gen)
    k = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    v = torch.randn(batch, kv_heads, kv_len, head_dim, generator=gen)
    return q, k, v, mask, head_dim**-0.5


@pytest.mark.parametrize("name", BACKENDS)
@settings(max_examples=40)
@given(case=attention_case())
def test_backend_agrees_with_eager(name, case):
    q, k, v, mask, scale = case
    if not mask.kinds <= mask_kinds(name):
        return  # the model refuses this combination (tested in the core); nothing to compare
    expected = run(build("eager"), q, k, v, mask, scale)
    got = run(build(name), q, k, v, mask, scale)
    assert got.shape == q.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_declares_causal_among_known_mask_kinds(name):
    kinds = mask_kinds(name)
    assert MaskKind.CAUSAL in kinds
    assert kinds <= set(MaskKind)


TINY = ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=64, ffn_dim=48, max_seq_len=32)


@pytest.mark.parametrize("name", BACKENDS)
def test_backend_in_a_model_matches_eager_with_documents_and_cache(name):
    try:
        torch.manual_seed(0)
        model = build_model(TINY, attention=name, stability=["qk-norm"]).eval()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    reference = build_model(TINY, attention="eager", stability=["qk-norm"]).eval()
    reference.load_state_dict(model.state_dict())
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    docs = torch.tensor([[0] * 4 + [1] * 6, [0] * 10])
    kinds = mask_kinds(name)
    try:
        with torch.no_grad():
            torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-5, rtol=1e-5)
            if MaskKind.DOCUMENT in kinds:
                torch.testing.assert_close(
                    model(ids, document_ids=docs).logits,
                    reference(ids, document_ids=docs).logits,
                    atol=1e-5,
                    rtol=1e-5,
                )
            if MaskKind.OFFSET in kinds:
                cache = model.new_cache(2, 16)
                steps = [model(ids[:, :6], cache=cache).logits]
                steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(6, 10)]
                torch.testing.assert_close(torch.cat(steps, 1), reference(ids).logits, atol=1e-5, rtol=1e-5)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


def test_flash_without_the_package_or_gpu_names_what_is_missing():
    try:
        backend = chameleon_sdk.get_registry().build("attention", "flash")
    except BackendUnavailableError as exc:
        assert "flash-attn" in str(exc)
        return
    x = torch.randn(1, 2, 3, 8)
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        backend(x, x, x, MaskSpec(), 8**-0.5)


def test_flex_on_cpu_refuses_gradients_with_a_typed_error():
    backend = chameleon_sdk.get_registry().build("attention", "flex")
    q = torch.randn(1, 2, 3, 8, requires_grad=True)
    with pytest.raises(BackendUnavailableError, match="no_grad"):
        backend(q, q, q, MaskSpec(), 8**-0.5)


def test_flex_takes_its_compile_option():
    backend = chameleon_sdk.get_registry().build("attention", "flex", {"compile": False})
    assert backend.options.compile is False
    with pytest.raises(chameleon_sdk.ConfigError, match="compile"):
        chameleon_sdk.get_registry().build("attention", "flex", {"compile": "yes"})


def test_flex_refuses_a_compiled_model_only_on_cuda(monkeypatch):
    from chameleon_attention.backends import refuses_whole_model_compile

    assert not refuses_whole_model_compile(torch.device("cuda"))  # not compiling: the backend compiles flex itself
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert refuses_whole_model_compile(torch.device("cuda"))
    assert not refuses_whole_model_compile(torch.device("cpu"))  # compiled flex on CPU agrees with eager
