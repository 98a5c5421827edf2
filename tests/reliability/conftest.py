"""Shared pieces of the reliability suite: tiny models, pipelines and training data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import chameleon_sdk as cs

# the outcome counter, importable by the test modules as ``reliability_outcomes`` (importlib import mode)
_spec = importlib.util.spec_from_file_location("reliability_outcomes", Path(__file__).with_name("outcomes.py"))
assert _spec is not None and _spec.loader is not None
outcomes = importlib.util.module_from_spec(_spec)
sys.modules["reliability_outcomes"] = outcomes
_spec.loader.exec_module(outcomes)

TINY_MODEL = {"dim": 32, "num_layers": 2, "num_heads": 4, "vocab_size": 64, "max_seq_len": 64}


@pytest.fixture
def make_model(registry):
    """``make(**config) -> ChameleonModel``: a seeded tiny model (2 layers, 32 wide, 64 ids)."""

    def make(stability=("qk-norm",), seed=0, **config):
        torch.manual_seed(seed)
        return cs.build_model(cs.ModelConfig(**{**TINY_MODEL, **config}), stability=stability)

    return make


@pytest.fixture
def make_pipe(registry, registered_plugin, digits_plugin, trained_sentencepiece):
    """``make(model=True, **trainer) -> Pipeline``: sentencepiece + a ``digits`` modality (blocks of 2)
    + a tiny model; trainer options go to the ``local`` trainer."""
    registered_plugin(digits_plugin, name="digits-plugin")

    def make(model=True, max_seq_len=64, **trainer):
        options = {"precision": "fp32", "progress": False, "lr": 3e-3, **trainer}
        config = cs.PipelineConfig(
            text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
            modalities=({"name": "digits", "options": {"block": 2}},),
            model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=max_seq_len),
            trainer={"name": "local", "options": options},
            callbacks=(),
        )
        pipe = cs.Pipeline.from_config(config)
        if model:
            torch.manual_seed(0)
            pipe.model = pipe.build_model()
        return pipe

    return make


@pytest.fixture
def jsonl_data(tmp_path):
    """A small JSONL training file (text + digits blocks) and its DataConfig."""
    path = tmp_path / "train.jsonl"
    lines = [
        {"segments": [{"text": f"a {c} shape"}, {"modality": "digits", "payload": [i % 10, (3 * i) % 10]}]}
        for i, c in enumerate(["red", "green", "blue", "yellow"] * 3)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return cs.DataConfig(sources=(cs.SourceConfig(path=str(path)),), seq_len=24, batch_size=2)


@pytest.fixture(scope="session")
def image_pipe(trained_sentencepiece, tiny_image_options):
    """One pipeline for the whole session: sentencepiece, a tiny ``image`` modality and a tiny model
    (max_seq_len 160). Tests must not change it."""
    config = cs.PipelineConfig(
        text_tokenizer={"name": "sentencepiece", "options": {"model_file": str(trained_sentencepiece)}},
        modalities=({"name": "image", "options": tiny_image_options},),
        model=cs.ModelConfig(dim=32, num_layers=2, num_heads=4, max_seq_len=160),
        callbacks=(),
    )
    pipe = cs.Pipeline.from_config(config, registry=cs.PluginRegistry())
    torch.manual_seed(0)
    pipe.model = pipe.build_model()
    return pipe


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The corpus size per class of bad input (tests/reliability/outcomes.py), when any was counted."""
    if outcomes.COUNTS:
        terminalreporter.section("reliability corpus (test_bad_input_classes.py)")
        for line in outcomes.table():
            terminalreporter.write_line(line)
