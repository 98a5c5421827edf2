"""Image tokenizer speed and quality: ours vs transformers' ChameleonVQVAE encoder, fp32 vs bf16.

For each config (``demo``: 64 px -> 8 x 8 codes of 256; ``default``: Chameleon's 512 px -> 32 x 32
codes of 8192, only with ``--full``) it prints, in one process on the same random weights:

- encode images/s (ours, and transformers' ``ChameleonVQVAE.encode`` on the same weights), the
  ratio ours/theirs and whether the codes are identical;
- decode images/s (transformers has no decoder);
- the same figures under bf16 autocast;
- training images/s for the demo config, fp32 vs bf16 autocast (the ratio decides the default).

``--train-steps N`` (or ``--train-seconds N``, whichever ends first) then trains the image
tokenizer exactly as ``chameleon demo`` does (``chameleon_apps.demo.IMAGE_TOKENIZER``, the demo's 4000
Shapes World training pictures, batch 32, learning rate 2e-3) and prints the PSNR of its
reconstructions of 240 pictures it never saw (the demo's evaluator set), codebook usage,
perplexity and the encode(decode(codes)) stability rate. ``--device cuda`` trains on a GPU.

    .venv/bin/python benchmarks/image_tokenizer.py [--threads 2] [--repeats 3] [--full] \
        [--skip-speed] [--train-steps 600] [--train-seconds 150] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time

import PIL.Image
import PIL.ImageDraw
import torch

import chameleon_sdk as cs

DEMO = {
    "resolution": 64,
    "base_channels": 32,
    "channel_multipliers": [1, 1, 2, 2],
    "num_res_blocks": 1,
    "latent_channels": 64,
    "embed_dim": 64,
    "codebook_size": 256,
}
DEFAULT: dict = {}  # Chameleon's released shape is the options' default


def shapes(n: int, size: int = 64, seed: int = 0) -> list[PIL.Image.Image]:
    rng = random.Random(seed)
    colors = [(220, 30, 30), (30, 170, 40), (30, 60, 220), (230, 210, 20)]
    out = []
    for _ in range(n):
        image = PIL.Image.new("RGB", (size, size), (255, 255, 255))
        draw = PIL.ImageDraw.Draw(image)
        r = rng.uniform(8, 19) * size / 64
        cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
        sides, color = rng.choice([0, 3, 4]), rng.choice(colors)
        if sides == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        else:
            a0 = rng.uniform(0, 2 * math.pi)
            corners = [
                (cx + r * math.cos(a0 + 2 * math.pi * i / sides), cy + r * math.sin(a0 + 2 * math.pi * i / sides))
                for i in range(sides)
            ]
            draw.polygon(corners, fill=color)
        out.append(image)
    return out


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one warm-up call when ``repeats > 1``."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_encoder(tokenizer):
    """transformers' ChameleonVQVAE with our tokenizer's weights (its encoder half)."""
    from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

    o = tokenizer.options
    config = ChameleonVQVAEConfig(
        embed_dim=o.embed_dim,
        num_embeddings=o.codebook_size,
        latent_channels=o.latent_channels,
        resolution=o.resolution,
        base_channels=o.base_channels,
        channel_multiplier=list(o.channel_multipliers),
        num_res_blocks=o.num_res_blocks,
        attn_resolutions=list(o.attn_resolutions),
        attn_type="vanilla" if o.mid_attention else "none",
    )
    model = ChameleonVQVAE(config).eval()
    state = {k: v for k, v in tokenizer.model.state_dict().items() if not k.startswith("decoder.")}
    model.load_state_dict(state, strict=True)
    return model


def bench_config(name: str, options: dict, batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    tokenizer = cs.get_registry().build("modality", "image", options)
    r = tokenizer.resolution
    pixels = torch.rand(batch, 3, r, r) * 2 - 1
    theirs = hf_encoder(tokenizer)
    codes = tokenizer.encode_batch(pixels)
    with torch.inference_mode():
        reference = theirs.encode(pixels).image_tokens.view(batch, -1)
    identical = torch.equal(codes, reference)
    grid = f"{tokenizer.grid_size}x{tokenizer.grid_size}"
    print(f"\n[{name}] {r} px -> {grid} codes of {tokenizer.codebook_size}, batch {batch}")
    print(f"  codes identical to transformers: {identical} ({int((codes == reference).sum())}/{codes.numel()})")
    for precision in ("fp32", "bf16"):
        bf16 = precision == "bf16"

        def ours_encode(bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                tokenizer.encode_batch(pixels)

        def theirs_encode(bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16), torch.inference_mode():
                theirs.encode(pixels)

        def ours_decode(bf16=bf16):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                tokenizer.decode_pixels(codes)

        t_ours, t_theirs, t_dec = (timed(f, repeats) for f in (ours_encode, theirs_encode, ours_decode))
        print(
            f"  {precision}: encode ours {batch / t_ours:8.2f} img/s, transformers {batch / t_theirs:8.2f} img/s, "
            f"ratio {t_theirs / t_ours:.2f}x | decode ours {batch / t_dec:8.2f} img/s (transformers: no decoder)"
        )


def bench_training(repeats: int) -> None:
    from chameleon_image import ImageTokenizerTrainer, ImageTrainingOptions

    torch.manual_seed(0)
    tokenizer = cs.get_registry().build("modality", "image", {**DEMO, "codebook_metric": "cosine"})
    pixels = torch.stack([tokenizer.preprocess(s) for s in shapes(32)])
    speeds = {}
    for precision in ("fp32", "bf16", "fp32", "bf16"):  # interleaved, so load changes hit both
        trainer = ImageTokenizerTrainer(tokenizer, ImageTrainingOptions(precision=precision))
        optimizer = torch.optim.AdamW(tokenizer.model.parameters(), lr=1e-4)
        tokenizer.model.train()
        seconds = timed(lambda t=trainer, o=optimizer: t.step(pixels, o), repeats)
        speeds.setdefault(precision, []).append(32 / seconds)
    tokenizer.model.eval()
    fp32, bf16 = max(speeds["fp32"]), max(speeds["bf16"])
    print(f"\n[train step, demo config, batch 32] fp32 {fp32:.1f} img/s, bf16 autocast {bf16:.1f} img/s")
    print(f"  bf16/fp32 training speed: {bf16 / fp32:.2f}x")


def train_demo(steps: int, seconds: float | None, precision: str, device: str) -> None:
    """The demo's image tokenizer training, then PSNR on unseen Shapes World pictures."""
    from chameleon_apps.demo import IMAGE_TOKENIZER, PLANS
    from chameleon_apps.shapes import sample_shapes

    plan = PLANS["default"]
    torch.manual_seed(0)
    tokenizer = cs.get_registry().build("modality", "image", IMAGE_TOKENIZER).to(device)
    train = [s.image for s in sample_shapes(plan.train_images, seed=0, size=plan.image_size)]
    unseen = [s.image for s in sample_shapes(plan.ground_truth_checks, seed=2, size=plan.image_size)]
    training = {"steps": steps, "batch_size": plan.vq_batch, "learning_rate": 2e-3, "precision": precision}
    if seconds:
        training["max_seconds"] = seconds
    metrics = tokenizer.fit(train, training, progress=False)
    pixels = torch.stack([tokenizer.preprocess(image) for image in unseen])
    codes = tokenizer.encode_batch(pixels)
    reconstructed = tokenizer.decode_pixels(codes)
    mse = ((reconstructed - pixels) / 2).pow(2).flatten(1).mean(1)
    unseen_psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()
    stable = float((tokenizer.encode_batch(reconstructed) == codes).float().mean())
    print(
        f"\n[demo image tokenizer, {metrics['steps']:.0f} steps of {plan.vq_batch} on {device} ({precision}), "
        f"{metrics['seconds']:.0f} s] PSNR on {len(unseen)} unseen pictures {float(unseen_psnr):.2f} dB "
        f"(on the {metrics['held_out_images']:.0f} held out of training: {metrics['psnr']:.2f} dB), "
        f"codes used {metrics['codes_used']:.0f}/{tokenizer.codebook_size}, perplexity {metrics['perplexity']:.1f}, "
        f"encode(decode(codes)) stability {stable:.3f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="also Chameleon's 512 px default config (slow on CPU)")
    parser.add_argument("--train-steps", type=int, default=0, help="train the demo's image tokenizer this many steps")
    parser.add_argument("--train-seconds", type=float, default=0.0, help="... or at most this long")
    parser.add_argument("--train-precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--device", default="cpu", help="where to train (cpu, cuda)")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    if not args.skip_speed:
        bench_config("demo", DEMO, batch=16, repeats=args.repeats)
        if args.full:
            bench_config("default (Chameleon 512)", DEFAULT, batch=1, repeats=1)
        bench_training(args.repeats)
    if args.train_steps > 0 or args.train_seconds > 0:
        steps = args.train_steps or 1_000_000
        train_demo(steps, args.train_seconds or None, args.train_precision, args.device)


if __name__ == "__main__":
    main()
