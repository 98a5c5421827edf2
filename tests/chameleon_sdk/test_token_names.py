"""The released token names (``vocabulary_map``, ``tokenizer.json``) <-> Vocabulary."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import CheckpointError
from chameleon_sdk.token_names import image_code, image_name, names_from_vocabulary, vocabulary_from_names


@given(st.integers(0, 10**6))
def test_image_names_round_trip(code):
    name = image_name(code)
    assert name.startswith("IMGIMG") and name[6:-1].isalpha() and name[6:-1].isupper()
    assert image_code(name) == code


def test_image_name_matches_the_released_spelling():
    # "the code's digits written as letters A-J, plus a final character"
    assert image_code("IMGIMGBDCZ") == 132
    assert image_code("IMGIMGAQ") == 0
    with pytest.raises(CheckpointError, match="not an image token name"):
        image_code("IMGIMGxyZ")


def _released_style_map(num_codes: int, offset: int, text: int) -> dict[str, int]:
    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    names |= {image_name(c): offset + c for c in range(num_codes)}
    after = offset + num_codes
    names |= {"<eoss>": after, "<racm3:break>": after + 1, "<reserved08706>": after + 2, "<image>": after + 3}
    names |= {f"tok{i}": after + 4 + i for i in range(text)}
    return names


@given(num_codes=st.integers(1, 40), offset=st.integers(4, 10), text=st.integers(0, 20), data=st.data())
def test_vocabulary_from_names_places_codes_and_specials(num_codes, offset, text, data):
    names = _released_style_map(num_codes, offset, text)
    size = max(names.values()) + 1
    shuffled = data.draw(st.permutations(list(range(num_codes))))
    codes = {image_name(c): offset + shuffled[c] for c in range(num_codes)}
    names |= codes
    vocab = vocabulary_from_names(names, size=size)
    assert vocab.specials["bos"] == 0 and vocab.specials["pad"] == 1 and vocab.specials["eos"] == 2
    assert vocab.specials["eot"] == names["<reserved08706>"]
    assert vocab.specials["<image>"] == names["<image>"]
    assert vocab.specials["<unk>"] == 3
    block = vocab.blocks["image"]
    assert (block.begin_id, block.end_id) == (names["<racm3:break>"], names["<eoss>"])
    for c in range(num_codes):
        assert int(vocab.codes_to_ids("image", [c])[0]) == codes[image_name(c)]
    text_ids = torch.nonzero(vocab.text_mask()).flatten().tolist()
    unnamed = list(range(4, offset))  # ids no name claims are plain text
    assert text_ids == unnamed + [names[f"tok{i}"] for i in range(text)]


@given(num_codes=st.integers(1, 40), offset=st.integers(4, 10), text=st.integers(0, 20))
def test_names_from_vocabulary_inverts_vocabulary_from_names(num_codes, offset, text):
    names = _released_style_map(num_codes, offset, text)
    vocab = vocabulary_from_names(names, size=max(names.values()) + 1)
    regenerated = names_from_vocabulary(vocab)
    assert regenerated == {k: v for k, v in names.items() if not k.startswith("tok")}
    assert vocabulary_from_names(regenerated, size=vocab.size) == vocab


def test_released_layout_is_recognised():
    names = _released_style_map(8192, 4, 0)
    assert vocabulary_from_names(names, size=65536).layout == "chameleon"
    assert vocabulary_from_names(_released_style_map(8, 4, 0), size=64).layout == "hf"


def test_fallback_ids_fill_missing_roles():
    names = {image_name(0): 5, "<racm3:break>": 6, "<eoss>": 7}
    vocab = vocabulary_from_names(names, size=10, fallback_ids={"bos": 1, "eos": 2, "pad": 3})
    assert (vocab.specials["bos"], vocab.specials["eos"], vocab.specials["pad"]) == (1, 2, 3)
    with pytest.raises(CheckpointError, match="no '<pad>' token and no pad_token_id"):
        vocabulary_from_names(names, size=10, fallback_ids={"bos": 1, "eos": 2, "pad": None})
    with pytest.raises(CheckpointError, match="claimed twice"):
        vocabulary_from_names(names, size=10, fallback_ids={"bos": 1, "eos": 2, "pad": 2})


def test_malformed_maps_are_refused():
    base = {"<s>": 0, "<pad>": 1, "</s>": 2}
    with pytest.raises(CheckpointError, match="missing \\[1\\]"):
        vocabulary_from_names(base | {image_name(0): 4, image_name(2): 5, "<racm3:break>": 6, "<eoss>": 7}, size=10)
    with pytest.raises(CheckpointError, match="no '<racm3:break>'"):
        vocabulary_from_names(base | {image_name(0): 4}, size=10)
    with pytest.raises(CheckpointError, match="mapping of token names to integer ids"):
        vocabulary_from_names({"<s>": "0"}, size=10)
