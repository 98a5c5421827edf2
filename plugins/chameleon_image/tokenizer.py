"""The ``image`` modality: a VQGAN image tokenizer that encodes AND decodes, and can be trained."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import PIL.Image
import torch

import chameleon_sdk
from chameleon_image.options import ARCHITECTURE_FIELDS, ImageTokenizerOptions
from chameleon_image.pixels import as_pixels, checked_pixels, image_from_pixels
from chameleon_image.vqgan import VQGAN
from chameleon_sdk import CheckpointError, ConfigError, TokenizationError, from_dict
from chameleon_sdk.plugin_api import ImageTokenizerCheckpoint


class ImageTokenizer:
    """Chameleon-style VQGAN image tokenizer: PIL images <-> a grid of discrete codes.

    Implements the ``Modality`` and ``Stateful`` protocols of :mod:`chameleon_sdk`, plus batch
    encode/decode, progressive previews (:meth:`decode_partial`) and training (:meth:`fit`).
    Codes are in row-major order of the latent grid (``grid_size x grid_size``). Weights are read
    and written by the ``checkpoint_format`` plugins, as an
    :class:`~plugin_api.ImageTokenizerCheckpoint` (:meth:`to_checkpoint`).
    """

    payload_types: tuple[type, ...] = (PIL.Image.Image,)

    def __init__(self, options: ImageTokenizerOptions | None = None) -> None:
        options = options or ImageTokenizerOptions()
        checkpoint = None
        if options.pretrained is not None:
            checkpoint = chameleon_sdk.read_image_tokenizer(options.pretrained, format=options.pretrained_format)
            fields = {name: getattr(checkpoint.architecture, name) for name in ARCHITECTURE_FIELDS}
            try:
                options = attrs.evolve(options, **fields)
            except ConfigError as exc:
                raise CheckpointError(
                    f"{checkpoint.source!r}: unsupported image tokenizer configuration: {exc}"
                ) from exc
        self.options = options
        self.model = VQGAN(options).eval()
        if checkpoint is not None:
            self._load_state(checkpoint.state_dict, where=checkpoint.source)

    # -- Modality protocol ------------------------------------------------------------------------

    @property
    def codebook_size(self) -> int:
        return self.options.codebook_size

    @property
    def block_length(self) -> int:
        """Codes per image: ``grid_size ** 2`` (1024 for Chameleon)."""
        return self.options.block_length

    @property
    def can_decode(self) -> bool:
        """Whether codes can become pictures (False for an encoder-only tokenizer, such as the HF release's)."""
        return self.options.decoder

    @property
    def grid_size(self) -> int:
        """Side of the code grid."""
        return self.options.latent_size

    @property
    def resolution(self) -> int:
        return self.options.resolution

    @property
    def device(self) -> torch.device:
        return self.model.quant_conv.weight.device

    def to(self, device: str | torch.device) -> ImageTokenizer:
        """Move the network to ``device``; returns ``self``."""
        self.model.to(device)
        return self

    def preprocess(self, image: Any) -> torch.Tensor:
        """``[3, R, R]`` pixels in ``[-1, 1]`` for a PIL image, a file path, image bytes or a pixel tensor.

        :raises ImageDecodeError: for unreadable files or bytes.
        """
        return as_pixels(image, self.options)

    def encode(self, payload: Any) -> torch.Tensor:
        """A 1-D LongTensor of ``block_length`` codes for one image (see :meth:`preprocess`)."""
        return self.encode_batch([payload])[0]

    def encode_batch(self, images: Sequence[Any] | torch.Tensor) -> torch.Tensor:
        """Codes ``[B, block_length]`` for a sequence of images or a ``[B, 3, R, R]`` pixel tensor."""
        if isinstance(images, torch.Tensor):
            r = self.options.resolution
            if images.dim() != 4 or images.shape[1:] != (3, r, r) or not images.is_floating_point():
                raise TokenizationError(
                    f"image tokenizer: a pixel batch must be float [B, 3, {r}, {r}] in [-1, 1], "
                    f"got {images.dtype} {list(images.shape)}"
                )
            pixels = checked_pixels(images.float(), "a pixel batch")
        else:
            if isinstance(images, (str, bytes, PIL.Image.Image)):
                raise TokenizationError("encode_batch: expected a sequence of images; use encode() for one image")
            pixels = torch.stack([self.preprocess(image) for image in images]) if len(images) else None
            if pixels is None:
                return torch.zeros(0, self.block_length, dtype=torch.long)
        with torch.inference_mode():
            return self.model.encode(pixels.to(self.device)).cpu()

    def decode(self, codes: torch.Tensor) -> PIL.Image.Image:
        """The RGB image (``resolution`` square) for a 1-D tensor of ``block_length`` codes."""
        codes = self._checked_codes(codes)
        if codes.dim() != 1:
            raise TokenizationError(
                f"image tokenizer: decode expects a 1-D tensor of codes, got shape {list(codes.shape)}"
            )
        return self.decode_batch(codes.unsqueeze(0))[0]

    def decode_batch(self, codes: torch.Tensor) -> list[PIL.Image.Image]:
        """RGB images for codes ``[B, block_length]``."""
        return [image_from_pixels(p) for p in self.decode_pixels(codes)]

    def decode_pixels(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels ``[B, 3, R, R]`` in ``[-1, 1]`` for codes ``[B, block_length]``."""
        codes = self._checked_codes(codes)
        if codes.dim() != 2 or codes.shape[1] != self.block_length:
            raise TokenizationError(
                f"image tokenizer: expected codes [B, {self.block_length}], got shape {list(codes.shape)}"
            )
        if self.model.decoder is None:
            raise ConfigError(
                "this image tokenizer has no decoder (option decoder=False; Hugging Face Chameleon checkpoints "
                "ship encoder weights only): load the original release (vqgan.yaml + vqgan.ckpt) or train one"
            )
        with torch.inference_mode():
            return self.model.decode(codes.to(self.device)).float().cpu()

    def decode_partial(self, codes: torch.Tensor) -> PIL.Image.Image:
        """A preview for the first ``n <= block_length`` codes of an image still being generated.

        Missing codes are filled as Chameleon's reference viewer does: with copies of the first
        code (so the unfinished area is flat). With no codes at all, code 0 is used.
        """
        codes = self._checked_codes(codes).flatten()
        n = codes.numel()
        if n > self.block_length:
            raise TokenizationError(f"decode_partial: got {n} codes, more than an image's {self.block_length}")
        fill = codes[0] if n else torch.tensor(0)
        full = torch.cat([codes, fill.repeat(self.block_length - n)])
        return self.decode(full)

    def _checked_codes(self, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise TokenizationError(f"image tokenizer: codes must be integers, got {codes.dtype}")
        codes = codes.long()
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise TokenizationError(
                f"image tokenizer: codes must be in [0, {self.codebook_size}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return codes

    # -- Stateful protocol ------------------------------------------------------------------------

    def to_checkpoint(self) -> ImageTokenizerCheckpoint:
        """The architecture and a CPU copy of the weights, as the checkpoint formats write them."""
        state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.model.state_dict().items()}
        return ImageTokenizerCheckpoint(architecture=self.options.architecture(), state_dict=state)

    def save(self, directory: str | os.PathLike[str], *, format: str = "native", options: Any = None) -> None:
        """Write the tokenizer as a ``format`` checkpoint directory (:func:`chameleon_sdk.save_image_tokenizer`).

        ``directory`` is replaced as a whole, atomically, with a ``manifest.json`` of SHA-256 sums.
        ``native``: ``image_tokenizer.json`` + ``image_tokenizer.safetensors``; ``hf``: the encoder side only.
        """
        chameleon_sdk.save_image_tokenizer(self, directory, format=format, options=options)

    def load(self, directory: str | os.PathLike[str], *, format: str | None = None) -> None:
        """Restore weights from a checkpoint in any readable layout; its architecture must match this one's."""
        checkpoint = chameleon_sdk.read_image_tokenizer(directory, format=format)
        mine, theirs = self.options.architecture(), checkpoint.architecture
        diff = {k: (getattr(mine, k), getattr(theirs, k)) for k in ARCHITECTURE_FIELDS}
        diff = {k: pair for k, pair in diff.items() if pair[0] != pair[1]}
        if diff:
            details = ", ".join(f"{k}: this tokenizer {a!r}, saved {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"image tokenizer in {str(directory)!r} has a different architecture ({details})")
        self._load_state(checkpoint.state_dict, where=checkpoint.source)

    def _load_state(self, state: Mapping[str, torch.Tensor], where: str) -> None:
        own = self.model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [
            f"{k}: {list(state[k].shape)} vs {list(own[k].shape)}"
            for k in own
            if k in state and state[k].shape != own[k].shape
        ]
        if missing or unexpected or shapes:
            raise CheckpointError(
                f"image tokenizer weights from {where!r} do not fit the network: missing {_few(missing)}, "
                f"unexpected {_few(unexpected)}, shape mismatches {_few(shapes)}"
            )
        self.model.load_state_dict(dict(state), strict=True)

    # -- training ---------------------------------------------------------------------------------

    def fit(self, data: Any, options: Any = None, *, progress: bool = True, callback: Any = None) -> dict[str, float]:
        """Train the tokenizer on ``data``; returns held-out metrics (see :class:`ImageTrainingOptions`).

        :param data: a folder of images, a JSONL file of documents, a sequence of images, or a
            ``[N, 3, R, R]`` pixel tensor in ``[-1, 1]``.
        :param options: an :class:`ImageTrainingOptions`, a mapping of its fields, or ``None``.
        """
        from chameleon_image.training import ImageTokenizerTrainer, ImageTrainingOptions

        if options is None or isinstance(options, Mapping):
            options = from_dict(ImageTrainingOptions, dict(options or {}), where="image tokenizer training options")
        return ImageTokenizerTrainer(self, options).fit(data, progress=progress, callback=callback)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"ImageTokenizer({o.resolution}px -> {self.grid_size}x{self.grid_size} codes of {o.codebook_size}, "
            f"base {o.base_channels} x {list(o.channel_multipliers)}, metric {o.codebook_metric}, "
            f"decoder {'yes' if o.decoder else 'no'})"
        )


def _few(items: list[str]) -> str:
    return f"{items[:5]}{' ...' if len(items) > 5 else ''}"
