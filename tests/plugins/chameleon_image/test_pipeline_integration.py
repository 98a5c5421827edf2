"""The image modality inside a Pipeline: documents <-> ids, exact code round trips, stability."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chameleon_sdk import Document, Image, Pipeline, Text, TokenizationError, bundled_corpus


@pytest.fixture(scope="module")
def pipe(trained, tiny_options, tmp_path_factory):
    tokenizer, _ = trained
    pipe = Pipeline.from_config(
        {
            "text_tokenizer": {"name": "sentencepiece", "options": {"vocab_size": 400}},
            "modalities": [{"name": "image", "options": {**tiny_options, "codebook_metric": "cosine"}}],
        }
    )
    pipe.train_text_tokenizer(bundled_corpus())
    weights = tmp_path_factory.mktemp("image-tokenizer")
    tokenizer.save(weights)
    pipe.modalities["image"].load(weights)
    return pipe


def test_tokenize_lays_out_text_then_the_image_block(pipe, shapes):
    image = shapes[0]
    ids = pipe.tokenize(Document.of("a red circle", image))
    vocab = pipe.vocabulary
    block = vocab.block("image")
    text = pipe.text_tokenizer.encode("a red circle")
    codes = pipe.modalities["image"].encode(image)
    expected = [
        vocab.specials["bos"],
        *text,
        block.begin_id,
        *vocab.codes_to_ids("image", codes).tolist(),
        block.end_id,
    ]
    assert ids == expected
    assert len(ids) == 1 + len(text) + 1 + 64 + 1


def test_detokenize_decodes_the_image(pipe, shapes):
    ids = pipe.tokenize(Document.of("a red circle", shapes[1]))
    doc = pipe.detokenize(ids)
    assert [type(s) for s in doc] == [Text, Image] and doc.text == "a red circle"
    tokenizer = pipe.modalities["image"]
    expected = tokenizer.decode(tokenizer.encode(shapes[1]))
    assert doc.segments[1].image.tobytes() == expected.tobytes()


def test_unfinished_image_is_previewed_with_decode_partial(pipe, shapes):
    ids = pipe.tokenize(Document.of("a", shapes[2]))
    cut = ids[:-20]  # image block still open: its last 19 codes and the end are missing
    doc = pipe.detokenize(cut, strict=False)
    tokenizer = pipe.modalities["image"]
    partial_codes = pipe.vocabulary.ids_to_codes(
        "image", torch.tensor(cut[cut.index(pipe.vocabulary.block("image").begin_id) + 1 :])
    )
    assert doc.segments[-1].image.tobytes() == tokenizer.decode_partial(partial_codes).tobytes()


@settings(max_examples=15)
@given(codes=st.lists(st.integers(0, 63), min_size=64, max_size=64), text=st.sampled_from(["a red circle", "x", ""]))
def test_detokenize_hands_the_exact_codes_to_the_decoder(pipe, codes, text):
    tokenizer = pipe.modalities["image"]
    vocab = pipe.vocabulary
    block = vocab.block("image")
    code_t = torch.tensor(codes)
    ids = [
        vocab.specials["bos"],
        *pipe.text_tokenizer.encode(text),
        block.begin_id,
        *vocab.codes_to_ids("image", code_t).tolist(),
        block.end_id,
    ]
    assert torch.equal(vocab.ids_to_codes("image", vocab.codes_to_ids("image", code_t)), code_t)
    doc = pipe.detokenize(ids)
    assert doc.segments[-1].image.tobytes() == tokenizer.decode(code_t).tobytes()


@settings(max_examples=15)
@given(seed=st.integers(0, 2**31 - 1))
def test_tokenize_detokenize_round_trips_the_codes_of_a_tokenized_image(pipe, shape_drawer, seed):
    image = shape_drawer(random.Random(seed))
    ids = pipe.tokenize(Document.of(image))
    block = pipe.vocabulary.block("image")
    codes = pipe.vocabulary.ids_to_codes("image", torch.tensor(ids[2:-1]))
    assert ids[1] == block.begin_id and ids[-1] == block.end_id
    assert torch.equal(codes, pipe.modalities["image"].encode(image))
    doc = pipe.detokenize(ids)
    assert doc.segments[0].image.tobytes() == pipe.modalities["image"].decode(codes).tobytes()


def stability_rate(tokenizer, images) -> float:
    """Share of codes that survive encode(decode(codes)) for the tokenizer's own codes."""
    codes = tokenizer.encode_batch(images)
    again = tokenizer.encode_batch(tokenizer.decode_batch(codes))
    return float((codes == again).float().mean())


def test_encode_decode_is_mostly_stable_on_own_codes(trained, shape_drawer, record_property):
    tokenizer, metrics = trained
    rng = random.Random(12345)
    rate = stability_rate(tokenizer, [shape_drawer(rng) for _ in range(64)])
    record_property("stability_rate", rate)
    record_property("held_out_psnr", metrics["psnr"])
    print(f"encode(decode(codes)) stability rate {rate:.3f}; held-out PSNR {metrics['psnr']:.2f} dB")
    assert rate >= 0.6


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1))
def test_stability_holds_for_any_batch_of_images(trained, shape_drawer, seed):
    # Per image the rate varies (0.16 to 1.0 over 1000 images, mean 0.72); a batch of 16 is stable.
    tokenizer, _ = trained
    rng = random.Random(seed)
    assert stability_rate(tokenizer, [shape_drawer(rng) for _ in range(16)]) >= 0.5


def test_pipeline_save_and_load_keeps_the_image_tokenizer(pipe, shapes, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = Pipeline.from_pretrained(tmp_path / "pipe")
    doc = Document.of("a red circle", shapes[3])
    assert loaded.tokenize(doc) == pipe.tokenize(doc)
    codes = torch.randint(0, 64, (64,))
    a = np.asarray(loaded.modalities["image"].decode(codes))
    assert np.array_equal(a, np.asarray(pipe.modalities["image"].decode(codes)))


@settings(max_examples=10, deadline=None)
@given(
    layout=st.lists(st.lists(st.sampled_from(["text", "image"]), max_size=4), min_size=1, max_size=6),
    seed=st.integers(0, 2**31 - 1),
    bos=st.booleans(),
    eos=st.booleans(),
)
def test_tokenize_batch_equals_tokenizing_one_by_one(pipe, shape_drawer, layout, seed, bos, eos):
    """Pictures encoded in batches give exactly the ids of encoding them one at a time."""
    rng = random.Random(seed)
    docs = [
        Document.of(*(shape_drawer(rng) if kind == "image" else f"a shape {rng.randint(0, 99)}" for kind in kinds))
        for kinds in layout
    ]
    assert pipe.tokenize_batch(docs, bos=bos, eos=eos) == [pipe.tokenize(d, bos=bos, eos=eos) for d in docs]


def test_tokenize_batch_encodes_in_chunks_and_refuses_bad_input(pipe, shapes, monkeypatch):
    import chameleon_sdk.tokenizer as pipeline_module

    calls = []
    image = pipe.modalities["image"]
    original = image.encode_batch
    monkeypatch.setattr(image, "encode_batch", lambda payloads: calls.append(len(payloads)) or original(payloads))
    monkeypatch.setattr(pipeline_module, "ENCODE_BATCH", 4)
    docs = [Document.of("a", shapes[i], shapes[i + 1]) for i in range(5)]
    assert pipe.tokenize_batch(docs) == [pipe.tokenize(d) for d in docs[:5]]
    assert calls[:3] == [4, 4, 2]  # ten pictures, four at a time (then one call per tokenize() above)
    with pytest.raises(TokenizationError, match="sequence of documents"):
        pipe.tokenize_batch(docs[0])
    with pytest.raises(TokenizationError, match="document 1: expected a Document or str, got int"):
        pipe.tokenize_batch(["a", 3])
    monkeypatch.setattr(image, "encode_batch", lambda payloads: original(payloads)[:1])
    with pytest.raises(TokenizationError, match=r"encode_batch of 4 payloads must return a \[4, 64\]"):
        pipe.tokenize_batch(docs)
