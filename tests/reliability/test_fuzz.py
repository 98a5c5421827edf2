"""Random and corrupted input never escapes as anything but a defined result or a ChameleonError.

- ``detokenize`` of arbitrary id sequences: out-of-range ids, stray codes and ends, unterminated,
  short, long and nested image blocks.
- JSONL datasets with random corruption (flipped, dropped, inserted bytes; cut lines), read
  directly and through the training data pipeline.
- Configs with random wrong types at random places.
- Image files (PNG, JPEG, GIF, WebP, BMP, TIFF) with random corruption.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.training.data import iter_records

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about some corrupt files

#: examples per property (the CI profile's default is 60; these are the suite's most numerous)
EXAMPLES = settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))


def _ids(pipe: cs.Pipeline) -> st.SearchStrategy[list[int]]:
    """Token sequences built from text ids, specials, image blocks (complete or not) and strays."""
    vocab = pipe.vocabulary
    block = vocab.block("image")
    codes = block.code_ids
    text = st.integers(0, pipe.text_tokenizer.vocab_size - 1)
    code = st.integers(int(codes[0]), int(codes[-1]))
    special = st.sampled_from([*vocab.specials.values(), block.begin_id, block.end_id])
    outside = st.one_of(st.integers(-(2**40), -1), st.integers(vocab.size, 2**40))
    lengths = st.sampled_from([0, 1, block.block_length - 1, block.block_length, block.block_length + 1])
    image = st.builds(
        lambda n, fill, close: [block.begin_id, *fill[:n], *([block.end_id] if close else [])],
        lengths,
        st.lists(code, min_size=80, max_size=80),
        st.booleans(),
    )
    one = st.one_of(text, special, code).map(lambda t: [t])
    rare = outside.map(lambda t: [t])
    pieces = st.lists(st.one_of(one, image, one, rare.filter(lambda _: True)), max_size=6)
    return pieces.map(lambda parts: [t for part in parts for t in part])


@pytest.fixture(scope="module")
def ids_strategy(image_pipe):
    return _ids(image_pipe)


@EXAMPLES
@given(data=st.data())
def test_detokenize_of_any_ids_is_a_document_or_a_tokenization_error(image_pipe, ids_strategy, data):
    pipe = image_pipe
    ids = data.draw(ids_strategy)
    in_range = all(0 <= i < pipe.vocabulary.size for i in ids)
    results: dict[bool, Any] = {}
    for strict in (True, False):
        try:
            results[strict] = pipe.detokenize(ids, strict=strict)
        except cs.TokenizationError as exc:
            results[strict] = exc
    if not in_range:  # out-of-range ids always raise, in both modes
        assert all(isinstance(r, cs.TokenizationError) for r in results.values())
        return
    assert isinstance(results[False], cs.Document), results[False]  # lenient: always a document
    if isinstance(results[True], cs.Document):  # what strict accepts, lenient reads the same
        assert results[True] == results[False]


@EXAMPLES
@given(ids=st.lists(st.integers(-(2**70), 2**70), max_size=8))
def test_detokenize_of_any_integers(image_pipe, ids):
    with contextlib.suppress(cs.TokenizationError):
        image_pipe.detokenize(ids)


# -- JSONL datasets --------------------------------------------------------------------------------


def _png(color) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def jsonl_bytes() -> bytes:
    documents = [
        cs.Document.of("a red square", PIL.Image.open(io.BytesIO(_png((200, 0, 0))))),
        cs.Document.of(PIL.Image.open(io.BytesIO(_png((0, 0, 200)))), "a blue one"),
        cs.Document.of("just text, with unicode: é ✓ 🟥"),
    ]
    lines = [json.dumps(d.to_json(), ensure_ascii=False) for d in documents]
    lines.append(json.dumps({"prompt": documents[2].to_json(), "answer": documents[0].to_json()}))
    return ("\n".join(lines) + "\n").encode("utf-8")


def corrupt(data: bytes, draw) -> bytes:
    """One to four random edits: flip a byte, drop a span, insert random bytes, cut the file."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        edit = draw(st.sampled_from(["flip", "drop", "insert", "cut", "newline"]))
        if edit == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif edit == "drop":
            del out[at : at + draw(st.integers(1, 40))]
        elif edit == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=20))
        elif edit == "cut":
            del out[at:]
        else:
            out[at:at] = b"\n"
    return bytes(out)


@EXAMPLES
@given(data=st.data())
def test_corrupted_jsonl_reads_or_raises_a_typed_error(tmp_path_factory, jsonl_bytes, data):
    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    path.write_bytes(corrupt(jsonl_bytes, data.draw))
    try:
        documents = list(cs.read_jsonl(path))
    except cs.ChameleonError:
        documents = None
    assert documents is None or all(isinstance(d, cs.Document) for d in documents)
    counters: dict[str, int] = {}
    try:  # the training reader: bad lines skipped and counted, or one typed error
        records = list(iter_records(path, skip_bad_records=True, counters=counters))
    except cs.ChameleonError:
        return
    assert len(records) + counters.get("skipped_records", 0) >= 1 or not path.read_bytes().strip()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_training_on_corrupted_jsonl_trains_or_raises_a_typed_error(image_pipe, tmp_path_factory, jsonl_bytes, data):
    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    path.write_bytes(corrupt(jsonl_bytes, data.draw))
    skip = data.draw(st.booleans())
    config = cs.DataConfig(sources=[cs.SourceConfig(path=str(path))], seq_len=16, batch_size=2, skip_bad_records=skip)
    try:
        batch = cs.MixtureData(image_pipe, config, total_steps=2).batch_at(0)
    except cs.ChameleonError:
        return
    assert batch.input_ids.shape == (2, 16)


# -- configs ---------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)

VALID = {
    "pipeline": cs.to_dict(
        cs.PipelineConfig(
            text_tokenizer={"name": "sentencepiece", "options": {"vocab_size": 300}},
            modalities=({"name": "image", "options": {"resolution": 16, "channel_multipliers": [1, 1]}},),
            model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4),
            stability=["qk-norm", "z-loss"],
            trainer={"name": "local", "options": {"lr": 1e-3, "warmup_steps": 2}},
            sampler={"name": "sample", "options": {"temperature": 0.7, "top_p": 0.9}},
        )
    ),
    "data": cs.to_dict(cs.DataConfig(sources=[cs.SourceConfig(path="a.jsonl", weight=2.0)], seq_len=64)),
}


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into nested dicts and lists."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*prefix, i))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _check_components(config: cs.PipelineConfig, registry: cs.PluginRegistry) -> None:
    """Validate each named plugin's options without building anything (no huge allocations)."""
    slots = [("text_tokenizer", config.text_tokenizer), ("attention", config.attention)]
    slots += [("trainer", config.trainer), ("sampler", config.sampler), ("checkpoint_format", config.checkpoint_format)]
    slots += [("modality", m) for m in config.modalities] + [("stability", s) for s in config.stability]
    slots += [("callback", c) for c in config.callbacks]
    for kind, spec in slots:
        registry.get(kind, spec.name).make_options(spec.options)


@EXAMPLES
@given(data=st.data())
def test_configs_with_random_wrong_values_are_config_errors(data):
    which = data.draw(st.sampled_from(sorted(VALID)))
    valid = VALID[which]
    path = data.draw(st.sampled_from(_paths(valid)))
    mutated = _replace(valid, path, data.draw(json_values))
    cls = cs.PipelineConfig if which == "pipeline" else cs.DataConfig
    registry = cs.get_registry()
    try:
        config = cs.from_dict(cls, mutated)
        if isinstance(config, cs.PipelineConfig):
            _check_components(config, registry)
    except cs.ChameleonError:
        return


@EXAMPLES
@given(text=st.text(max_size=200), suffix=st.sampled_from([".json", ".toml"]))
def test_config_files_of_random_text_are_config_errors(tmp_path_factory, text, suffix):
    path = tmp_path_factory.mktemp("config") / f"config{suffix}"
    path.write_text(text, encoding="utf-8")
    with contextlib.suppress(cs.ConfigError):
        cs.load_config(path)


@EXAMPLES
@given(
    kwargs=st.dictionaries(
        st.sampled_from(
            [
                "dim",
                "num_layers",
                "num_heads",
                "num_kv_heads",
                "dropout",
                "rope_theta",
                "max_seq_len",
                "ffn_dim",
                "norm_eps",
            ]
        ),
        json_values,
        max_size=4,
    )
)
def test_model_configs_built_directly_with_random_values(kwargs):
    with contextlib.suppress(cs.ConfigError):
        cs.ModelConfig(**{"dim": 32, "num_layers": 2, "num_heads": 4, **kwargs})


# -- image files -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_files() -> dict[str, bytes]:
    image = PIL.Image.new("RGB", (24, 16), (10, 120, 240))
    image.paste((250, 200, 0), (4, 4, 12, 12))
    files = {}
    for fmt, extra in [("PNG", {}), ("JPEG", {"quality": 80}), ("GIF", {}), ("WEBP", {}), ("BMP", {}), ("TIFF", {})]:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **extra)
        files[fmt] = buffer.getvalue()
    return files


@EXAMPLES
@given(data=st.data())
def test_corrupted_image_bytes_decode_or_raise_image_decode_error(image_pipe, image_files, data):
    fmt = data.draw(st.sampled_from(sorted(image_files)))
    broken = corrupt(image_files[fmt], data.draw)
    try:
        image = cs.open_image(broken, max_pixels=1 << 20)
    except cs.ImageDecodeError:
        return
    assert image.size[0] * image.size[1] <= 1 << 20
    codes = image_pipe.modalities["image"].encode(image)  # whatever decodes, the tokenizer can encode
    assert codes.shape == (image_pipe.modalities["image"].block_length,)
    assert torch.all((codes >= 0) & (codes < image_pipe.modalities["image"].codebook_size))
