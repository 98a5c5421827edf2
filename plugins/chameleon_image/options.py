"""Options of the ``image`` modality: the VQGAN's shape and the image loader's limits."""

from __future__ import annotations

from typing import Literal

import attrs

from chameleon_sdk import DEFAULT_MAX_IMAGE_PIXELS, ConfigError

#: the option names that define the network (and so must match a checkpoint being loaded)
ARCHITECTURE_FIELDS = (
    "resolution",
    "in_channels",
    "base_channels",
    "channel_multipliers",
    "num_res_blocks",
    "attn_resolutions",
    "mid_attention",
    "latent_channels",
    "embed_dim",
    "codebook_size",
    "codebook_metric",
    "decoder",
)


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"image tokenizer option {attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ImageTokenizerOptions:
    """Options of the ``image`` modality (a VQGAN image tokenizer).

    The defaults are Chameleon's released tokenizer: 512 px, 32 x 32 = 1024 codes from 8192.

    :param resolution: side of the square input image in pixels.
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
    :param dropout: dropout inside residual blocks (training only).
    :param in_channels: image channels (RGB: 3).
    :param decoder: build the decoder; ``False`` for encode-only weights such as the HF release.
    :param max_image_pixels: images with more pixels are refused as decompression bombs.
    :param pretrained: a directory (or ``vqgan.ckpt`` file) to load weights from: this plugin's own
        saved layout, a Hugging Face Chameleon checkpoint directory (``config.json`` + safetensors
        with ``model.vqmodel.*``) or the original release (``vqgan.yaml`` + ``vqgan.ckpt``). The
        network's shape then comes from the checkpoint, not from the options above.
    """

    resolution: int = attrs.field(default=512, validator=_positive)
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
    dropout: float = 0.0
    in_channels: int = attrs.field(default=3, validator=_positive)
    decoder: bool = True
    max_image_pixels: int = attrs.field(default=DEFAULT_MAX_IMAGE_PIXELS, validator=_positive)
    pretrained: str | None = None

    def __attrs_post_init__(self) -> None:
        mults = self.channel_multipliers
        if not mults or any(not isinstance(m, int) or m <= 0 for m in mults):
            raise ConfigError(
                f"image tokenizer option channel_multipliers must be positive integers, got {list(mults)}"
            )
        widths = [self.base_channels * m for m in mults]
        bad = [w for w in widths if w % 32]
        if bad:
            raise ConfigError(
                f"image tokenizer: every level's channel count must be a multiple of 32 (GroupNorm(32)); "
                f"base_channels={self.base_channels} x channel_multipliers={list(mults)} gives {widths}"
            )
        if self.resolution % 2 ** (len(mults) - 1):
            raise ConfigError(
                f"image tokenizer option resolution ({self.resolution}) must be divisible by "
                f"2**(len(channel_multipliers) - 1) = {2 ** (len(mults) - 1)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"image tokenizer option dropout must be in [0, 1), got {self.dropout!r}")
        if self.in_channels != 3:
            raise ConfigError(f"image tokenizer option in_channels must be 3 (RGB), got {self.in_channels}")

    @property
    def latent_size(self) -> int:
        """Side of the code grid (``resolution / 2**(levels - 1)``)."""
        return self.resolution // 2 ** (len(self.channel_multipliers) - 1)

    @property
    def block_length(self) -> int:
        """Codes per image (``latent_size ** 2``)."""
        return self.latent_size**2

    def architecture(self) -> dict[str, object]:
        """The fields that define the network's parameters."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
