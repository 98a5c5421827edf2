"""Configs: strict construction, JSON round trips, TOML reading, precise errors."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chameleon_sdk import (
    ComponentSpec,
    ConfigError,
    ModelConfig,
    PipelineConfig,
    from_dict,
    load_config,
    save_config,
    to_dict,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12)
json_scalars = st.one_of(
    st.integers(-1000, 1000), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), names
)
specs = st.builds(ComponentSpec, name=names, options=st.dictionaries(names, json_scalars, max_size=3))


@st.composite
def model_configs(draw):
    kv = draw(st.integers(1, 4))
    heads = kv * draw(st.integers(1, 4))
    head_dim = 2 * draw(st.integers(1, 16))
    return ModelConfig(
        dim=heads * head_dim,
        num_layers=draw(st.integers(1, 48)),
        num_heads=heads,
        num_kv_heads=draw(st.sampled_from([None, kv])),
        vocab_size=draw(st.one_of(st.none(), st.integers(1, 70000))),
        ffn_dim=draw(st.one_of(st.none(), st.integers(1, 4096))),
        rope_theta=draw(st.floats(1.0, 1e6)),
        max_seq_len=draw(st.integers(1, 8192)),
        dropout=draw(st.floats(0.0, 0.9)),
    )


pipeline_configs = st.builds(
    PipelineConfig,
    text_tokenizer=specs,
    modalities=st.lists(specs, max_size=3, unique_by=lambda s: s.name).map(tuple),
    vocabulary=st.sampled_from(["appended", "chameleon"]),
    attention=specs,
    stability=st.lists(specs, max_size=3).map(tuple),
    trainer=specs,
    sampler=specs,
    checkpoint_format=specs,
    callbacks=st.lists(specs, max_size=2).map(tuple),
    model=st.one_of(st.none(), model_configs()),
)


@given(pipeline_configs)
def test_pipeline_config_json_round_trip(config):
    data = json.loads(json.dumps(to_dict(config)))
    assert from_dict(PipelineConfig, data) == config


@given(model_configs())
def test_model_config_json_round_trip(config):
    assert from_dict(ModelConfig, json.loads(json.dumps(to_dict(config)))) == config


def test_save_and_load_json(tmp_path):
    config = PipelineConfig(modalities=("image",), model=ModelConfig(dim=64, num_layers=2, num_heads=4))
    save_config(config, tmp_path / "c.json")
    assert load_config(tmp_path / "c.json") == config
    assert not list(tmp_path.glob("*.tmp"))


def test_read_toml(tmp_path):
    (tmp_path / "c.toml").write_text(
        """
vocabulary = "chameleon"
stability = ["qk-norm", {name = "z-loss", options = {coef = 1e-5}}]
[text_tokenizer]
name = "sentencepiece"
options = {vocab_size = 4000}
[model]
dim = 64
num_layers = 2
num_heads = 4
num_kv_heads = 2
"""
    )
    config = load_config(tmp_path / "c.toml")
    assert config.vocabulary == "chameleon"
    assert config.stability == (ComponentSpec(name="qk-norm"), ComponentSpec(name="z-loss", options={"coef": 1e-5}))
    assert config.text_tokenizer.options == {"vocab_size": 4000}
    assert config.model.kv_heads == 2 and config.model.head_dim == 16


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as info:
        from_dict(ModelConfig, {"dim": 64, "num_layers": 2, "num_heads": 4, "num_head": 4})
    message = str(info.value)
    assert "unknown key 'num_head'" in message and "did you mean 'num_heads'" in message and "'rope_theta'" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("dim", "64", "expected an integer"),
        ("dim", 64.0, "expected an integer"),
        ("dim", True, "expected an integer"),
        ("dim", -4, "must be > 0"),
        ("dropout", 1.5, "must be in [0, 1)"),
        ("rope_theta", "big", "expected a number"),
        ("num_kv_heads", 3, "divisible by num_kv_heads"),
    ],
)
def test_bad_model_values_name_field_value_and_expectation(field, value, expected):
    data = {"dim": 64, "num_layers": 2, "num_heads": 4, field: value}
    with pytest.raises(ConfigError) as info:
        from_dict(ModelConfig, data)
    assert expected in str(info.value)
    assert field in str(info.value) or "num_heads" in str(info.value)


wrong_values = st.one_of(
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(names, st.integers(), max_size=2),
    st.floats(),
)


@given(st.sampled_from(["dim", "num_layers", "num_heads", "max_seq_len"]), wrong_values)
def test_random_wrong_types_are_config_errors(field, value):
    with pytest.raises(ConfigError, match=field):
        from_dict(ModelConfig, {"dim": 64, "num_layers": 2, "num_heads": 4, field: value})


@given(
    st.sampled_from(["text_tokenizer", "attention", "modalities", "vocabulary", "model"]),
    st.one_of(st.integers(), st.floats(), st.booleans()),
)
def test_random_wrong_pipeline_slots_are_config_errors(field, value):
    with pytest.raises(ConfigError):
        from_dict(PipelineConfig, {field: value})


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"missing required key\(s\) \['num_heads'\]"):
        from_dict(ModelConfig, {"dim": 64, "num_layers": 2})


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "c.yaml").write_text("a: 1")
    with pytest.raises(ConfigError, match=r"expected a \.json or \.toml"):
        load_config(tmp_path / "c.yaml")


def test_duplicate_modalities_rejected():
    with pytest.raises(ConfigError, match="more than once"):
        PipelineConfig(modalities=("image", "image"))


def test_hidden_dim_follows_llama_rule():
    assert ModelConfig(dim=4096, num_layers=1, num_heads=32).hidden_dim == 11008
    assert ModelConfig(dim=8192, num_layers=1, num_heads=64).hidden_dim == 22016
