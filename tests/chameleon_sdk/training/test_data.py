"""Training data: packing, masking, pair rotation, SFT, mixtures and stages, caching, bad records."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.training.data import IGNORE, MixtureData


def _write(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _text(t):
    return {"segments": [{"text": t}]}


def _pair(t, digits):
    return {"segments": [{"text": t}, {"modality": "digits", "payload": digits}]}


def test_rows_keep_documents_whole_and_mask_boundaries(pipe, tmp_path):
    texts = ["a red circle", "a blue square", "a green triangle and a yellow circle", "x"]
    path = _write(tmp_path / "t.jsonl", [_text(t) for t in texts])
    config = cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=16, batch_size=4)
    data = MixtureData(pipe, config, total_steps=10)
    docs = [pipe.tokenize(t, eos=True) for t in texts]
    source = data.sources[0]
    for row, doc_ids in zip(source.rows, source.row_docs):
        for d in doc_ids.unique().tolist():
            if d < 0:
                continue
            piece = row[doc_ids == d].tolist()
            assert any(piece == doc or (len(doc) > 17 and _sub(piece, doc)) for doc in docs)
    batch = data.batch_at(0)
    assert batch.input_ids.shape == batch.targets.shape == batch.document_ids.shape == (4, 16)
    same_doc = batch.document_ids[:, 1:] == batch.document_ids[:, :-1]
    assert (batch.targets[:, :-1][~same_doc] == IGNORE).all()
    counted = batch.targets != IGNORE
    assert (batch.targets[counted] != pipe.vocabulary.specials["pad"]).all()


def _sub(piece, doc):
    return any(doc[i : i + len(piece)] == piece for i in range(len(doc) - len(piece) + 1))


@settings(max_examples=20)
@given(st.lists(st.text(alphabet="abcdef xyz", min_size=1, max_size=40), min_size=1, max_size=12), st.integers(4, 24))
def test_every_counted_target_is_the_true_next_token(pipe, tmp_path_factory, texts, seq_len):
    path = _write(tmp_path_factory.mktemp("d") / "t.jsonl", [_text(t) for t in texts])
    data = MixtureData(
        pipe, cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=seq_len, batch_size=3), total_steps=4
    )
    stream = [i for t in texts for i in pipe.tokenize(t, eos=True)]
    pairs = set(itertools.pairwise(stream))
    batch = data.batch_at(1)
    counted = batch.targets != IGNORE
    for x, y in zip(batch.input_ids[counted].tolist(), batch.targets[counted].tolist()):
        assert (x, y) in pairs


def test_pairs_are_rotated_half_image_first(pipe, tmp_path):
    path = _write(tmp_path / "p.jsonl", [_pair("a red circle", [1, 2, 3]) for _ in range(6)])
    data = MixtureData(
        pipe, cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=64, batch_size=1), total_steps=1
    )
    begin = pipe.vocabulary.block("digits").begin_id
    row = data.sources[0].rows[0].tolist()
    starts = [i for i, t in enumerate(row) if t == pipe.vocabulary.specials["bos"]]
    firsts = [row[i + 1] for i in starts]
    assert sum(f == begin for f in firsts) == len(starts) // 2


def test_sft_masks_the_prompt(pipe, tmp_path):
    line = {"prompt": {"segments": [{"text": "question?"}]}, "answer": {"segments": [{"text": " answer."}]}}
    path = _write(tmp_path / "sft.jsonl", [line])
    data = MixtureData(
        pipe,
        cs.DataConfig(sources=(cs.SourceConfig(path=str(path), sft=True),), seq_len=32, batch_size=1),
        total_steps=1,
    )
    batch = data.batch_at(0)
    answer = pipe.tokenize(" answer.", bos=False, eos=True)
    assert batch.targets[batch.targets != IGNORE].tolist() == answer
    eot = pipe.vocabulary.specials["eot"]
    prompt = [*pipe.tokenize("question?"), eot]
    assert batch.input_ids[0, : len(prompt)].tolist() == prompt


def test_stages_and_mixture_weights(pipe, tmp_path):
    a = _write(tmp_path / "a.jsonl", [_text("a red circle")])
    b = _write(tmp_path / "b.jsonl", [_text("a blue square")])
    c = _write(tmp_path / "c.jsonl", [_text("a green triangle")])
    config = cs.DataConfig(
        sources=(
            cs.SourceConfig(path=str(a), weight=3.0),
            cs.SourceConfig(path=str(b), weight=1.0),
            cs.SourceConfig(path=str(c), weight=2.0, stage2=True),
        ),
        seq_len=16,
        batch_size=64,
    )
    data = MixtureData(pipe, config, total_steps=100)
    assert data.stage(79) == 1 and data.stage(80) == 2
    docs = [pipe.tokenize(t, eos=True) for t in ["a red circle", "a blue square", "a green triangle"]]

    def source_of(row):
        return next(i for i, d in enumerate(docs) if row[: len(d) - 1] == d[:-1])

    def shares(step):
        picked = [source_of(row) for row in data.batch_at(step).input_ids.tolist()]
        return torch.bincount(torch.tensor(picked), minlength=3).float() / len(picked)

    s1 = torch.stack([shares(s) for s in range(0, 40)]).mean(0)
    s2 = torch.stack([shares(s) for s in range(80, 100)]).mean(0)
    assert s1[2] == 0 and abs(s1[0] - 0.75) < 0.05
    # stage 2: stage-1 weights halved (1.5, 0.5) beside the new source (2.0)
    assert abs(s2[2] - 0.5) < 0.06 and abs(s2[0] - 0.375) < 0.06


def test_batches_are_a_pure_function_of_the_step(pipe, tmp_path):
    path = _write(tmp_path / "t.jsonl", [_text(t) for t in ["one", "two", "three", "four"]])
    config = cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=4, batch_size=4, seed=5)
    first, second = MixtureData(pipe, config, total_steps=5), MixtureData(pipe, config, total_steps=5)
    assert torch.equal(first.batch_at(3).input_ids, second.batch_at(3).input_ids)
    assert not all(torch.equal(first.batch_at(s).input_ids, first.batch_at(s + 1).input_ids) for s in range(4))


def test_token_cache_is_reused(pipe, tmp_path, monkeypatch):
    path = _write(tmp_path / "t.jsonl", [_text("a red circle")])
    config = cs.DataConfig(
        sources=(cs.SourceConfig(path=str(path)),), seq_len=8, batch_size=1, cache_dir=str(tmp_path / "cache")
    )
    first = MixtureData(pipe, config, total_steps=1)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    monkeypatch.setattr(pipe, "tokenize", lambda *a, **k: pytest.fail("tokenized again"))
    second = MixtureData(pipe, config, total_steps=1)
    assert torch.equal(first.sources[0].rows, second.sources[0].rows)


def test_bad_records_error_or_count(pipe, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_text("fine")) + "\n{oops\n" + json.dumps({"segments": [{"txt": 1}]}) + "\n")
    config = cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=8, batch_size=1)
    with pytest.raises(cs.DocumentError, match=r"bad\.jsonl:2: invalid JSON"):
        MixtureData(pipe, config, total_steps=1)
    lenient = MixtureData(
        pipe, cs.DataConfig(sources=config.sources, seq_len=8, batch_size=1, skip_bad_records=True), total_steps=1
    )
    assert lenient.counters == {"skipped_records": 2}


def test_config_errors(pipe, tmp_path):
    with pytest.raises(cs.ConfigError, match="at least one source"):
        cs.DataConfig(sources=())
    with pytest.raises(cs.ConfigError, match="weight must be >= 0"):
        cs.SourceConfig(path="x", weight=-1)
    with pytest.raises(cs.DocumentError, match="cannot read training data"):
        MixtureData(pipe, cs.DataConfig(sources=(cs.SourceConfig(path=str(tmp_path / "none.jsonl")),)), total_steps=1)
