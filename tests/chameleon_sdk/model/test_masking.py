"""MaskSpec: the reference mask semantics, checked against a literal reading of the rules."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError, UnsupportedMaskError
from chameleon_sdk.model.masking import check_mask_support
from chameleon_sdk.plugin_api import MaskKind, MaskSpec


@st.composite
def masks(draw):
    batch = draw(st.integers(1, 2))
    q_len = draw(st.integers(1, 5))
    offsets = draw(st.lists(st.integers(0, 4), min_size=batch, max_size=batch)) if draw(st.booleans()) else None
    kv_len = q_len + (max(offsets) if offsets else 0) + draw(st.integers(0, 3) if offsets else st.just(0))
    ids = st.lists(st.lists(st.integers(-1, 2), min_size=kv_len, max_size=kv_len), min_size=batch, max_size=batch)
    docs = torch.tensor(draw(ids)) if draw(st.booleans()) else None
    spans = torch.tensor(draw(ids)) if draw(st.booleans()) else None
    offset = torch.tensor(offsets) if offsets else None

    def query_part(t):
        if t is None:
            return None
        start = offset if offset is not None else torch.zeros(batch, dtype=torch.long)
        return torch.stack([t[b, int(start[b]) : int(start[b]) + q_len] for b in range(batch)])

    spec = MaskSpec(
        q_offset=offset,
        q_document_ids=query_part(docs),
        kv_document_ids=docs,
        q_span_ids=query_part(spans),
        kv_span_ids=spans,
    )
    return spec, batch, q_len, kv_len


@given(masks())
def test_allowed_matches_the_rules_literally(case):
    spec, batch, q_len, kv_len = case
    got = spec.allowed(batch, q_len, kv_len, torch.device("cpu"))
    for b in range(batch):
        start = 0 if spec.q_offset is None else int(spec.q_offset[b])
        for i in range(q_len):
            for j in range(kv_len):
                ok = j <= start + i
                if spec.q_span_ids is not None:
                    span = int(spec.q_span_ids[b, i])
                    ok = ok or (span >= 0 and span == int(spec.kv_span_ids[b, j]) and j < start + q_len)
                if spec.q_document_ids is not None:
                    ok = ok and int(spec.q_document_ids[b, i]) == int(spec.kv_document_ids[b, j])
                assert bool(got[b, i, j]) == ok, (b, i, j)


def test_kinds_follow_the_fields():
    ids = torch.zeros(1, 3, dtype=torch.long)
    assert MaskSpec().kinds == {MaskKind.CAUSAL}
    full = MaskSpec(
        q_offset=torch.zeros(1, dtype=torch.long),
        q_document_ids=ids,
        kv_document_ids=ids,
        q_span_ids=ids,
        kv_span_ids=ids,
    )
    assert full.kinds == set(MaskKind)
    with pytest.raises(ConfigError, match="together"):
        MaskSpec(q_document_ids=ids)
    with pytest.raises(UnsupportedMaskError, match="flash-like"):
        check_mask_support("flash-like", frozenset({"causal"}), full)
