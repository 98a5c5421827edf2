"""The core image tokenizer API reaches tokenizers only through the registry."""

from __future__ import annotations

import attrs
import pytest
import torch

from chameleon_sdk import ConfigError, ImageTokenizerTrainingConfig, from_dict, load_image_tokenizer
from chameleon_sdk import train_image_tokenizer as train
from chameleon_sdk.plugin_api import hookimpl


@attrs.frozen(kw_only=True)
class FakeOptions:
    pretrained: str | None = None
    size: int = 4


class FakeImageModality:
    """Encodes nothing useful; records what the core handed it."""

    payload_types = ()
    block_length = 1

    def __init__(self, options: FakeOptions) -> None:
        self.options = options
        self.codebook_size = options.size

    def encode(self, payload):
        return torch.zeros(1, dtype=torch.long)

    def decode(self, codes):
        return None


class FakePlugin:
    @hookimpl
    def register_modalities(self, register):
        register("fake-image", FakeImageModality, options=FakeOptions)


def test_load_passes_the_path_as_the_pretrained_option(registry, registered_plugin, tmp_path):
    registered_plugin(FakePlugin(), name="fake-image-plugin")
    tokenizer = load_image_tokenizer(tmp_path, name="fake-image", options={"size": 9})
    assert isinstance(tokenizer, FakeImageModality)
    assert tokenizer.options == FakeOptions(pretrained=str(tmp_path), size=9)


def test_training_config_defaults_to_the_image_modality():
    config = from_dict(ImageTokenizerTrainingConfig, {"data": "images", "output": "out"})
    assert config.tokenizer.name == "image" and config.training == {}
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(ImageTokenizerTrainingConfig, {"data": "images"})


def test_training_a_modality_without_fit_is_a_config_error(registry, registered_plugin, tmp_path):
    registered_plugin(FakePlugin(), name="fake-image-plugin")
    config = {"data": str(tmp_path), "output": str(tmp_path / "out"), "tokenizer": "fake-image"}
    with pytest.raises(ConfigError, match="cannot be trained"):
        train(config, progress=False)
    assert not (tmp_path / "out").exists()
