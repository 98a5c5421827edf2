"""Audio through the ordinary Pipeline: documents <-> ids, JSONL, saved pipelines, every generation mode."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import pytest
import torch
from chameleon_audio import AudioModality, Waveform
from chameleon_audio.tones import caption
from hypothesis import given

import chameleon_sdk as cs

CAPTIONS = [caption(p, ms) for p in (220, 330, 440) for ms in (40, 80)]


@pytest.fixture(scope="module")
def pipe():
    with cs.use_registry():
        config = cs.PipelineConfig(
            text_tokenizer={"name": "sentencepiece", "options": {"vocab_size": 300}},
            modalities=[{"name": "audio", "options": {"downsample": 8, "bits": 6, "max_seconds": 0.01}}],
            model=cs.ModelConfig(dim=32, num_layers=2, num_heads=2, max_seq_len=256),
        )
        pipe = cs.Pipeline.from_config(config)
        pipe.train_text_tokenizer(CAPTIONS * 20)
        torch.manual_seed(0)
        pipe.model = pipe.build_model()
        yield pipe


def _audio_of(doc: cs.Document) -> list[Waveform]:
    return [s.payload for s in doc if isinstance(s, cs.Segment) and s.modality == "audio"]


def test_the_vocabulary_gets_a_variable_length_audio_block(pipe):
    block = pipe.vocabulary.block("audio")
    assert block.size == 64 and block.block_length is None


@given(
    st.lists(
        st.one_of(
            st.sampled_from(CAPTIONS).map(cs.Text),
            st.tuples(st.integers(100, 700), st.integers(1, 200)).map(lambda t: Waveform.tone(t[0], t[1] / 16000)),
        ),
        max_size=4,
    )
)
def test_text_and_audio_documents_tokenize_and_detokenize(pipe, parts):
    doc = cs.Document([p if isinstance(p, cs.Text) else cs.Segment("audio", p) for p in parts])
    ids = pipe.tokenize(doc)
    back = pipe.detokenize(ids)
    audio = pipe.modalities["audio"]
    # the codec is lossy, so compare with what the modality makes of each clip; ids are exact
    expected = [
        s if isinstance(s, cs.Text) else cs.Segment("audio", audio.decode(audio.encode(s.payload))) for s in doc
    ]
    assert back == cs.Document(expected)
    assert pipe.tokenize(back) == ids


def test_the_block_sits_between_begin_and_end_of_audio(pipe):
    clip = Waveform.tone(440, 0.004)  # 64 samples -> 8 codes
    ids = pipe.tokenize(cs.Document.of("a 440 Hz tone", cs.Segment("audio", clip)), eos=True)
    block = pipe.vocabulary.block("audio")
    start = ids.index(block.begin_id)
    assert ids[start + 9] == block.end_id and ids[-1] == pipe.vocabulary.specials["eos"]
    assert (
        pipe.vocabulary.ids_to_codes("audio", ids[start + 1 : start + 9]).tolist()
        == pipe.modalities["audio"].encode(clip).tolist()
    )


def test_unterminated_blocks_are_errors_or_partial_clips(pipe):
    ids = pipe.tokenize(cs.Document.of(cs.Segment("audio", Waveform.tone(440, 0.004))))[:-1]
    with pytest.raises(cs.TokenizationError, match="never closed"):
        pipe.detokenize(ids)
    partial = _audio_of(pipe.detokenize(ids, strict=False))
    assert len(partial) == 1 and len(partial[0]) == 64  # decode_partial keeps the codes that came


def test_jsonl_documents_carry_audio_as_base64_wav(pipe, tmp_path):
    clip = Waveform.from_json(Waveform.tone(330, 0.01).to_json())  # 16-bit exact, as JSON stores it
    doc = cs.Document.of("a 330 Hz tone", clip)  # a Waveform is routed to the audio modality
    assert doc.segments[1] == cs.Segment("audio", clip)
    cs.write_jsonl([doc], tmp_path / "d.jsonl")
    assert json.loads((tmp_path / "d.jsonl").read_text())["segments"][1]["payload"] == clip.to_json()
    (back,) = cs.read_jsonl(tmp_path / "d.jsonl")
    assert back == doc
    assert pipe.tokenize(back) == pipe.tokenize(doc)


def test_documents_with_audio_render(tmp_path):
    from chameleon_sdk.render import document_to_text, write_document

    doc = cs.Document.of("hear ", Waveform.tone(330, 0.25))
    assert document_to_text(doc) == "hear [audio 0.25 s]"
    page = write_document(tmp_path / "o.html", [("out", doc)]).read_text()
    assert '<audio controls src="data:audio/wav;base64,' in page


def test_a_saved_pipeline_loads_with_its_audio_modality(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    with cs.use_registry():
        loaded = cs.Pipeline.from_pretrained(tmp_path / "p")
    assert isinstance(loaded.modalities["audio"], AudioModality) and loaded.vocabulary == pipe.vocabulary
    doc = cs.Document.of("x", cs.Segment("audio", Waveform.tone(220, 0.002)))
    assert loaded.tokenize(doc) == pipe.tokenize(doc)


def test_audio_mode_makes_one_bounded_clip_through_the_audio_constraint(pipe):
    """max_seconds=0.01 at downsample 8 is 20 codes: the modality's own constraint closes the block."""
    events = list(pipe.stream(["a 440 Hz tone", "a 220 Hz tone"], mode="audio", max_new_tokens=50, seed=0))
    done = [e for e in events if isinstance(e, cs.BlockDone)]
    assert [e.modality for e in events if isinstance(e, cs.BlockStarted)] == ["audio", "audio"]
    assert len(done) == 2 and all(isinstance(e.payload, Waveform) for e in done)
    assert all(8 <= len(e.payload) <= 20 * 8 for e in done)
    finished = [e for e in events if isinstance(e, cs.Finished)]
    assert sorted(e.reason for e in finished) == ["done", "done"]
    assert all(len(_audio_of(e.document)) == 1 for e in finished)


def test_a_block_cut_by_the_token_budget_keeps_its_codes(pipe):
    """Audio blocks vary in length, so max_new_tokens can end one early: the row's document keeps the
    clip ``decode_partial`` makes of the codes so far (previews stream meanwhile)."""
    events = list(pipe.stream("a 440 Hz tone", mode="audio", max_new_tokens=6, progress_every=2, seed=0))
    previews = [e for e in events if isinstance(e, cs.BlockProgress)]
    finished = events[-1]
    assert isinstance(finished, cs.Finished) and finished.reason == "max_tokens"
    assert [len(p.preview) for p in previews] == [16, 32, 48] and len(_audio_of(finished.document)[0]) == 48


def test_text_mode_never_opens_an_audio_block(pipe):
    doc = pipe.generate(
        cs.Document.of("a 440 Hz tone", cs.Segment("audio", Waveform.tone(440, 0.004))), max_new_tokens=12
    )
    assert not _audio_of(doc)


def test_interleaved_mode_can_open_and_must_close_audio_blocks(pipe):
    """An untrained model rarely picks begin-of-audio, so bias its head towards it; the constraint must
    then still end every block within max_seconds and hand control back to text."""
    model = pipe.build_model()
    bias = torch.zeros(model.config.vocab_size)
    bias[pipe.vocabulary.block("audio").begin_id] = 50.0  # the most likely token wherever it is allowed
    model.output.register_forward_hook(lambda module, inputs, logits: logits + bias)
    doc = pipe.generate("a 440 Hz tone", mode="interleaved", max_new_tokens=60, model=model, seed=0)
    clips = _audio_of(doc)
    assert len(clips) >= 2  # a block, forced closed after 20 codes, then begin-of-audio again
    assert all(len(c) == 20 * 8 for c in clips[:2])
