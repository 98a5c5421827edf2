"""``chameleon demo``: the most complete end-to-end path that exists, using only the public API.

It draws a small seeded "Shapes World" (one coloured shape on white, with a caption), trains the
sentencepiece text tokenizer, the VQGAN image tokenizer and a small transformer with QK-norm and
z-loss (all by plugin name, through the Pipeline), then captions held-out images and draws images
from captions with classifier-free guidance. It writes ``index.html`` (prompts and outputs inline),
``manifest.json``, the run's ``metrics.jsonl`` and checkpoints under ``run/``, and the trained
pipeline in ``model/`` (``Pipeline.from_pretrained``, ``chameleon generate --model``).

``--quick`` is a short run for tests; quality needs the full run (and more: the Shapes World issue
sets the bar and the evaluator).
"""

from __future__ import annotations

import json
import random
import time
from importlib import resources
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageDraw
import torch

from chameleon_sdk.config import ComponentSpec, ModelConfig, PipelineConfig, atomic_write_text
from chameleon_sdk.document import Document, Image, Text, write_jsonl
from chameleon_sdk.errors import ChameleonError
from chameleon_sdk.generation import Guidance
from chameleon_sdk.pipeline import Pipeline
from chameleon_sdk.plugins import available_plugins
from chameleon_sdk.render import write_document
from chameleon_sdk.training import DataConfig, SourceConfig

COLORS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 70, 220), "yellow": (235, 200, 30)}
SHAPES = ("circle", "square", "triangle")
SIZE = 32
IMAGE_TOKENIZER = {  # 32 px -> 8 x 8 = 64 codes of 64
    "resolution": SIZE,
    "base_channels": 32,
    "channel_multipliers": [1, 1, 1],
    "num_res_blocks": 1,
    "latent_channels": 32,
    "embed_dim": 32,
    "codebook_size": 64,
    "codebook_metric": "cosine",
    "mid_attention": False,
}


def bundled_corpus() -> list[str]:
    """The small text corpus shipped with the package (one training sentence per line)."""
    text = resources.files("chameleon_sdk").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def draw_shape(color: str, shape: str, rng: random.Random, size: int = SIZE) -> PIL.Image.Image:
    """One shape of one colour on white, at a random place and scale (seeded by ``rng``)."""
    image = PIL.Image.new("RGB", (size, size), "white")
    draw = PIL.ImageDraw.Draw(image)
    radius = rng.uniform(0.22, 0.4) * size
    cx, cy = (rng.uniform(radius + 1, size - radius - 1) for _ in range(2))
    fill = COLORS[color]
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        r = radius * 0.85
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius * 0.8), (cx + radius, cy + radius * 0.8)], fill=fill)
    return image


def shapes_world(count: int, *, seed: int) -> list[tuple[str, str, PIL.Image.Image]]:
    """``count`` seeded (colour, shape, image) samples."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        color, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        samples.append((color, shape, draw_shape(color, shape, rng)))
    return samples


def run_demo(out: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the demo into ``out`` and return the manifest it writes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    torch.manual_seed(0)
    plan = (
        {"images": 300, "vq_steps": 40, "lm_steps": 60} if quick else {"images": 3000, "vq_steps": 600, "lm_steps": 600}
    )

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", flush=True)

    train = shapes_world(plan["images"], seed=0)
    held_out = shapes_world(8, seed=1)
    config = PipelineConfig(
        text_tokenizer=ComponentSpec(name="sentencepiece", options={"vocab_size": 512}),
        modalities=(ComponentSpec(name="image", options=IMAGE_TOKENIZER),),
        model=ModelConfig(dim=128, num_layers=2, num_heads=4, max_seq_len=128),
        attention=ComponentSpec(name="sdpa"),
        stability=(ComponentSpec(name="qk-norm"), ComponentSpec(name="z-loss")),
        trainer=ComponentSpec(
            name="local", options={"lr": 2e-3, "warmup_steps": 20, "checkpoint_every": 0, "progress": not quick}
        ),
    )
    pipe = Pipeline.from_config(config)
    captions = [f"a {c} {s}" for c, s, _ in train]
    say(f"training the text tokenizer on the bundled corpus and {len(captions)} captions")
    pipe.train_text_tokenizer([*bundled_corpus(), *captions])

    say(f"training the image tokenizer ({plan['vq_steps']} steps on {len(train)} images)")
    image_tokenizer = pipe.modalities["image"]
    vq = image_tokenizer.fit(  # type: ignore[attr-defined]
        [img for _, _, img in train],
        {"steps": plan["vq_steps"], "batch_size": 32, "learning_rate": 2e-3},
        progress=not quick,
    )
    say(f"image tokenizer: held-out PSNR {vq.get('psnr', float('nan')):.1f} dB")

    data_file = out / "data" / "train.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl([Document.of(f"a {c} {s}", img) for c, s, img in train], data_file, images="files")
    say(f"training the transformer ({plan['lm_steps']} steps; pairs rotated: half caption, half draw)")
    data = DataConfig(
        sources=(SourceConfig(path=str(data_file)),), seq_len=96, batch_size=16, cache_dir=str(out / "cache")
    )
    torch.manual_seed(0)
    result = pipe.train(data, steps=plan["lm_steps"], out_dir=out / "run", resume=False)
    say(f"final loss {result.final_loss:.3f}")

    say("captioning held-out images (image -> text) and drawing from captions (text -> image, CFG 2)")
    captioned = pipe.generate([Document.of(img) for _, _, img in held_out], max_new_tokens=8, stop=["\n"])
    prompts = [f"a {c} {s}" for c in COLORS for s in SHAPES][: 4 if quick else 12]
    drawn = pipe.generate(prompts, mode="image", max_new_tokens=66, guidance=Guidance(rows=2, scale_text=2.0))
    (out / "i2t").mkdir(exist_ok=True)
    (out / "t2i").mkdir(exist_ok=True)
    image_to_text, text_to_image = [], []
    for i, ((color, shape, img), doc) in enumerate(zip(held_out, captioned)):
        img.save(out / "i2t" / f"{i:03d}.png")
        image_to_text.append({"image": f"i2t/{i:03d}.png", "color": color, "shape": shape, "output": doc.text.strip()})
    for i, (prompt, doc) in enumerate(zip(prompts, drawn)):
        pictures = [s.image for s in doc if isinstance(s, Image)]
        if not pictures:
            raise ChameleonError(f"image mode produced no image for {prompt!r}")
        pictures[0].save(out / "t2i" / f"{i:03d}.png")
        _, color, shape = prompt.split()
        text_to_image.append({"prompt": prompt, "color": color, "shape": shape, "image": f"t2i/{i:03d}.png"})

    model_dir = pipe.save_pretrained(out / "model")
    sections = [
        (f"caption {i}", Document([Image(img), Text(" -> " + doc.text)]))
        for i, ((_, _, img), doc) in enumerate(zip(held_out, captioned))
    ]
    sections += [(f"draw: {p}", d) for p, d in zip(prompts, drawn)]
    write_document(out / "index.html", sections, title="chameleon-sdk demo: Shapes World")
    manifest = {
        "text_to_image": text_to_image,
        "image_to_text": image_to_text,
        "metrics": {
            "image_tokenizer": vq,
            "final_loss": result.final_loss,
            "steps": result.steps,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "plugins": [{k: r.to_json()[k] for k in ("kind", "name", "provider")} for r in available_plugins()],
        "model_dir": str(model_dir.relative_to(out)),
        "quick": quick,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=float) + "\n")
    say(f"wrote {out / 'index.html'}, {out / 'manifest.json'} and the trained pipeline in {model_dir}")
    return manifest
