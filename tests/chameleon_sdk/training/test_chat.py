"""Chat-format SFT data: conversation JSON, tokens and loss mask over any turn structure, packing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.training.chat import chat_prompt_tokens, chat_tokens
from chameleon_sdk.training.data import IGNORE, MixtureData

segments = st.one_of(
    st.text(alphabet="abcdef xyz?.", min_size=1, max_size=20).map(cs.Text),
    st.lists(st.integers(0, 9), min_size=3, max_size=3).map(lambda d: cs.Segment("digits", d)),
)
documents = st.lists(segments, min_size=1, max_size=3).map(cs.Document).filter(lambda d: len(d) > 0)


@st.composite
def conversations(draw) -> cs.Conversation:
    """An optional system turn, then 1-4 user/assistant exchanges."""
    turns = [cs.Turn("system", draw(documents))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        turns += [cs.Turn("user", draw(documents)), cs.Turn("assistant", draw(documents))]
    return cs.Conversation(turns)


@settings(max_examples=40)
@given(conversation=conversations())
def test_tokens_are_the_turns_between_end_of_turn_tokens_and_only_the_assistant_counts(pipe, conversation):
    ((ids, mask),) = chat_tokens(pipe, [conversation])
    bos, eos, eot = (pipe.vocabulary.specials[k] for k in ("bos", "eos", "eot"))
    expected_ids, expected_mask = [bos], [0]
    for i, turn in enumerate(conversation.turns):
        body = pipe.tokenize(turn.content, bos=False)
        closing = eos if i == len(conversation.turns) - 1 else eot
        expected_ids += [*body, closing]
        expected_mask += [int(turn.role == "assistant")] * (len(body) + 1)
    assert ids == expected_ids
    assert mask == expected_mask
    assert ids.count(eot) == len(conversation.turns) - 1 and ids[-1] == eos
    # what counts is exactly the assistant's tokens, each turn closed by its eot (or the final eos)
    counted = [t for t, m in zip(ids, mask) if m]
    answers = [[*pipe.tokenize(t.content, bos=False), eot] for t in conversation.turns if t.role == "assistant"]
    answers[-1][-1] = eos
    assert counted == [t for answer in answers for t in answer]


@settings(max_examples=40)
@given(conversation=conversations())
def test_a_chat_prompt_is_the_conversation_up_to_the_last_answer(pipe, conversation):
    """What generation reads for a chat so far is exactly what fine-tuning put before that answer."""
    ((ids, mask),) = chat_tokens(pipe, [conversation])
    (prompt,) = chat_prompt_tokens(pipe, [cs.ChatPrompt(conversation.turns[:-1])])
    answer = len(pipe.tokenize(conversation.turns[-1].content, bos=False)) + 1  # and its closing eos
    assert prompt == ids[:-answer]
    assert prompt[-1] == pipe.vocabulary.specials["eot"] and mask[len(prompt)] == 1


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([("user", "hi"), ("assistant", "yo")], "must end with the user's turn"),
        ([("assistant", "yo"), ("user", "hi")], "must alternate, starting with the user"),
        ([("system", "be brief")], "must end with the user's turn"),
    ],
)
def test_bad_chat_prompts_are_refused(turns, message):
    with pytest.raises(cs.DocumentError, match=message):
        cs.ChatPrompt.of(*turns)


@settings(max_examples=20)
@given(prompt=documents, answer=documents)
def test_a_prompt_answer_record_is_a_one_exchange_conversation(pipe, prompt, answer):
    ((ids, mask),) = chat_tokens(pipe, [cs.Conversation.from_prompt_answer(prompt, answer)])
    eot = pipe.vocabulary.specials["eot"]
    head = [*pipe.tokenize(prompt), eot]
    reply = pipe.tokenize(answer, bos=False, eos=True)
    assert ids == head + reply
    assert mask == [0] * len(head) + [1] * len(reply)


@settings(max_examples=20)
@given(conversation=conversations())
def test_json_round_trip(conversation):
    data = json.loads(json.dumps(conversation.to_json()))
    assert cs.Conversation.from_json(data) == conversation


@settings(max_examples=15)
@given(chats=st.lists(conversations(), min_size=1, max_size=6), seq_len=st.integers(24, 64))
def test_packed_batches_count_exactly_the_assistant_tokens(pipe, tmp_path_factory, chats, seq_len):
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps(c.to_json()) + "\n" for c in chats), encoding="utf-8")
    config = cs.DataConfig(sources=(cs.SourceConfig(path=str(path), sft=True),), seq_len=seq_len, batch_size=4)
    data = MixtureData(pipe, config, total_steps=2)
    tokens = chat_tokens(pipe, chats)
    trained_pairs = {(ids[i - 1], ids[i]) for ids, mask in tokens for i in range(1, len(ids)) if mask[i]}
    batch = data.batch_at(0)
    counted = batch.targets != IGNORE
    assert counted.any() or all(len(ids) > seq_len + 1 for ids, _ in tokens)
    for x, y in zip(batch.input_ids[counted].tolist(), batch.targets[counted].tolist()):
        assert (x, y) in trained_pairs
    fits = [ids for ids, _ in tokens if len(ids) <= seq_len + 1]
    if len(fits) == len(tokens):  # nothing split: every source row holds whole conversations
        source = data.sources[0]
        assert int(source.row_mask.sum()) == sum(sum(mask) for _, mask in tokens)


def test_images_in_user_turns_are_prompt_and_in_assistant_turns_are_trained(pipe):
    digits = cs.Segment("digits", [1, 2, 3])
    describe = cs.Conversation.of(("user", ["what is this? ", digits]), ("assistant", "three digits"))
    draw = cs.Conversation.of(("user", "draw three digits"), ("assistant", digits))
    block = pipe.vocabulary.block("digits")
    for conversation, image_trained in ((describe, False), (draw, True)):
        ((ids, mask),) = chat_tokens(pipe, [conversation])
        image = [m for t, m in zip(ids, mask) if t in {block.begin_id, block.end_id, *block.code_ids.tolist()}]
        assert image and all(m == int(image_trained) for m in image)


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([("user", "hi")], "must end with the assistant's turn"),
        ([("user", "hi"), ("assistant", "yo"), ("user", "bye")], "must end with the assistant's turn"),
        ([("assistant", "yo")], "must alternate, starting with the user"),
        ([("user", "a"), ("user", "b"), ("assistant", "c")], "must alternate"),
        ([("user", "a"), ("system", "b"), ("assistant", "c")], "system turn may only come first"),
        ([("robot", "a"), ("assistant", "c")], "role must be one of"),
    ],
)
def test_bad_turn_structures_are_named(turns, message):
    with pytest.raises(cs.DocumentError, match=message):
        cs.Conversation.of(*turns)


def test_bad_lines_name_file_line_and_turn(pipe, tmp_path):
    path = tmp_path / "chat.jsonl"
    good = cs.Conversation.of(("user", "hi"), ("assistant", "hello")).to_json()
    bad_role = {"turns": [{"role": "bot", "segments": [{"text": "x"}]}]}
    empty = {"turns": [{"role": "user", "segments": []}, {"role": "assistant", "segments": [{"text": "y"}]}]}
    path.write_text("\n".join(json.dumps(x) for x in (good, bad_role, empty)) + "\n", encoding="utf-8")
    config = cs.DataConfig(sources=(cs.SourceConfig(path=str(path), sft=True),), seq_len=16, batch_size=1)
    with pytest.raises(cs.DocumentError, match=r"chat\.jsonl:2, turn 0: role must be one of"):
        MixtureData(pipe, config, total_steps=1)
    lenient = cs.DataConfig(sources=config.sources, seq_len=16, batch_size=1, skip_bad_records=True)
    assert MixtureData(pipe, lenient, total_steps=1).counters == {"skipped_records": 2}
    plain = cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=16, batch_size=1, skip_bad_records=True)
    with pytest.raises(cs.DocumentError, match="need a source with sft = true"):
        MixtureData(pipe, plain, total_steps=1)


def test_the_example_file_parses(tmp_path):
    from pathlib import Path

    from chameleon_sdk.training.data import iter_records

    example = Path(__file__).resolve().parents[3] / "examples" / "configs" / "shapes-chat.jsonl"
    records = list(iter_records(example, skip_bad_records=False, counters={}))
    assert len(records) >= 4 and all(isinstance(r, cs.Conversation) for r in records)
    roles = {t.role for r in records for t in r.turns}
    assert roles == {"system", "user", "assistant"}
    where = {(t.role, type(s).__name__) for r in records for t in r.turns for s in t.content}
    assert {("user", "Image"), ("assistant", "Image"), ("assistant", "Text")} <= where
