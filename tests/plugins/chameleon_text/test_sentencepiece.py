"""The sentencepiece text tokenizer: exact round trips for every string, training, persistence."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError, TokenizationError, bundled_corpus, get_registry


@pytest.fixture(scope="module")
def tokenizer():
    tok = get_registry().build("text_tokenizer", "sentencepiece", {"vocab_size": 500})
    tok.train(bundled_corpus())
    return tok


@given(st.text(max_size=200))
@example("")
@example("emoji 🦎🟥 CJK 数字 한국어 combining e\u0301 zero-width \u200b")
@example("\x00\x01\x1b[31m control \t\r\n chars \x7f")
@example("  leading and trailing spaces  ")
@example("<s></s><pad><unk> are not special in text")
def test_every_string_round_trips(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_very_long_input_round_trips(tokenizer):
    text = "The quick brown fox 🦊 jumps. " * 4000
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_concatenated_segments_decode_to_concatenated_text(tokenizer):
    parts = ["Here is", " a red ", "circle", ":\n", "🟥"]
    ids = [i for p in parts for i in tokenizer.encode(p)]
    assert tokenizer.decode(ids) == "".join(parts)


def test_special_ids_match_chameleon_convention(tokenizer):
    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id) == (0, 1, 2)
    assert tokenizer.decode([0, 1, 2]) == ""


def test_learns_multi_character_pieces(tokenizer):
    assert len(tokenizer.encode("a red circle")) < len("a red circle")


def test_save_and_load(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    fresh = get_registry().build("text_tokenizer", "sentencepiece")
    fresh.load(tmp_path)
    assert fresh.encode("a blue square") == tokenizer.encode("a blue square")
    by_file = get_registry().build(
        "text_tokenizer", "sentencepiece", {"model_file": str(tmp_path / "sentencepiece.model")}
    )
    assert by_file.vocab_size == tokenizer.vocab_size


def test_errors_are_typed(tokenizer, tmp_path):
    untrained = get_registry().build("text_tokenizer", "sentencepiece")
    assert not untrained.is_trained
    with pytest.raises(TokenizationError, match="not trained"):
        untrained.encode("x")
    with pytest.raises(TokenizationError, match="outside"):
        tokenizer.decode([tokenizer.vocab_size])
    with pytest.raises(TokenizationError, match="expected str"):
        tokenizer.encode(b"bytes")
    with pytest.raises(TokenizationError, match="training text 1"):
        untrained.train(["ok", 5])
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(TokenizationError, match=r"bad\.model"):
        get_registry().build("text_tokenizer", "sentencepiece", {"model_file": str(tmp_path / "bad.model")})
    with pytest.raises(ConfigError, match="vocab_size must be at least"):
        get_registry().build("text_tokenizer", "sentencepiece", {"vocab_size": 100})


def test_a_vocabulary_too_small_for_the_corpus_says_which_option_to_change():
    texts = ["".join(chr(0x4E00 + i + j) for j in range(20)) for i in range(0, 3000, 7)]  # ~3,000 characters
    tokenizer = get_registry().build("text_tokenizer", "sentencepiece", {"vocab_size": 300})
    with pytest.raises(TokenizationError) as info:
        tokenizer.train(texts)
    message = str(info.value)
    assert "sentencepiece option vocab_size=300 is too small for this corpus" in message
    needed = int(message.split("Set vocab_size to at least ")[1].split(",")[0])
    assert "character_coverage" in message and "--character_coverage" not in message  # our option names
    roomy = get_registry().build("text_tokenizer", "sentencepiece", {"vocab_size": needed, "input_sentence_size": 0})
    roomy.train(texts)  # the size the message asked for is enough
    assert roomy.decode(roomy.encode(texts[0])) == texts[0]


@pytest.mark.parametrize("coverage", [0.5, 0.97, 1.01])
def test_character_coverage_is_checked_against_sentencepiece_bounds(coverage):
    with pytest.raises(ConfigError, match=r"character_coverage must be in \[0.98, 1.0\]"):
        get_registry().build("text_tokenizer", "sentencepiece", {"character_coverage": coverage})
