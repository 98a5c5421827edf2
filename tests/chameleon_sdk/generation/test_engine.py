"""The decode engine: modality switching, budgets, CFG arithmetic, ragged batches, stopping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.generation import Guidance, TokenDecoder, generate_tokens

BLOCK = 4


@pytest.fixture(scope="module")
def vocab():
    return cs.Vocabulary.appended(
        text_size=40, bos_id=0, eos_id=2, pad_id=1, modalities={"image": 12}, block_lengths={"image": BLOCK}
    )


@pytest.fixture(scope="module")
def model(vocab):
    torch.manual_seed(0)
    config = cs.ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, vocab_size=vocab.size, max_seq_len=128)
    return cs.build_model(config, attention="eager").eval()


def _reference_greedy(model, prompt, steps, allowed_fn):
    """Greedy decoding by full forward passes (no cache), masking with ``allowed_fn(generated)``."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1]
            logits = logits.masked_fill(~allowed_fn(out), float("-inf"))
            token = int(logits.argmax())
            out.append(token)
            ids.append(token)
    return out


def test_text_mode_matches_uncached_greedy(model, vocab):
    allowed = vocab.text_mask().clone()
    allowed[[vocab.specials["eos"], vocab.specials["eot"]]] = True
    expected = _reference_greedy(model, [0, 5, 9], 10, lambda _: allowed)
    got = generate_tokens(model, [0, 5, 9], max_new_tokens=10, vocabulary=vocab)
    stop = [i for i, t in enumerate(expected) if t in (2, vocab.specials["eot"])]
    expected = expected[: stop[0] + 1] if stop else expected
    assert got.tolist() == expected
    assert all(vocab.text_mask()[t] or t in (2, vocab.specials["eot"]) for t in got.tolist())


@settings(max_examples=15)
@given(st.lists(st.lists(st.integers(3, 39), min_size=1, max_size=9), min_size=2, max_size=4))
def test_ragged_batch_equals_one_prompt_at_a_time(model, vocab, prompts):
    prompts = [[0, *p] for p in prompts]
    batch = generate_tokens(model, prompts, max_new_tokens=6, vocabulary=vocab, mode="interleaved")
    for row, prompt in zip(batch.tolist(), prompts):
        alone = generate_tokens(model, prompt, max_new_tokens=6, vocabulary=vocab, mode="interleaved").tolist()
        assert row[: len(alone)] == alone
        assert all(t == vocab.specials["pad"] for t in row[len(alone) :])


@settings(max_examples=15)
@given(st.lists(st.lists(st.integers(3, 39), min_size=1, max_size=9), min_size=2, max_size=4), st.integers(0, 5))
def test_without_a_vocabulary_a_batch_whose_rows_stop_apart_equals_one_prompt_at_a_time(model, prompts, stop_at):
    prompts = [[0, *p] for p in prompts]
    free = generate_tokens(model, prompts[0], max_new_tokens=6).tolist()
    stop = free[stop_at]  # row 0 stops at its first such token
    batch = generate_tokens(model, prompts, max_new_tokens=6, stop_ids=[stop]).tolist()
    lengths = []
    for row, prompt in zip(batch, prompts):
        alone = generate_tokens(model, prompt, max_new_tokens=6, stop_ids=[stop]).tolist()
        assert row[: len(alone)] == alone and all(t == 0 for t in row[len(alone) :])  # 0: the pad id
        lengths.append(len(alone))
    assert lengths[0] == free.index(stop) + 1


@pytest.mark.parametrize("vocabulary", [None, "vocab"])
def test_a_sampler_may_return_ids_of_any_integer_dtype(model, vocab, vocabulary):
    def int32_greedy(logits, *, seen=None, generator=None):
        return logits.argmax(dim=-1).int()

    options = {"max_new_tokens": 4, "modes": ["text", "text"], "stop_ids": []}
    decoder = TokenDecoder(
        model, [[0, 3], [0, 4]], **options, vocabulary=vocab if vocabulary else None, samplers={"text": int32_greedy}
    )
    expected = generate_tokens(model, [[0, 3], [0, 4]], max_new_tokens=4, vocabulary=vocab if vocabulary else None)
    assert decoder.run() == expected.tolist()


def test_image_mode_emits_exactly_one_block(model, vocab):
    block = vocab.block("image")
    out = generate_tokens(model, [[0, 7], [0, 8, 9, 10]], max_new_tokens=20, vocabulary=vocab, mode="image")
    assert out.shape == (2, BLOCK + 1)
    assert vocab.code_mask("image")[out[:, :BLOCK]].all()
    assert (out[:, BLOCK] == block.end_id).all()


def _prefer(token_id):
    """A sampler that takes ``token_id`` whenever it is allowed, else the greedy choice."""

    def sampler(logits, *, seen=None, generator=None):
        choice = logits.argmax(dim=-1)
        return torch.where(torch.isfinite(logits[:, token_id]), torch.full_like(choice, token_id), choice)

    return sampler


def test_interleaved_blocks_are_complete_and_fit_the_budget(model, vocab):
    block = vocab.block("image")
    out = generate_tokens(
        model, [0, 5], max_new_tokens=15, vocabulary=vocab, mode="interleaved", sampler=_prefer(block.begin_id)
    )
    tokens = out.tolist()
    # begin at 0, 4 codes, end; begin at 6, 4 codes, end at 11; 3 tokens left < 6 needed: no third begin
    assert tokens[0] == block.begin_id and tokens[5] == block.end_id
    assert tokens[6] == block.begin_id and tokens[11] == block.end_id
    assert block.begin_id not in tokens[12:]
    assert vocab.code_mask("image")[torch.tensor(tokens[1:5] + tokens[7:11])].all()
    assert len(tokens) == 15


def test_text_mode_never_begins_a_block(model, vocab):
    block = vocab.block("image")
    out = generate_tokens(model, [0, 5], max_new_tokens=8, vocabulary=vocab, sampler=_prefer(block.begin_id))
    assert block.begin_id not in out.tolist()


def test_stop_token_ends_only_its_row(model, vocab):
    eos = vocab.specials["eos"]
    calls = []

    def eos_for_row0_on_third_step(logits, *, seen=None, generator=None):
        calls.append(logits.shape[0])
        tokens = logits.argmax(dim=-1)
        tokens[tokens == eos] = 3  # keep greedy away from eos: only the forced one counts
        if len(calls) == 3:
            tokens[0] = eos
        return tokens

    decoder = TokenDecoder(
        model,
        [[0, 3], [0, 4]],
        max_new_tokens=8,
        modes=["text", "text"],
        vocabulary=vocab,
        samplers={"text": eos_for_row0_on_third_step},
        stop_ids=[eos],
    )
    rows = decoder.run()
    assert rows[0][-1] == eos and len(rows[0]) == 3 and decoder.reasons[0] == "stop"
    assert len(rows[1]) == 8 and decoder.reasons[1] == "max_tokens"
    assert calls == [2, 2, 2, 1, 1, 1, 1, 1]  # finished rows are no longer sampled


def test_cfg_arithmetic_three_rows(model, vocab):
    guidance = Guidance(scale_text=3.0, scale_image=1.2)
    begin = vocab.block("image").begin_id
    prompt = [0, 11, 12, 13]
    with torch.no_grad():
        f = model(torch.tensor([[*prompt, begin]])).logits[0, -1]
        i = model(torch.tensor([[0, begin]])).logits[0, -1]  # text removed
        u = model(torch.tensor([[0, begin]])).logits[0, -1]
    expected = u + 1.2 * (i - u) + 3.0 * (f - i)
    captured = {}

    def capture(logits, *, seen=None, generator=None):
        captured.setdefault("first", logits.clone())
        return logits.argmax(dim=-1)

    generate_tokens(
        model, prompt, max_new_tokens=BLOCK + 1, vocabulary=vocab, mode="image", guidance=guidance, sampler=capture
    )
    codes = vocab.code_mask("image")
    torch.testing.assert_close(captured["first"][0, codes], expected[codes], rtol=1e-5, atol=1e-5)
    assert torch.isinf(captured["first"][0, ~codes]).all()


def test_cfg_image_only_row_keeps_images_and_drops_text(model, vocab):
    block = vocab.block("image")
    codes = vocab.codes_to_ids("image", [1, 2, 3, 4]).tolist()
    prompt = [0, 11, block.begin_id, *codes, block.end_id, 12]
    decoder = TokenDecoder(
        model,
        [prompt],
        max_new_tokens=BLOCK + 1,
        modes=["image"],
        vocabulary=vocab,
        samplers={"text": lambda x, **k: x.argmax(-1)},
        guidance=Guidance(),
    )
    full, image_only, uncond = decoder.physical_prompts
    assert full == [*prompt, block.begin_id]
    assert image_only == [0, block.begin_id, *codes, block.end_id, block.begin_id]
    assert uncond == [0, block.begin_id]
    assert len(decoder.run()[0]) == BLOCK + 1


def test_two_row_cfg(model, vocab):
    begin = vocab.block("image").begin_id
    with torch.no_grad():
        f = model(torch.tensor([[0, 20, begin]])).logits[0, -1]
        u = model(torch.tensor([[0, begin]])).logits[0, -1]
    captured = []
    generate_tokens(
        model,
        [0, 20],
        max_new_tokens=BLOCK + 1,
        vocabulary=vocab,
        mode="image",
        guidance=Guidance(rows=2, scale_text=2.0),
        sampler=lambda x, **k: captured.append(x.clone()) or x.argmax(-1),
    )
    codes = vocab.code_mask("image")
    torch.testing.assert_close(captured[0][0, codes], (u + 2.0 * (f - u))[codes], rtol=1e-5, atol=1e-5)


def test_seeded_sampling_reproduces(model, vocab):
    kwargs = dict(
        max_new_tokens=12,
        vocabulary=vocab,
        mode="interleaved",
        sampler={"name": "sample", "options": {"temperature": 1.5}},
    )
    a = generate_tokens(model, [[0, 5], [0, 6, 7]], seed=123, **kwargs)
    b = generate_tokens(model, [[0, 5], [0, 6, 7]], seed=123, **kwargs)
    c = generate_tokens(model, [[0, 5], [0, 6, 7]], seed=124, **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_per_modality_samplers(model, vocab):
    seen_rows = {"text": 0, "image": 0}

    def counting(name):
        def sampler(logits, **kw):
            seen_rows[name] += logits.shape[0]
            return logits.argmax(-1)

        return sampler

    generate_tokens(
        model,
        [0, 5],
        max_new_tokens=BLOCK + 1,
        vocabulary=vocab,
        mode="image",
        sampler=counting("text"),
        samplers={"image": counting("image")},
    )
    assert seen_rows == {"text": 0, "image": BLOCK + 1}


def test_max_time_stops_every_row(model, vocab):
    out = generate_tokens(model, [[0, 5], [0, 6]], max_new_tokens=50, vocabulary=vocab, max_time=0.0)
    assert out.shape == (2, 1)


def test_model_without_vocabulary_generates_plain_text(model):
    out = generate_tokens(model, torch.tensor([[0, 5, 6]]), max_new_tokens=5)
    assert out.shape == (1, 5)


def test_training_mode_is_restored(model, vocab):
    model.train()
    try:
        generate_tokens(model, [0, 5], max_new_tokens=2, vocabulary=vocab)
        assert model.training
    finally:
        model.eval()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(mode="video"), "unknown generation mode 'video'"),
        (dict(mode="image", max_new_tokens=3), "needs 5 new tokens"),
        (dict(max_new_tokens=0), "max_new_tokens must be > 0"),
        (dict(input_ids=[0, 999]), "prompt token 999 is outside"),
        (dict(input_ids=[[]]), "at least one token"),
        (dict(input_ids=torch.tensor([0.5])), "integer tensor"),
        (dict(mode="image", vocabulary=None), "need a vocabulary"),
        (dict(sampler="nucleus"), "no sampler plugin named 'nucleus'"),
        (dict(sampler={"name": "sample", "options": {"top_p": 2.0}}), r"top_p must be in \[0, 1\]"),
    ],
)
def test_bad_requests_are_typed_errors(model, vocab, kwargs, match):
    call = {"input_ids": [0, 5], "max_new_tokens": 8, "vocabulary": vocab, **kwargs}
    with pytest.raises(cs.ChameleonError, match=match):
        generate_tokens(model, call.pop("input_ids"), **call)


@pytest.mark.slow
def test_compiled_decode_step_gives_the_same_tokens(model, vocab):
    prompts = [[0, 5, 6], [0, 7]]
    plain = generate_tokens(model, prompts, max_new_tokens=10, vocabulary=vocab, mode="interleaved")
    compiled = generate_tokens(model, prompts, max_new_tokens=10, vocabulary=vocab, mode="interleaved", compile=True)
    assert torch.equal(plain, compiled)


def test_cfg_in_a_batch_with_mixed_modes_matches_rows_alone(model, vocab):
    guidance = Guidance()
    prompts, modes = [[0, 11, 12], [0, 13], [0, 14, 15, 16]], ["image", "text", "interleaved"]
    batch = generate_tokens(model, prompts, max_new_tokens=BLOCK + 3, vocabulary=vocab, mode=modes, guidance=guidance)
    for row, prompt, mode in zip(batch.tolist(), prompts, modes):
        alone = generate_tokens(model, prompt, max_new_tokens=BLOCK + 3, vocabulary=vocab, mode=mode, guidance=guidance)
        assert row[: len(alone)] == alone.tolist()
    assert vocab.code_mask("image")[batch[0, :BLOCK]].all() and batch[0, BLOCK] == vocab.block("image").end_id


@pytest.mark.parametrize(
    ("emit_eos", "max_new_tokens", "expected"),
    [
        (True, 1, cs.FinishReason.STOP),  # stop, max_tokens and max_time all apply at step 1
        (False, 1, cs.FinishReason.MAX_TOKENS),  # max_tokens and max_time apply
        (False, 5, cs.FinishReason.MAX_TIME),  # only the (already passed) deadline applies
    ],
)
def test_the_first_reason_in_priority_order_is_reported(model, vocab, emit_eos, max_new_tokens, expected):
    eos = vocab.specials["eos"]

    def sampler(logits, *, seen=None, generator=None):
        tokens = logits.argmax(dim=-1)
        tokens[tokens == eos] = 3
        if emit_eos:
            tokens[:] = eos
        return tokens

    decoder = TokenDecoder(
        model, [[0, 3]], max_new_tokens=max_new_tokens, modes=["text"], vocabulary=vocab,
        samplers={"text": sampler}, stop_ids=[eos], max_time=0.0,
    )  # fmt: skip
    rows = decoder.run()
    assert len(rows[0]) == 1 and decoder.reasons == [expected]
    assert isinstance(decoder.reasons[0], cs.FinishReason)


def test_finish_reasons_are_strings_in_json():
    import json

    assert json.dumps({"reason": cs.FinishReason.MAX_TIME}) == '{"reason": "max_time"}'
    assert cs.FinishReason("stop_string") is cs.FinishReason.STOP_STRING


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 4),
    max_new_tokens=st.integers(1, 6),
    finish_at=st.dictionaries(st.integers(0, 3), st.integers(0, 5), max_size=3),
)
def test_ended_agrees_with_the_done_rows(model, vocab, rows, max_new_tokens, finish_at):
    # ``ended`` is read from the host-side reasons (no device sync); it must say what ``done`` says
    decoder = TokenDecoder(
        model,
        [[0, 3 + r] for r in range(rows)],
        max_new_tokens=max_new_tokens,
        modes=["text"] * rows,
        vocabulary=vocab,
        samplers={"text": lambda logits, **_: torch.full((logits.shape[0],), 5)},
        stop_ids=[],
    )
    assert decoder.ended is False
    for step, _ in enumerate(decoder.steps()):
        assert decoder.ended == bool(decoder.done.all())
        for row, at in finish_at.items():
            if row < rows and at == step:
                decoder.finish(row, cs.FinishReason.STOP)
                assert decoder.ended == bool(decoder.done.all())
    assert decoder.ended and bool(decoder.done.all())


def test_a_text_step_with_every_row_live_reads_the_device_once(model, vocab):
    # on a GPU each read of a device value waits for the step's kernels: which rows are live is
    # known on the host, so only the finished-rows check of each step reads the device
    steps, greedy = 6, lambda logits, **_: logits.argmax(-1)
    decoder = TokenDecoder(
        model, [[0, 5], [0, 7, 9]], max_new_tokens=steps, modes=["text"] * 2, vocabulary=vocab,
        samplers={"text": greedy}, stop_ids=[],
    )  # fmt: skip
    with torch.profiler.profile() as profile:
        tokens = decoder.run()
    assert [len(row) for row in tokens] == [steps, steps]
    assert sum(event.count for event in profile.key_averages() if event.key == "aten::nonzero") == steps
