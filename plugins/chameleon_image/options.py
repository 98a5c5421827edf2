"""Options of the ``image`` modality: the VQGAN's shape (the core's architecture) and the loader's limits."""

from __future__ import annotations

import attrs

from chameleon_sdk import DEFAULT_MAX_IMAGE_PIXELS, ConfigError, VQGANArchitecture

#: the option names that define the network (and so must match a checkpoint being loaded)
ARCHITECTURE_FIELDS = tuple(f.name for f in attrs.fields(VQGANArchitecture))


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"image tokenizer option {attribute.name} must be > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ImageTokenizerOptions(VQGANArchitecture):
    """Options of the ``image`` modality (a VQGAN image tokenizer).

    The network's shape is :class:`chameleon_sdk.VQGANArchitecture` (``resolution``,
    ``base_channels``, ``channel_multipliers``, ``num_res_blocks``, ``attn_resolutions``,
    ``mid_attention``, ``latent_channels``, ``embed_dim``, ``codebook_size``, ``codebook_metric``,
    ``in_channels``, ``decoder``), whose defaults are Chameleon's released tokenizer: 512 px,
    32 x 32 = 1024 codes from 8192. Besides those:

    :param dropout: dropout inside residual blocks (training only).
    :param max_image_pixels: images with more pixels are refused as decompression bombs.
    :param pretrained: a directory (or ``vqgan.ckpt`` file) to load weights from, in any layout a
        ``checkpoint_format`` plugin reads (built in: this SDK's ``native`` one, a Hugging Face
        Chameleon directory, the original ``vqgan.yaml`` + ``vqgan.ckpt``). The network's shape then
        comes from the checkpoint, not from the options above.
    :param pretrained_format: the format to read ``pretrained`` with; detected when None.
    """

    dropout: float = 0.0
    max_image_pixels: int = attrs.field(default=DEFAULT_MAX_IMAGE_PIXELS, validator=_positive)
    pretrained: str | None = None
    pretrained_format: str | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"image tokenizer option dropout must be in [0, 1), got {self.dropout!r}")
        if self.in_channels != 3:
            raise ConfigError(f"image tokenizer option in_channels must be 3 (RGB), got {self.in_channels}")
