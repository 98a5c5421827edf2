"""The Pipeline: documents <-> ids through plugins, including a modality defined right here."""

from __future__ import annotations

import attrs
import PIL.Image
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import (
    CheckpointError,
    ConfigError,
    Document,
    Pipeline,
    PipelineConfig,
    PluginNotFoundError,
    Segment,
    Text,
    TokenizationError,
    bundled_corpus,
)
from chameleon_sdk.plugin_api import hookimpl


@attrs.frozen(kw_only=True)
class DigitsOptions:
    base: int = 10


class DigitsModality:
    """A real, tiny non-text modality: a list of digits in some base, one code per digit."""

    payload_types = (list,)
    block_length = None

    def __init__(self, options: DigitsOptions) -> None:
        self.codebook_size = options.base

    def encode(self, payload: list[int]) -> torch.Tensor:
        return torch.tensor(payload, dtype=torch.long)

    def decode(self, codes: torch.Tensor) -> list[int]:
        return codes.tolist()

    def decode_partial(self, codes: torch.Tensor) -> list[int]:
        return [*codes.tolist(), -1]  # marks the truncation


class DigitsPlugin:
    @hookimpl
    def register_modalities(self, register):
        register("digits", DigitsModality, options=DigitsOptions)


@pytest.fixture(scope="module")
def trained_tokenizer_dir(tmp_path_factory):
    pipe = Pipeline.from_config({"text_tokenizer": {"name": "sentencepiece", "options": {"vocab_size": 400}}})
    pipe.train_text_tokenizer(bundled_corpus())
    directory = tmp_path_factory.mktemp("tok")
    pipe.text_tokenizer.save(directory)
    return directory


@pytest.fixture
def pipe(registry, registered_plugin, trained_tokenizer_dir):
    registered_plugin(DigitsPlugin(), name="digits-plugin")
    config = PipelineConfig(
        text_tokenizer={
            "name": "sentencepiece",
            "options": {"model_file": str(trained_tokenizer_dir / "sentencepiece.model")},
        },
        modalities=({"name": "digits", "options": {"base": 7}},),
    )
    return Pipeline.from_config(config)


documents = st.lists(
    st.one_of(
        st.text(max_size=30).map(Text), st.lists(st.integers(0, 6), max_size=12).map(lambda d: Segment("digits", d))
    ),
    max_size=6,
).map(Document)


@given(documents, st.booleans(), st.booleans())
def test_documents_round_trip(pipe, doc, bos, eos):
    ids = pipe.tokenize(doc, bos=bos, eos=eos)
    assert pipe.detokenize(ids) == doc
    assert pipe.detokenize(torch.tensor(ids)) == doc


def test_token_layout(pipe):
    vocab = pipe.vocabulary
    block = vocab.block("digits")
    ids = pipe.tokenize(Document.of("a", Segment("digits", [3, 0]), "b"), eos=True)
    text_a, text_b = pipe.text_tokenizer.encode("a"), pipe.text_tokenizer.encode("b")
    codes = vocab.codes_to_ids("digits", [3, 0]).tolist()
    assert ids == [vocab.specials["bos"], *text_a, block.begin_id, *codes, block.end_id, *text_b, vocab.specials["eos"]]
    assert block.size == 7 and vocab.size == pipe.text_tokenizer.vocab_size + 1 + 2 + 7


def test_specials_are_structure_not_content(pipe):
    s = pipe.vocabulary.specials
    ids = [
        s["bos"],
        *pipe.text_tokenizer.encode("hi"),
        s["eot"],
        s["pad"],
        *pipe.text_tokenizer.encode(" there"),
        s["eos"],
    ]
    assert pipe.detokenize(ids) == Document.of("hi there")


def test_malformed_structure_strict_and_lenient(pipe):
    vocab = pipe.vocabulary
    block = vocab.block("digits")
    code = vocab.codes_to_ids("digits", [5]).item()
    text = pipe.text_tokenizer.encode("x")
    cases = {
        "outside any block": [*text, code],
        "without a matching begin": [block.end_id, *text],
        "inside an open": [block.begin_id, block.begin_id, code, block.end_id],
        "is never closed": [*text, block.begin_id, code, code],
        "is not a code of modality 'digits'": [block.begin_id, *text, block.end_id],
    }
    for match, ids in cases.items():
        with pytest.raises(TokenizationError, match=match):
            pipe.detokenize(ids)
    assert pipe.detokenize(cases["outside any block"], strict=False) == Document.of("x")
    assert pipe.detokenize(cases["is never closed"], strict=False) == Document.of("x", Segment("digits", [5, 5, -1]))
    assert pipe.detokenize(cases["is not a code of modality 'digits'"], strict=False) == Document.of(
        Segment("digits", [])
    )
    with pytest.raises(TokenizationError, match="outside the vocabulary"):
        pipe.detokenize([vocab.size], strict=False)


def test_bad_segments_are_typed_errors(pipe):
    with pytest.raises(TokenizationError, match="no 'image' modality"):
        pipe.tokenize(Document.of(PIL.Image.new("RGB", (2, 2))))
    with pytest.raises(TokenizationError, match="outside the codebook"):
        pipe.tokenize(Document.of(Segment("digits", [7])))
    with pytest.raises(TokenizationError, match="expected a Document"):
        pipe.tokenize(42)


def test_plain_string_is_a_document(pipe):
    assert pipe.tokenize("hello") == pipe.tokenize(Document.of("hello"))


def test_unknown_plugins_and_options(registry, registered_plugin):
    registered_plugin(DigitsPlugin(), name="digits-plugin")
    with pytest.raises(PluginNotFoundError, match="Did you mean 'digits'"):
        Pipeline.from_config({"modalities": ["digit"]})
    with pytest.raises(ConfigError, match=r"'digits' options\.base: expected an integer, got 'ten'"):
        Pipeline.from_config({"modalities": [{"name": "digits", "options": {"base": "ten"}}]})


def test_untrained_tokenizer_is_reported(registry):
    with pytest.raises(TokenizationError, match="not trained yet"):
        Pipeline.from_config({}).tokenize("x")


def test_save_and_load_pretrained(pipe, tmp_path):
    doc = Document.of("a", Segment("digits", [1, 2, 3]), "b")
    target = pipe.save_pretrained(tmp_path / "model")
    pipe.save_pretrained(tmp_path / "model")  # overwriting an existing pipeline is atomic too
    loaded = Pipeline.from_pretrained(target)
    assert loaded.tokenize(doc) == pipe.tokenize(doc)
    assert loaded.vocabulary == pipe.vocabulary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_from_pretrained_errors(pipe, tmp_path):
    with pytest.raises(CheckpointError, match="nothing' does not exist"):
        Pipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"is not a pipeline or a released checkpoint .* expected pipeline\.json"):
        Pipeline.from_pretrained(tmp_path / "empty")
    target = pipe.save_pretrained(tmp_path / "model")
    (target / "pipeline.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"pipeline\.json' is truncated or altered"):
        Pipeline.from_pretrained(target)  # the manifest notices first
    (target / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Pipeline.from_pretrained(target)
