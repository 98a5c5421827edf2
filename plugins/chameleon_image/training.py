"""Training the image tokenizer: reconstruction + VQ losses, EMA option, dead-code restarts, loss
plugins, and checkpoints to resume from.

Loss per step, on pixels ``x`` and reconstruction ``x'``::

    l1_weight * |x - x'| + l2_weight * (x - x')^2            (means over pixels)
    + |sg(z) - e|^2 + commitment_beta * |z - sg(e)|^2         (codebook + commitment, "loss" mode)
    + commitment_beta * |z - sg(e)|^2                         (commitment only, "ema" mode)

``z`` are the encoder's latents after ``quant_conv`` (normalised for the cosine metric), ``e`` the
chosen codebook entries, ``sg`` stop-gradient; the decoder sees ``z + sg(e - z)`` (straight-through).
The taming/Chameleon reference code applies beta to the codebook term instead ("legacy" quantizer);
this is the textbook VQ-VAE weighting.

Dead-code restarts: every ``restart_every`` steps, codes chosen fewer than ``dead_code_threshold``
times since the last check are re-initialised to random latents of the current batch.

Extra terms come from ``image_tokenizer_loss`` plugins named in ``losses`` (built in: ``lpips``,
perceptual, with weights a user supplies; ``patch-gan``, adversarial), in the listed order: each sees
the pixel loss plus the terms listed before it as ``reconstruction_loss``, so list a perceptual loss
before an adversarial one for taming's adaptive weight. After the tokenizer's step, each loss may
train its own parameters (the discriminator).

Resume: with ``checkpoint_dir`` set, ``checkpoint_dir/step-NNNNNNNN/`` is written every
``checkpoint_every`` steps and after the last one (atomically, with a SHA-256 manifest; the last
``keep_last`` are kept): ``tokenizer/`` (the weights, through the ``native`` checkpoint format) and
``trainer_state.pt`` (optimizer, EMA codebook statistics, code usage, the loss plugins' state, the
data order and position, every RNG). ``resume=True`` continues from the newest one; the result is
bitwise the same as an uninterrupted run on CPU, and on CUDA under
``torch.use_deterministic_algorithms(True)`` (a ``max_seconds`` budget makes the schedule depend on
wall-clock time, so only step-based runs are reproducible).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

import chameleon_sdk
from chameleon_image.pixels import fit_square
from chameleon_sdk import (
    CheckpointError,
    ComponentSpec,
    ConfigError,
    Image,
    TrainingError,
    open_image,
    plugin_api,
    read_jsonl,
)
from chameleon_sdk.plugin_api import ImageLossInputs, ImageTokenizerLoss, number_validator, to_rgb, write_torch_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
STATE_FILE = "trainer_state.pt"
LOSS_KIND = "image_tokenizer_loss"
#: options that may change between a run and its resumption (the others must match)
RESUMABLE_CHANGES = (
    "steps",
    "max_seconds",
    "checkpoint_dir",
    "checkpoint_every",
    "keep_last",
    "resume",
    "eval_batch_size",
)


_positive = number_validator(low=0, low_open=True, optional=True, label="image training option")
_fraction = number_validator(low=0, high=1, high_open=True, label="image training option")


def _specs(values: Any) -> tuple[ComponentSpec, ...]:
    if isinstance(values, (str, Mapping, ComponentSpec)):
        values = [values]
    return tuple(ComponentSpec.of(v) for v in values)


@attrs.frozen(kw_only=True)
class ImageTrainingOptions:
    """Options of :meth:`ImageTokenizer.fit` (and of ``chameleon train-image-tokenizer``'s ``training``).

    :param steps: optimiser steps (training stops earlier when ``max_seconds`` runs out).
    :param max_seconds: wall-clock budget; the learning-rate schedule follows whichever of steps
        and time is further along.
    :param batch_size: images per step.
    :param learning_rate: peak AdamW learning rate (linear warm-up, cosine decay to
        ``learning_rate * min_lr_ratio``).
    :param codebook_update: ``"loss"`` (codebook loss + commitment) or ``"ema"`` (exponential moving
        average of the assigned latents; commitment loss only).
    :param dead_code_threshold: a code used fewer times than this over ``restart_every`` steps is
        restarted; ``0`` disables restarts.
    :param held_out_fraction: share of the images kept out of training for the metrics (at most
        ``max_held_out`` images; at least one when the fraction is > 0).
    :param precision: ``"bf16"`` runs the convolutions under CPU/GPU bf16 autocast (quantization
        and losses stay in fp32); ``"fp32"`` does not.
    :param losses: extra loss terms, ``image_tokenizer_loss`` plugins by name or ``{"name", "options"}``
        (``lpips``, ``patch-gan``), applied in this order.
    :param checkpoint_dir: where to write ``step-NNNNNNNN/`` checkpoints (relative paths are taken
        from the working directory); None writes none.
    :param checkpoint_every: steps between checkpoints; 0 writes one after the last step only.
    :param keep_last: how many checkpoints to keep (older ones are deleted).
    :param resume: continue from the newest checkpoint in ``checkpoint_dir`` when there is one.
    """

    steps: int = attrs.field(default=1000, validator=_positive)
    max_seconds: float | None = attrs.field(default=None, validator=_positive)
    batch_size: int = attrs.field(default=16, validator=_positive)
    learning_rate: float = attrs.field(default=1e-3, validator=_positive)
    warmup_steps: int = 50
    min_lr_ratio: float = attrs.field(default=0.1, validator=_fraction)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    grad_clip: float | None = attrs.field(default=1.0, validator=_positive)
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    commitment_beta: float = 0.25
    codebook_update: Literal["loss", "ema"] = attrs.field(
        default="loss", validator=attrs.validators.in_(("loss", "ema"))
    )
    ema_decay: float = attrs.field(default=0.99, validator=_fraction)
    dead_code_threshold: float = 1.0
    restart_every: int = attrs.field(default=25, validator=_positive)
    held_out_fraction: float = attrs.field(default=0.1, validator=_fraction)
    max_held_out: int = attrs.field(default=256, validator=_positive)
    eval_batch_size: int = attrs.field(default=64, validator=_positive)
    precision: Literal["fp32", "bf16"] = attrs.field(default="fp32", validator=attrs.validators.in_(("fp32", "bf16")))
    seed: int = 0
    losses: tuple[ComponentSpec, ...] = attrs.field(default=(), converter=_specs)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_last: int = attrs.field(default=2, validator=_positive)
    resume: bool = True

    def __attrs_post_init__(self) -> None:
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.commitment_beta < 0 or self.dead_code_threshold < 0:
            raise ConfigError(
                "image training options warmup_steps, weight_decay, commitment_beta, dead_code_threshold must be >= 0"
            )
        if self.l1_weight < 0 or self.l2_weight < 0 or self.l1_weight + self.l2_weight == 0:
            raise ConfigError("image training options l1_weight and l2_weight must be >= 0 and not both 0")
        if self.checkpoint_every < 0:
            raise ConfigError(f"image training option checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.checkpoint_every and self.checkpoint_dir is None:
            raise ConfigError("image training option checkpoint_every needs checkpoint_dir (where to write them)")


# -- data ---------------------------------------------------------------------------------------------


def _uint8_square(image: PIL.Image.Image, resolution: int) -> torch.Tensor:
    array = np.asarray(fit_square(to_rgb(image), resolution), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def load_training_images(data: Any, resolution: int, max_pixels: int) -> torch.Tensor:
    """All training images as uint8 ``[N, 3, R, R]`` (or float pixels in ``[-1, 1]`` if given a tensor).

    ``data``: a folder (images found recursively, sorted), a ``.jsonl`` file of documents (their
    image segments), a sequence of PIL images / paths, or a ``[N, 3, R, R]`` float tensor. Every
    image is decoded up front, so a bad file fails before any training.
    """
    if isinstance(data, torch.Tensor):
        if data.dim() != 4 or data.shape[1:] != (3, resolution, resolution) or not data.is_floating_point():
            raise ConfigError(
                f"training pixels must be float [N, 3, {resolution}, {resolution}], got {list(data.shape)}"
            )
        return data.float()
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ConfigError(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(path)!r}")
            images: Sequence[Any] = files
        elif path.suffix == ".jsonl" and path.is_file():
            images = [seg.image for doc in read_jsonl(path) for seg in doc if isinstance(seg, Image)]
            if not images:
                raise ConfigError(f"{str(path)!r} has no image segments")
        else:
            raise ConfigError(f"training data {str(path)!r} must be a folder of images or a .jsonl file")
    else:
        images = list(data)
    out = []
    for item in images:
        if isinstance(item, (str, Path)):
            item = open_image(item, max_pixels=max_pixels)
        if not isinstance(item, PIL.Image.Image):
            raise ConfigError(f"training data: expected images or paths, got a {type(item).__name__}")
        out.append(_uint8_square(item, resolution))
    if not out:
        raise ConfigError("training data is empty")
    return torch.stack(out)


def _as_pixels(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 127.5 - 1.0 if batch.dtype == torch.uint8 else batch


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of pixel batches in ``[-1, 1]`` (peak = the full range)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


# -- trainer ------------------------------------------------------------------------------------------


@attrs.define
class _Progress:
    """Everything of a run that changes step by step, besides the weights and the optimizer."""

    step: int
    cursor: int
    perm: torch.Tensor
    usage: torch.Tensor
    restarted: int = 0
    elapsed: float = 0.0
    stats: dict[str, float] = attrs.field(factory=lambda: {"loss": float("nan")})


class ImageTokenizerTrainer:
    """Trains an :class:`~chameleon_image.ImageTokenizer` in place."""

    def __init__(self, tokenizer: Any, options: ImageTrainingOptions) -> None:
        if tokenizer.model.decoder is None:
            raise ConfigError("cannot train an image tokenizer without a decoder (option decoder=False)")
        self.tokenizer = tokenizer
        self.options = options
        self.model = tokenizer.model
        self.quantize = self.model.quantize
        n, d = self.quantize.embedding.weight.shape
        self.ema_count = torch.zeros(n)
        self.ema_sum = torch.zeros(n, d)
        self.losses = [self._build_loss(spec) for spec in options.losses]

    def _build_loss(self, spec: ComponentSpec) -> ImageTokenizerLoss:
        loss = chameleon_sdk.get_registry().build(LOSS_KIND, spec.name, spec.options)
        if not isinstance(loss, ImageTokenizerLoss):
            raise ConfigError(
                f"{LOSS_KIND} plugin {spec.name!r} does not follow chameleon_sdk.plugin_api.ImageTokenizerLoss "
                "(loss, update, state_dict, load_state_dict, to)"
            )
        loss.to(self.tokenizer.device)
        return loss

    def _autocast(self) -> Any:
        device = self.tokenizer.device.type
        return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.options.precision == "bf16")

    def _lr(self, progress: float, step: int) -> float:
        o = self.options
        if step < o.warmup_steps:
            return o.learning_rate * (step + 1) / o.warmup_steps
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return o.learning_rate * (o.min_lr_ratio + (1 - o.min_lr_ratio) * cosine)

    def step(
        self, pixels: torch.Tensor, optimizer: torch.optim.Optimizer, *, index: int = 0
    ) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
        """One optimiser step (number ``index``); returns scalars, the batch's codes and its (prepared) latents."""
        o, q = self.options, self.quantize
        with self._autocast():
            z = self.model.latents(pixels)
        b, d, h, w = z.shape
        flat = q.prepare(z.float().permute(0, 2, 3, 1).reshape(-1, d))
        codes = q.nearest(flat.detach())
        chosen = q.lookup(codes)
        if o.codebook_update == "ema":
            chosen = chosen.detach()
            codebook_loss = flat.new_zeros(())
        else:
            codebook_loss = F.mse_loss(chosen, flat.detach())
        commitment = F.mse_loss(flat, chosen.detach())
        straight = (flat + (chosen - flat).detach()).view(b, h, w, d).permute(0, 3, 1, 2)
        with self._autocast():
            recon = self.model.decode_latents(straight)
        recon = recon.float()
        l1 = (recon - pixels).abs().mean()
        l2 = (recon - pixels).pow(2).mean()
        stats: dict[str, float] = {}
        # The reconstruction loss grows by each plugin's term, in order (what taming calls nll).
        nll = o.l1_weight * l1 + o.l2_weight * l2
        last_layer = self.model.decoder.conv_out.weight
        for extra in self.losses:
            inputs = ImageLossInputs(
                pixels=pixels, reconstruction=recon, step=index, reconstruction_loss=nll, last_layer=last_layer
            )
            term, extra_stats = extra.loss(inputs)
            nll = nll + term
            stats.update(extra_stats)
        loss = nll + codebook_loss + o.commitment_beta * commitment
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], o.grad_clip)
        optimizer.step()
        if o.codebook_update == "ema":
            self._ema_update(flat.detach(), codes)
        if self.losses:
            detached = ImageLossInputs(
                pixels=pixels,
                reconstruction=recon.detach(),
                step=index,
                reconstruction_loss=nll.detach(),
                last_layer=last_layer,
            )
            for extra in self.losses:
                stats.update(extra.update(detached))
        stats.update(
            loss=float(loss.detach()),
            l1=float(l1.detach()),
            psnr=float(psnr(recon.detach(), pixels).mean()),
        )
        return stats, codes, flat.detach()

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        decay, n = self.options.ema_decay, self.ema_count.numel()
        flat = flat.cpu()
        codes = codes.cpu()
        count = torch.bincount(codes, minlength=n).float()
        total = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
        self.ema_count.mul_(decay).add_(count, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(total, alpha=1 - decay)
        # Laplace smoothing keeps unused codes finite; they are restarted separately.
        smoothed = (self.ema_count + 1e-5) / (self.ema_count.sum() + n * 1e-5) * self.ema_count.sum()
        weight = self.quantize.embedding.weight
        used = self.ema_count > 1e-3
        weight[used] = (self.ema_sum[used] / smoothed[used].unsqueeze(1)).to(weight)

    @torch.no_grad()
    def _restart(self, usage: torch.Tensor, flat: torch.Tensor, generator: torch.Generator) -> int:
        dead = torch.nonzero(usage < self.options.dead_code_threshold).flatten()
        if dead.numel() == 0 or flat.shape[0] == 0:
            return 0
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), generator=generator)
        fresh = flat.cpu()[pick]
        fresh = fresh + 0.01 * fresh.std() * torch.randn(fresh.shape, generator=generator)
        weight = self.quantize.embedding.weight
        weight[dead.to(weight.device)] = fresh.to(weight)
        self.ema_sum[dead] = fresh
        self.ema_count[dead] = 1.0
        return int(dead.numel())

    def fit(
        self, data: Any, *, progress: bool = True, callback: Callable[[int, dict[str, float]], None] | None = None
    ) -> dict[str, float]:
        """Train on ``data`` (see :func:`load_training_images`); returns held-out metrics.

        :param callback: called as ``callback(step, stats)`` after every step (and after that
            step's checkpoint, if one is due).
        """
        o = self.options
        tok = self.tokenizer.options
        images = load_training_images(data, tok.resolution, tok.max_image_pixels)
        generator = torch.Generator().manual_seed(o.seed)
        order = torch.randperm(images.shape[0], generator=generator)
        n_held = 0 if o.held_out_fraction == 0 else min(o.max_held_out, max(1, round(o.held_out_fraction * len(order))))
        if n_held >= len(order):
            raise ConfigError(f"training data has {len(order)} image(s): too few to hold {n_held} out for evaluation")
        held, train = images[order[:n_held]], images[order[n_held:]]

        device = self.tokenizer.device
        codebook = self.quantize.embedding.weight
        params = [p for p in self.model.parameters() if not (o.codebook_update == "ema" and p is codebook)]
        fused = device.type in ("cpu", "cuda")  # one AdamW kernel per step instead of a loop over tensors
        optimizer = torch.optim.AdamW(
            params, lr=o.learning_rate, betas=o.betas, weight_decay=o.weight_decay, fused=fused
        )
        state = _Progress(
            step=0,
            cursor=0,
            perm=torch.randperm(train.shape[0], generator=generator),
            usage=torch.zeros(tok.codebook_size),
        )
        checkpoints = Path(o.checkpoint_dir) if o.checkpoint_dir is not None else None
        if checkpoints is not None and o.resume and (latest := latest_checkpoint(checkpoints)) is not None:
            state = self._restore(latest, optimizer, generator, train.shape[0])
        start = time.perf_counter() - state.elapsed
        self.model.train()
        bar = plugin_api.progress_bar(
            total=o.steps, initial=min(state.step, o.steps), unit="step", desc="image tokenizer", enabled=progress
        )
        try:
            while state.step < o.steps:
                step = state.step
                elapsed = time.perf_counter() - start
                if o.max_seconds is not None and elapsed >= o.max_seconds:
                    break
                done = max(step / o.steps, elapsed / o.max_seconds if o.max_seconds else 0.0)
                for group in optimizer.param_groups:
                    group["lr"] = self._lr(done, step)
                if state.cursor + o.batch_size > train.shape[0]:
                    state.cursor, state.perm = 0, torch.randperm(train.shape[0], generator=generator)
                batch = _as_pixels(train[state.perm[state.cursor : state.cursor + o.batch_size]]).to(device)
                state.cursor += o.batch_size
                state.stats, codes, flat = self.step(batch, optimizer, index=step)
                state.usage += torch.bincount(codes.cpu(), minlength=tok.codebook_size).float()
                if o.dead_code_threshold > 0 and (step + 1) % o.restart_every == 0:
                    state.restarted += self._restart(state.usage, flat, generator)
                    state.usage.zero_()
                state.step = step + 1
                state.elapsed = time.perf_counter() - start
                if checkpoints is not None and (
                    state.step == o.steps or (o.checkpoint_every and state.step % o.checkpoint_every == 0)
                ):
                    self._save(checkpoints, state, optimizer, generator)
                bar.update(1)
                bar.set_postfix(loss=f"{state.stats['loss']:.4f}", psnr=f"{state.stats['psnr']:.1f}")
                if callback is not None:
                    callback(step, state.stats)
        finally:
            bar.close()
            self.model.eval()
        seconds = time.perf_counter() - start
        metrics = self.evaluate(held if n_held else train[: o.max_held_out])
        metrics.update(
            steps=float(state.step),
            seconds=seconds,
            images_per_second=state.step * o.batch_size / max(seconds, 1e-9),
            final_loss=state.stats["loss"],
            restarted_codes=float(state.restarted),
            train_images=float(train.shape[0]),
            held_out_images=float(n_held),
        )
        return metrics

    # -- checkpoints ------------------------------------------------------------------------------

    def _save(self, root: Path, state: _Progress, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> Path:
        """Write ``root/step-NNNNNNNN`` atomically, then delete all but the newest ``keep_last``."""
        root.mkdir(parents=True, exist_ok=True)
        target = plugin_api.step_directory(root, state.step)
        trainer_state = {
            "options": chameleon_sdk.to_dict(self.options),
            "train_images": int(state.perm.numel()),
            "step": state.step,
            "cursor": state.cursor,
            "perm": state.perm,
            "usage": state.usage,
            "restarted": state.restarted,
            "elapsed": state.elapsed,
            "stats": state.stats,
            "optimizer": optimizer.state_dict(),
            "ema_count": self.ema_count,
            "ema_sum": self.ema_sum,
            "losses": [loss.state_dict() for loss in self.losses],
            "rng": {"data": generator.get_state(), **plugin_api.global_rng_state()},
        }
        with plugin_api.staging_directory(target) as tmp:
            chameleon_sdk.save_image_tokenizer(self.tokenizer, tmp / "tokenizer", format="native")
            write_torch_file(trainer_state, tmp / STATE_FILE)
        plugin_api.prune_step_directories(root, self.options.keep_last)
        return target

    def _restore(
        self, path: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator, train_images: int
    ) -> _Progress:
        plugin_api.verify_manifest(path)
        try:
            saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for a corrupt or unsafe file
            raise CheckpointError(f"cannot read {str(path / STATE_FILE)!r}: {exc}") from exc
        mine = chameleon_sdk.to_dict(self.options)
        changed = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved["options"].get(k, mine[k]) != mine[k])
        if changed or saved["train_images"] != train_images:
            details = [f"{k}: checkpoint {saved['options'][k]!r}, now {mine[k]!r}" for k in changed]
            if saved["train_images"] != train_images:
                details.append(f"training images: checkpoint {saved['train_images']}, now {train_images}")
            raise TrainingError(
                f"cannot resume from {str(path)!r}: the run differs ({'; '.join(details)}); "
                "pass resume=False or another checkpoint_dir to start afresh"
            )
        self.tokenizer.load(path / "tokenizer", format="native")
        optimizer.load_state_dict(saved["optimizer"])
        self.ema_count.copy_(saved["ema_count"])
        self.ema_sum.copy_(saved["ema_sum"])
        if len(saved["losses"]) != len(self.losses):
            raise TrainingError(f"cannot resume from {str(path)!r}: it has {len(saved['losses'])} loss plugin state(s)")
        for loss, loss_state in zip(self.losses, saved["losses"], strict=True):
            loss.load_state_dict(loss_state)
        generator.set_state(saved["rng"]["data"])
        plugin_api.set_global_rng_state(saved["rng"])
        return _Progress(
            step=int(saved["step"]),
            cursor=int(saved["cursor"]),
            perm=saved["perm"],
            usage=saved["usage"],
            restarted=int(saved["restarted"]),
            elapsed=float(saved["elapsed"]),
            stats=dict(saved["stats"]),
        )

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> dict[str, float]:
        """PSNR (dB, mean over images), codebook usage (share of codes used) and perplexity on ``images``."""
        device, bs = self.tokenizer.device, self.options.eval_batch_size
        scores, all_codes = [], []
        for part in images.split(bs):
            pixels = _as_pixels(part).to(device)
            codes = self.model.encode(pixels)
            scores.append(psnr(self.model.decode(codes).float(), pixels).cpu())
            all_codes.append(codes.flatten().cpu())
        codes = torch.cat(all_codes)
        counts = torch.bincount(codes, minlength=self.tokenizer.codebook_size).float()
        probs = counts / counts.sum()
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        return {
            "psnr": float(torch.cat(scores).mean()),
            "codebook_usage": float((counts > 0).float().mean()),
            "codes_used": float((counts > 0).sum()),
            "perplexity": float(entropy.exp()),
        }


def latest_checkpoint(root: Path) -> Path | None:
    """The newest ``step-NNNNNNNN`` directory under ``root`` (each is written atomically), or None."""
    found = plugin_api.step_directories(root)
    return found[-1][1] if found else None
