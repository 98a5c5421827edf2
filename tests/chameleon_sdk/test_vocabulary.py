"""The unified vocabulary: exact Chameleon ids, appended layout, vectorised code <-> id maps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import ConfigError, TokenizationError, Vocabulary


def test_chameleon_layout_matches_released_checkpoints():
    vocab = Vocabulary.chameleon()
    assert vocab.size == 65536
    assert vocab.specials == {"bos": 0, "pad": 1, "eos": 2, "eot": 8710}
    image = vocab.block("image")
    assert (image.begin_id, image.end_id, image.size) == (8197, 8196, 8192)
    assert vocab.codes_to_ids("image", [0, 1, 8191]).tolist() == [4, 5, 8195]
    assert vocab.ids_to_codes("image", torch.tensor([[4, 8195]])).tolist() == [[0, 8191]]
    text = vocab.text_mask()
    assert not text[[0, 1, 2, 4, 8195, 8196, 8197, 8710]].any()
    assert text[[3, 8198, 65535]].all()


def test_chameleon_layout_appends_other_modalities():
    vocab = Vocabulary.chameleon(extra_modalities={"audio": 10})
    audio = vocab.block("audio")
    assert (audio.begin_id, audio.end_id) == (65536, 65537)
    assert vocab.codes_to_ids("audio", [0, 9]).tolist() == [65538, 65547]
    assert vocab.size == 65548
    with pytest.raises(ConfigError, match="fixed at 8192"):
        Vocabulary.chameleon(extra_modalities={"image": 1024})


def test_appended_layout():
    vocab = Vocabulary.appended(text_size=100, bos_id=0, eos_id=2, pad_id=1, modalities={"image": 16, "audio": 4})
    assert vocab.specials["eot"] == 100
    assert (vocab.block("image").begin_id, vocab.block("image").end_id) == (101, 102)
    assert vocab.codes_to_ids("image", [0, 15]).tolist() == [103, 118]
    assert (vocab.block("audio").begin_id, vocab.codes_to_ids("audio", [3]).item()) == (119, 124)
    assert vocab.size == 125
    assert int(vocab.text_mask().sum()) == 97  # 100 text ids less bos/eos/pad
    assert vocab.modalities == ["image", "audio"]


@st.composite
def vocab_and_codes(draw):
    sizes = draw(st.dictionaries(st.sampled_from(["image", "audio", "digits"]), st.integers(1, 300), min_size=1))
    layout = draw(st.sampled_from(["appended", "chameleon"]))
    if layout == "chameleon":
        sizes.pop("image", None)
        vocab = Vocabulary.chameleon(extra_modalities=sizes)
        sizes["image"] = 8192
    else:
        vocab = Vocabulary.appended(text_size=draw(st.integers(3, 500)), bos_id=0, eos_id=2, pad_id=1, modalities=sizes)
    name = draw(st.sampled_from(sorted(sizes)))
    codes = draw(st.lists(st.integers(0, sizes[name] - 1), max_size=64))
    return vocab, name, codes


@given(vocab_and_codes())
def test_codes_ids_round_trip(case):
    vocab, name, codes = case
    ids = vocab.codes_to_ids(name, codes)
    assert vocab.code_mask(name)[ids].all()
    assert vocab.ids_to_codes(name, ids).tolist() == codes


@given(vocab_and_codes())
def test_json_round_trip(case):
    vocab = case[0]
    assert Vocabulary.from_json(vocab.to_json()) == vocab


def test_bad_codes_and_ids_are_typed_errors():
    vocab = Vocabulary.appended(text_size=10, bos_id=0, eos_id=2, pad_id=1, modalities={"image": 4})
    with pytest.raises(TokenizationError, match="image code 4 is outside the codebook"):
        vocab.codes_to_ids("image", [4])
    with pytest.raises(TokenizationError, match="outside the codebook"):
        vocab.codes_to_ids("image", [-1])
    with pytest.raises(TokenizationError, match=r"token id 3 is not a code of modality .image."):
        vocab.ids_to_codes("image", [3])
    with pytest.raises(TokenizationError, match="outside the vocabulary"):
        vocab.ids_to_codes("image", [999])
    with pytest.raises(TokenizationError, match="no modality 'audio'"):
        vocab.codes_to_ids("audio", [0])
    with pytest.raises(TokenizationError, match="must be integers"):
        vocab.codes_to_ids("image", torch.tensor([0.5]))


def test_overlapping_ids_are_refused():
    with pytest.raises(ConfigError, match="claimed twice"):
        Vocabulary(layout="appended", size=10, specials={"bos": 0, "eos": 0, "pad": 1})
