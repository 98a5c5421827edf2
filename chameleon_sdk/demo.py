"""``chameleon demo``: the most complete end-to-end path that exists, using only the public API.

Today: train the sentencepiece text tokenizer on the bundled corpus, round-trip an interleaved
document through the pipeline, save and reload the pipeline, and list the plugins. Later issues grow
this into the full Shapes World demo (train, caption, draw, evaluate).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from chameleon_sdk.config import ComponentSpec, PipelineConfig, atomic_write_text
from chameleon_sdk.document import Document
from chameleon_sdk.errors import ChameleonError
from chameleon_sdk.pipeline import Pipeline
from chameleon_sdk.plugins import available_plugins


def bundled_corpus() -> list[str]:
    """The small text corpus shipped with the package (one training sentence per line)."""
    text = resources.files("chameleon_sdk").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def run_demo(out: str | Path, *, quick: bool = False) -> dict[str, Any]:
    """Run the demo, write ``out/manifest.json`` and ``out/model/``, and return the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.2f}s] {msg}", flush=True)

    config = PipelineConfig(text_tokenizer=ComponentSpec(name="sentencepiece", options={"vocab_size": 600}))
    pipe = Pipeline.from_config(config)
    corpus = bundled_corpus()
    say(f"training the sentencepiece tokenizer on {len(corpus)} bundled lines")
    pipe.train_text_tokenizer(corpus)
    say(f"text vocabulary: {pipe.text_tokenizer.vocab_size} ids; unified vocabulary: {pipe.vocabulary!r}")

    document = Document.of("Here is a red circle 🟥 and, next to it, a blue square.\n数字 8192 — naïve café.")
    ids = pipe.tokenize(document, eos=True)
    restored = pipe.detokenize(ids)
    if restored != document:
        raise ChameleonError(f"round trip failed: {document!r} -> {restored!r}")
    say(f"round-tripped a document through {len(ids)} token ids: {ids[:12]}...")

    model_dir = pipe.save_pretrained(out / "model")
    reloaded = Pipeline.from_pretrained(model_dir)
    if reloaded.tokenize(document, eos=True) != ids:
        raise ChameleonError("the reloaded pipeline tokenizes differently from the saved one")
    say(f"saved and reloaded the pipeline from {model_dir}")

    plugins = [r.to_json() for r in available_plugins()]
    say("plugins:")
    for p in plugins:
        print(f"    {p['kind']:<18} {p['name']:<16} {p['provider']}")

    manifest = {
        "round_trip": {"document": document.text, "num_ids": len(ids), "ok": True},
        "vocabulary": pipe.vocabulary.to_json(),
        "plugins": [{k: p[k] for k in ("kind", "name", "provider")} for p in plugins],
        "model_dir": "model",
        "quick": quick,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    say(f"wrote {out / 'manifest.json'}")
    return manifest
