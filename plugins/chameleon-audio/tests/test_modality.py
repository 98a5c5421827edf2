"""The modality: the Modality protocol, accepted payloads, options, the block constraint, registration."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from chameleon_audio import AudioBlock, AudioModality, AudioOptions, Waveform
from chameleon_audio.tones import snr_db
from hypothesis import given

from chameleon_sdk import ConfigError, TokenizationError, Vocabulary, plugin_api
from chameleon_sdk.plugin_api import Modality


@pytest.fixture(scope="module")
def audio():
    return AudioModality(AudioOptions(downsample=8, bits=8))


def test_it_is_a_modality_with_variable_length_blocks(audio):
    assert isinstance(audio, Modality)
    assert audio.codebook_size == 256 and audio.block_length is None
    assert audio.payload_types == (Waveform,)
    assert audio.codes_per_second == 2000 and audio.codes_for(0.1) == 200 and audio.codes_for(0.0001) == 1


@given(st.integers(2, 10), st.sampled_from([1, 2, 4, 8]), st.data())
def test_decode_then_encode_gives_the_codes_back(bits, factor, data):
    audio = AudioModality(AudioOptions(downsample=factor, bits=bits))
    codes = torch.tensor(data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=80)), dtype=torch.long)
    clip = audio.decode(codes)
    assert clip.sample_rate == 16000 and len(clip) == len(codes) * factor
    assert torch.equal(audio.encode(clip), codes)


@given(
    st.lists(st.tuples(st.floats(50, 750), st.floats(0.05, 0.3), st.floats(0, 6.3)), min_size=1, max_size=3),
    st.integers(800, 3200),
)
def test_encode_then_decode_keeps_band_limited_signals(partials, n):
    """Sums of sines below 750 Hz (the kept band is 0-1 kHz at downsample 8) come back at > 20 dB, any length."""
    t = np.arange(n) / 16000
    clip = Waveform(sum(a * np.sin(2 * np.pi * f * t + p) for f, a, p in partials))
    audio = AudioModality(AudioOptions(downsample=8))
    codes = audio.encode(clip)
    assert len(codes) == -(-n // 8) and codes.dtype == torch.long
    assert snr_db(clip, audio.decode(codes)) > 20


def test_every_payload_form_encodes_the_same(audio, tmp_path):
    tone = Waveform(np.round(Waveform.tone(440, 0.02).samples * 32768) / 32768)  # on the 16-bit grid
    path = tone.write_wav(tmp_path / "tone.wav")
    expected = audio.encode(tone)
    for payload in (tone.to_json(), tone.to_wav_bytes(), path, tone.samples.copy(), torch.tensor(tone.samples)):
        assert torch.equal(audio.encode(payload), expected), type(payload)
    assert audio.encode(Waveform([])).tolist() == [] and len(audio.decode(torch.zeros(0, dtype=torch.long))) == 0


def test_bad_payloads_and_codes_raise_typed_errors(audio):
    with pytest.raises(TokenizationError, match="8000 Hz; the audio modality expects 16000 Hz"):
        audio.encode(Waveform(np.zeros(10), 8000))
    with pytest.raises(TokenizationError, match="cannot encode a str"):
        audio.encode("tone.wav")
    with pytest.raises(TokenizationError, match="code 256 is outside the codebook"):
        audio.decode(torch.tensor([1, 256]))
    with pytest.raises(TokenizationError, match="1-D integer tensor"):
        audio.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TokenizationError, match="1-D integer tensor"):
        audio.decode(torch.zeros(3))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"downsample": 0}, "downsample must be >= 1"),
        ({"bits": 1}, "bits must be >= 2"),
        ({"bits": 17}, "bits"),
        ({"min_seconds": 2.0, "max_seconds": 1.0}, "max_seconds .* must be >= min_seconds"),
        ({"sample_rate": 8000}, "sample_rate"),
    ],
)
def test_bad_options_raise_config_errors(registry, options, message):
    with pytest.raises(ConfigError, match=message):
        registry.build("modality", "audio", options)


def test_block_constraint_bounds_the_clip_length(registry):
    options = {"downsample": 8, "min_seconds": 0.001, "max_seconds": 0.002}  # 2 .. 4 codes
    audio = registry.build("modality", "audio", options)
    assert audio.name == "audio"  # the registry told it its name
    vocab = Vocabulary.appended(text_size=10, bos_id=0, eos_id=1, pad_id=2, modalities={"audio": 256})
    constraint = audio.block_constraint(vocab)
    assert isinstance(constraint, AudioBlock) and isinstance(constraint, plugin_api.BlockConstraint)
    assert (constraint.min_codes, constraint.max_codes, constraint.tokens_needed) == (2, 4, 4)
    allowed = constraint.allowed(torch.tensor([0, 2, 4]))
    block = vocab.block("audio")
    codes = vocab.code_mask("audio")
    assert torch.equal(allowed[0], codes)  # too short to end
    assert torch.equal(allowed[1], codes | (torch.arange(vocab.size) == block.end_id))  # may end or go on
    assert allowed[2].nonzero().flatten().tolist() == [block.end_id]  # full: must end
    with pytest.raises(ConfigError, match="min_codes <= max_codes"):
        AudioBlock(vocab, block, min_codes=3, max_codes=2)


def test_the_entry_point_registers_audio_from_its_own_distribution(registry):
    record = next(r for r in registry.records("modality") if r.name == "audio")
    assert record.provider == "chameleon-audio" and record.options is AudioOptions
    assert isinstance(registry.build("modality", "audio", {"downsample": 2}), AudioModality)


def test_the_cli_lists_the_plugin(capsys):
    from chameleon_sdk.cli import main

    assert main(["plugins", "--kind", "modality"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if " audio " in line)
    assert "chameleon-audio" in line
