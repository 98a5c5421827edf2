"""The ``image`` modality: a VQGAN image tokenizer that encodes AND decodes, and can be trained."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import PIL.Image
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from chameleon_image.checkpoints import read_pretrained
from chameleon_image.options import ARCHITECTURE_FIELDS, ImageTokenizerOptions
from chameleon_image.pixels import as_pixels, image_from_pixels
from chameleon_image.vqgan import VQGAN
from chameleon_sdk import CheckpointError, ConfigError, TokenizationError, from_dict, read_json, to_dict

WEIGHTS_FILE = "image_tokenizer.safetensors"
OPTIONS_FILE = "image_tokenizer.json"
FORMAT = "chameleon-image-tokenizer"
FORMAT_VERSION = 1


class ImageTokenizer:
    """Chameleon-style VQGAN image tokenizer: PIL images <-> a grid of discrete codes.

    Implements the ``Modality`` and ``Stateful`` protocols of :mod:`chameleon_sdk`, plus batch
    encode/decode, progressive previews (:meth:`decode_partial`) and training (:meth:`fit`).
    Codes are in row-major order of the latent grid (``grid_size x grid_size``).
    """

    payload_types: tuple[type, ...] = (PIL.Image.Image,)

    def __init__(self, options: ImageTokenizerOptions | None = None) -> None:
        options = options or ImageTokenizerOptions()
        state: dict[str, torch.Tensor] | None = None
        if options.pretrained is not None:
            options, state = read_pretrained(options)
        self.options = options
        self.model = VQGAN(options).eval()
        if state is not None:
            self._load_state(state, where=str(options.pretrained))

    # -- Modality protocol ------------------------------------------------------------------------

    @property
    def codebook_size(self) -> int:
        return self.options.codebook_size

    @property
    def block_length(self) -> int:
        """Codes per image: ``grid_size ** 2`` (1024 for Chameleon)."""
        return self.options.block_length

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
        return as_pixels(image, self.options.resolution, self.options.max_image_pixels)

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
            pixels = images.float()
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

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``image_tokenizer.safetensors`` and ``image_tokenizer.json`` (the options) into ``directory``.

        Each file is written to a temporary name and renamed, weights first, so the JSON's presence
        means the directory is complete.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()}
        _atomic(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": FORMAT}))
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "options": to_dict(self.saved_options())}
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        _atomic(directory / OPTIONS_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def saved_options(self) -> ImageTokenizerOptions:
        """The options as saved: the actual architecture, no ``pretrained`` path."""
        return attrs.evolve(self.options, pretrained=None)

    def load(self, directory: str | os.PathLike[str]) -> None:
        """Restore weights written by :meth:`save`; the saved architecture must match this one's."""
        saved, state = read_saved(Path(directory))
        mine, theirs = self.options.architecture(), saved.architecture()
        diff = {k: (mine[k], theirs[k]) for k in ARCHITECTURE_FIELDS if mine[k] != theirs[k]}
        if diff:
            details = ", ".join(f"{k}: this tokenizer {a!r}, saved {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"image tokenizer in {str(directory)!r} has a different architecture ({details})")
        self._load_state(state, where=str(directory))

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


def read_saved(directory: Path) -> tuple[ImageTokenizerOptions, dict[str, torch.Tensor]]:
    """Options and weights from a directory written by :meth:`ImageTokenizer.save`."""
    meta_path = directory / OPTIONS_FILE
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{str(meta_path)!r} is not a {FORMAT} v{FORMAT_VERSION} file")
    try:
        options = from_dict(ImageTokenizerOptions, meta.get("options"), where=str(meta_path))
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc
    weights = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read image tokenizer weights {str(weights)!r}: {exc}") from exc
    return options, state


def _few(items: list[str]) -> str:
    return f"{items[:5]}{' ...' if len(items) > 5 else ''}"


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
