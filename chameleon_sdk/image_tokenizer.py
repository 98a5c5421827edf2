"""The image tokenizer API of the core: its checkpoint contract, loading and saving through the
checkpoint-format plugins, training from a config, and the contract of extra training losses.

Three parties meet here, and none imports another:

- a ``modality`` plugin (the built-in ``image``) owns the network: it turns an
  :class:`ImageTokenizerCheckpoint` into a live tokenizer and back (``to_checkpoint()``);
- a ``checkpoint_format`` plugin owns a file layout: besides the model methods of
  :class:`~chameleon_sdk.plugin_api.CheckpointFormat` it may implement :class:`ImageTokenizerFormat` to read
  (and write) image tokenizers in that layout (built in: ``native``, ``hf``, ``original``);
- an ``image_tokenizer_loss`` plugin adds a term to the training loss (:class:`ImageTokenizerLoss`;
  built in: ``lpips``, ``patch-gan``).

What they exchange is :class:`ImageTokenizerCheckpoint`: a :class:`VQGANArchitecture` (the network's
shape, as Chameleon's Make-A-Scene/taming VQGAN defines it) and a state dict in taming's key names
(``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``, ``quant_conv.*``, ``post_quant_conv.*``).

- :func:`load_image_tokenizer` builds the modality with its ``pretrained`` option set to a path; the
  built-in plugin reads it with :func:`read_image_tokenizer`, which detects the layout.
- :func:`save_image_tokenizer` writes a tokenizer in a named format, atomically.
- :func:`train_image_tokenizer` (and ``chameleon train-image-tokenizer CONFIG``) builds the modality,
  calls its ``fit`` and saves it atomically to the output directory, with the metrics beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from chameleon_sdk.checkpoint import KIND, claiming_format, registered_formats
from chameleon_sdk.config import ComponentSpec, from_dict, load_config, typed
from chameleon_sdk.contracts.checkpoint_format import ImageTokenizerFormat
from chameleon_sdk.contracts.modality import Modality, TrainableModality
from chameleon_sdk.error_mapping import foreign_errors
from chameleon_sdk.errors import CheckpointError, ConfigError
from chameleon_sdk.plugins import PluginRegistry, get_registry
from chameleon_sdk.storage import checked_path, staging_directory, verify_manifest

__all__ = [
    "ImageTokenizerCheckpoint",
    "ImageTokenizerTrainingConfig",
    "VQGANArchitecture",
    "detect_image_tokenizer_format",
    "load_image_tokenizer",
    "read_image_tokenizer",
    "save_image_tokenizer",
    "train_image_tokenizer",
]

METRICS_FILE = "training_metrics.json"
#: GroupNorm groups of every normalisation layer: each level's channel count must be a multiple
GROUPS = 32


# -- the checkpoint contract ------------------------------------------------------------------------


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"image tokenizer option {attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class VQGANArchitecture:
    """The shape of a Chameleon (Make-A-Scene / taming) VQGAN: what every checkpoint layout describes.

    The defaults are Chameleon's released tokenizer: 512 px, 32 x 32 = 1024 codes from 8192.

    :param resolution: side of the square input image in pixels.
    :param in_channels: image channels (RGB: 3).
    :param base_channels: channels of the first level; level ``i`` has
        ``base_channels * channel_multipliers[i]``. Every level's width must be a multiple of 32
        (the network uses GroupNorm with 32 groups).
    :param channel_multipliers: one per level; ``L`` levels downsample ``L - 1`` times.
    :param num_res_blocks: residual blocks per encoder level (the decoder uses one more).
    :param attn_resolutions: feature-map sides (in pixels of that level) that get self-attention
        after every residual block; the middle block always has one unless ``mid_attention`` is off.
    :param mid_attention: self-attention in the middle block (the reference: on).
    :param latent_channels: channels of the encoder output / decoder input (``z_channels``).
    :param embed_dim: dimension of a codebook vector.
    :param codebook_size: number of codes.
    :param codebook_metric: ``"l2"`` (the reference, needed for released weights) or ``"cosine"``
        (normalised vectors; trains small codebooks better).
    :param decoder: whether the network has a decoder (``False`` for encode-only weights such as
        the Hugging Face release).
    """

    resolution: int = attrs.field(default=512, validator=_positive)
    in_channels: int = attrs.field(default=3, validator=_positive)
    base_channels: int = attrs.field(default=128, validator=_positive)
    channel_multipliers: tuple[int, ...] = attrs.field(default=(1, 1, 2, 2, 4), converter=tuple)
    num_res_blocks: int = attrs.field(default=2, validator=_positive)
    attn_resolutions: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    mid_attention: bool = True
    latent_channels: int = attrs.field(default=256, validator=_positive)
    embed_dim: int = attrs.field(default=256, validator=_positive)
    codebook_size: int = attrs.field(default=8192, validator=_positive)
    codebook_metric: Literal["l2", "cosine"] = attrs.field(
        default="l2", validator=attrs.validators.in_(("l2", "cosine"))
    )
    decoder: bool = True

    def __attrs_post_init__(self) -> None:
        mults = self.channel_multipliers
        if not mults or any(isinstance(m, bool) or not isinstance(m, int) or m <= 0 for m in mults):
            raise ConfigError(
                f"image tokenizer option channel_multipliers must be positive integers, got {list(mults)}"
            )
        widths = [self.base_channels * m for m in mults]
        if any(w % GROUPS for w in widths):
            raise ConfigError(
                f"image tokenizer: every level's channel count must be a multiple of {GROUPS} (GroupNorm({GROUPS})); "
                f"base_channels={self.base_channels} x channel_multipliers={list(mults)} gives {widths}"
            )
        if self.resolution % 2 ** (len(mults) - 1):
            raise ConfigError(
                f"image tokenizer option resolution ({self.resolution}) must be divisible by "
                f"2**(len(channel_multipliers) - 1) = {2 ** (len(mults) - 1)}"
            )

    @property
    def latent_size(self) -> int:
        """Side of the code grid (``resolution / 2**(levels - 1)``)."""
        return self.resolution // 2 ** (len(self.channel_multipliers) - 1)

    @property
    def block_length(self) -> int:
        """Codes per image (``latent_size ** 2``)."""
        return self.latent_size**2

    def architecture(self) -> VQGANArchitecture:
        """Only the architecture (drops the fields a subclass adds, such as a plugin's runtime options)."""
        return VQGANArchitecture(**{f.name: getattr(self, f.name) for f in attrs.fields(VQGANArchitecture)})


@attrs.frozen(kw_only=True)
class ImageTokenizerCheckpoint:
    """An image tokenizer as the checkpoint formats read and write it.

    :param architecture: the network's shape.
    :param state_dict: the weights under taming's key names (``encoder.*``, ``decoder.*`` when
        ``architecture.decoder``, ``quantize.embedding.weight``, ``quant_conv.*``, ``post_quant_conv.*``).
    :param source: where it was read from (named in errors), empty for a live tokenizer.
    :param format: the ``checkpoint_format`` plugin that read it, empty for a live tokenizer.
    """

    architecture: VQGANArchitecture
    state_dict: Mapping[str, torch.Tensor] = attrs.field(repr=False)
    source: str = ""
    format: str = ""


def _image_formats(registry: PluginRegistry) -> dict[str, ImageTokenizerFormat]:
    return {name: fmt for name, fmt in registered_formats(registry).items() if isinstance(fmt, ImageTokenizerFormat)}


def _image_format(registry: PluginRegistry, name: str, options: Any) -> ImageTokenizerFormat:
    fmt = registry.build(KIND, name, options)
    if not isinstance(fmt, ImageTokenizerFormat):
        able = sorted(_image_formats(registry))
        raise CheckpointError(f"checkpoint format {name!r} cannot hold image tokenizers; formats that can: {able}")
    return fmt


def detect_image_tokenizer_format(path: str | os.PathLike[str], *, registry: PluginRegistry | None = None) -> str:
    """The name of the one checkpoint format that recognises an image tokenizer at ``path``.

    :raises CheckpointError: when ``path`` does not exist, or no format (or more than one) claims it.
    """
    formats = _image_formats(registry or get_registry())
    return claiming_format(
        path,
        {name: fmt.detect_image_tokenizer for name, fmt in formats.items()},
        missing="image tokenizer checkpoint {path} does not exist",
        unclaimed="{path} holds no image tokenizer checkpoint (it holds {listing}); formats that can hold "
        f"one: {sorted(formats)} (native: image_tokenizer.json + .safetensors; hf: config.json with "
        "vq_config + model.safetensors; original: vqgan.yaml + vqgan.ckpt)",
    )


def read_image_tokenizer(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    options: Any = None,
    registry: PluginRegistry | None = None,
    verify: bool = True,
) -> ImageTokenizerCheckpoint:
    """Read an image tokenizer checkpoint, detecting its layout unless ``format`` names one.

    :param format: a ``checkpoint_format`` plugin name (``"native"``, ``"hf"``, ``"original"``).
    :param options: options of that format's plugin.
    :param verify: check the files against the directory's ``manifest.json`` first (a directory
        without one, such as a release download, is read as it is).
    :raises CheckpointError: naming the missing, corrupt or unsupported file.
    """
    registry = registry or get_registry()
    path = checked_path(path)
    if not path.exists():
        raise CheckpointError(f"image tokenizer checkpoint {str(path)!r} does not exist")
    if verify and path.is_dir():
        verify_manifest(path)
    name = format or detect_image_tokenizer_format(path, registry=registry)
    reader = _image_format(registry, name, options)
    with foreign_errors(
        f"image tokenizer checkpoint {str(path)!r} ({name} format)", CheckpointError, interpreting=True
    ):
        checkpoint = reader.read_image_tokenizer(path)
    return attrs.evolve(checkpoint, source=checkpoint.source or str(path), format=checkpoint.format or name)


def save_image_tokenizer(
    tokenizer: Any,
    path: str | os.PathLike[str],
    *,
    format: str = "native",
    options: Any = None,
    registry: PluginRegistry | None = None,
) -> Path:
    """Write an image tokenizer (or an :class:`ImageTokenizerCheckpoint`) as a ``format`` directory.

    The format writes into a temporary sibling directory that then replaces ``path`` as a whole
    (with a ``manifest.json`` of SHA-256 sums), so readers see the old checkpoint or the complete new one.

    :param tokenizer: a checkpoint, or a tokenizer with a ``to_checkpoint()`` method (the built-in
        ``image`` modality has one).
    :raises CheckpointError: when the format cannot write it (a read-only layout, or a tokenizer the
        layout has no place for, such as a cosine codebook in the ``hf`` layout).
    """
    checkpoint = tokenizer
    if not isinstance(checkpoint, ImageTokenizerCheckpoint):
        export = getattr(tokenizer, "to_checkpoint", None)
        if export is None:
            raise ConfigError(
                f"save_image_tokenizer: expected an ImageTokenizerCheckpoint or a tokenizer with to_checkpoint(), "
                f"got {type(tokenizer).__name__}"
            )
        checkpoint = export()
    fmt = _image_format(registry or get_registry(), format, options)
    path = checked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(path) as tmp:
        fmt.write_image_tokenizer(checkpoint, tmp)
    return path


# -- loading a tokenizer ----------------------------------------------------------------------------


def load_image_tokenizer(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    options: Mapping[str, Any] | None = None,
    name: str = "image",
    registry: PluginRegistry | None = None,
) -> Modality:
    """An image tokenizer with weights from ``path`` (a directory, or a ``vqgan.ckpt`` file).

    :param format: the checkpoint format to read it with (detected when None); passed to the plugin
        as its ``pretrained_format`` option.
    :param options: further options of the modality plugin (the architecture comes from the
        checkpoint).
    :param name: the modality plugin to build.
    :raises CheckpointError: when ``path`` holds no readable checkpoint in a supported layout.
    """
    path = checked_path(path)
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"load_image_tokenizer: options must be a mapping of the modality's options, got {options!r}")
    merged = {**dict(options or {}), "pretrained": os.fspath(path)}
    if format is not None:
        merged["pretrained_format"] = format
    return (registry or get_registry()).build("modality", name, merged)  # type: ignore[no-any-return]


# -- extra training losses --------------------------------------------------------------------------


# -- training from a config -------------------------------------------------------------------------


def _spec(value: Any) -> ComponentSpec:
    return ComponentSpec.of(value)


@attrs.frozen(kw_only=True)
class ImageTokenizerTrainingConfig:
    """What ``chameleon train-image-tokenizer CONFIG`` reads (JSON or TOML).

    :param data: a folder of images or a JSONL file of documents (relative paths are resolved
        against the config file's folder).
    :param output: the directory the trained tokenizer is written to (replaced atomically).
    :param tokenizer: the modality plugin and its options, e.g. ``{"name": "image", "options":
        {"resolution": 64, ...}}``.
    :param training: the plugin's training options (for ``image``: ``ImageTrainingOptions``).
    """

    data: str = attrs.field(validator=typed)
    output: str = attrs.field(validator=typed)
    tokenizer: ComponentSpec = attrs.field(factory=lambda: ComponentSpec(name="image"), converter=_spec)
    training: dict[str, Any] = attrs.field(factory=dict, validator=typed)


def train_image_tokenizer(
    config: ImageTokenizerTrainingConfig | Mapping[str, Any] | str | os.PathLike[str],
    *,
    registry: PluginRegistry | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train the configured image tokenizer and save it to ``config.output``; returns its metrics.

    Nothing is written unless training succeeds: the output is assembled in a temporary sibling
    directory and renamed into place.
    """
    base = Path.cwd()
    if isinstance(config, (str, os.PathLike)):
        base = Path(config).resolve().parent
        config = load_config(config, ImageTokenizerTrainingConfig)
    elif isinstance(config, Mapping):
        config = from_dict(ImageTokenizerTrainingConfig, config)
    elif not isinstance(config, ImageTokenizerTrainingConfig):
        raise ConfigError(f"train_image_tokenizer: expected a config, mapping or path, got {config!r}")
    spec = config.tokenizer
    modality = (registry or get_registry()).build("modality", spec.name, spec.options)
    if not isinstance(modality, TrainableModality):
        raise ConfigError(f"modality plugin {spec.name!r} cannot be trained (it has no fit/save methods)")
    metrics = modality.fit(str(base / config.data), config.training, progress=progress)
    output = base / config.output
    output.parent.mkdir(parents=True, exist_ok=True)
    with staging_directory(output) as tmp:
        modality.save(tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return dict(metrics)
