"""Options of the ``image`` modality: the VQGAN's shape (the core's architecture) and the loader's limits."""

from __future__ import annotations

from typing import Literal

import attrs

from chameleon_sdk import ConfigError
from chameleon_sdk.plugin_api import DEFAULT_MAX_IMAGE_PIXELS, VQGANArchitecture, number_validator

#: the option names that define the network (and so must match a checkpoint being loaded)
ARCHITECTURE_FIELDS = tuple(f.name for f in attrs.fields(VQGANArchitecture))


_positive = number_validator(low=0, low_open=True, label="image tokenizer option")


@attrs.frozen(kw_only=True)
class ImageTokenizerOptions(VQGANArchitecture):
    """Options of the ``image`` modality (a VQGAN image tokenizer).

    The network's shape is :class:`chameleon_sdk.plugin_api.VQGANArchitecture` (``resolution``,
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
    :param preprocessing: how a picture becomes pixels, as each release defines it. ``"meta"`` (Meta's
        ``ImageTokenizer``): alpha over white, shortest side to ``resolution`` with LANCZOS (rounded),
        centre crop, ``x / 127.5 - 1``. ``"hf"`` (``transformers``' ``ChameleonImageProcessor``, PIL
        backend): PIL ``alpha_composite`` on white, shortest side to ``resolution`` with ``resample``
        (the long side truncated), centre crop, ``(x * rescale_factor - image_mean) / image_std`` —
        with the released 0.0078, white is 0.989, not 1.
    :param resample: the ``"hf"`` rule's resampling filter.
    :param rescale_factor: the ``"hf"`` rule's scale of 8-bit values.
    :param image_mean: the ``"hf"`` rule's mean (one value for the three channels).
    :param image_std: the ``"hf"`` rule's standard deviation.
    """

    dropout: float = 0.0
    max_image_pixels: int = attrs.field(default=DEFAULT_MAX_IMAGE_PIXELS, validator=_positive)
    pretrained: str | None = None
    pretrained_format: str | None = None
    preprocessing: Literal["meta", "hf"] = attrs.field(default="meta", validator=attrs.validators.in_(("meta", "hf")))
    resample: Literal["lanczos", "bicubic", "bilinear", "nearest", "box", "hamming"] = "lanczos"
    rescale_factor: float = 0.0078
    image_mean: float = 1.0
    image_std: float = 1.0

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"image tokenizer option dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("rescale_factor", "image_std"):
            if not 0 < getattr(self, name) < float("inf"):  # also refuses NaN
                raise ConfigError(
                    f"image tokenizer option {name} must be a positive finite number, got {getattr(self, name)!r}"
                )
        if not abs(self.image_mean) < float("inf"):
            raise ConfigError(f"image tokenizer option image_mean must be finite, got {self.image_mean!r}")
        if self.in_channels != 3:
            raise ConfigError(f"image tokenizer option in_channels must be 3 (RGB), got {self.in_channels}")
