"""The tone task, measured: train a small model on "a 440 Hz tone lasting 80 ms" <-> the tone, then score it.

    python plugins/chameleon-audio/examples/tones_demo.py --out tones-out            # the full task
    python plugins/chameleon-audio/examples/tones_demo.py --out tones-out --fixed    # memorisable variant

Everything goes through the ordinary public API: ``Pipeline.from_config`` with the ``audio`` modality,
``pipe.train`` with the ``local`` trainer on a JSONL file of documents, ``pipe.generate`` in ``audio`` mode
(caption -> tone) and ``text`` mode (tone -> caption). Writes ``OUT/metrics.json``, the trained pipeline
in ``OUT/run/pipeline`` and a few generated clips as WAV files in ``OUT/wav``.

- pitch accuracy: the FFT peak of the tone generated from a held-out caption is within 3 % (half a
  semitone) of the asked pitch; greedy decoding gives one tone per caption (15 captions), so it is
  also scored with audio codes sampled (``--temperatures``), a different tone for every prompt;
- caption accuracy: the caption generated from a held-out tone names its pitch (``exact``: pitch and
  duration).

The full task draws a random amplitude (0.3-0.8) and phase for every tone, so a model must continue a
sinusoid it has not seen; ``--fixed`` uses one amplitude and phase, which a model can memorise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from chameleon_audio.tones import evaluate_tones, tone_pipeline, tone_samples, train_tones


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tones-out"))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--train-count", type=int, default=3000, help="training tones")
    parser.add_argument("--test-count", type=int, default=100, help="held-out tones (a different seed)")
    parser.add_argument("--fixed", action="store_true", help="one amplitude (0.5) and phase (0): memorisable")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--downsample", type=int, default=8, help="16 kHz samples per code")
    parser.add_argument("--bits", type=int, default=8, help="mu-law bits per code")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--temperatures", type=float, nargs="*", default=[0.8], help="also score audio sampled at these temperatures"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    pipe = tone_pipeline(
        downsample=args.downsample,
        bits=args.bits,
        dim=args.dim,
        num_layers=args.layers,
        num_heads=args.heads,
        lr=args.lr,
    )
    pipe.model = pipe.build_model().to(args.device)
    variant = {"amplitudes": (0.5, 0.5), "random_phase": False} if args.fixed else {}
    train = tone_samples(args.train_count, seed=args.seed, **variant)
    held_out = tone_samples(args.test_count, seed=args.seed + 1000, **variant)
    result = train_tones(pipe, train, args.out, steps=args.steps, batch_size=args.batch_size)
    trained_s = time.perf_counter() - started
    metrics = evaluate_tones(pipe, held_out)
    sampled = {}
    for temperature in args.temperatures:
        scores = evaluate_tones(pipe, held_out, audio_temperature=temperature, seed=args.seed)
        sampled[f"audio sampled at temperature {temperature}"] = {
            k: scores[k] for k in ("pitch_accuracy", "mean_duration_error_ms")
        }

    (args.out / "wav").mkdir(parents=True, exist_ok=True)
    for i, example in enumerate(metrics.pop("clips")[:6]):
        if example is not None:
            example.write_wav(args.out / "wav" / f"{i:02d}.wav")
    report = {
        "task": "fixed amplitude and phase" if args.fixed else "random amplitude and phase",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "final_loss": result.final_loss,
        "train_seconds": round(trained_s, 1),
        **metrics,
        "sampled": sampled,
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    summary = {k: report[k] for k in report if k not in ("examples", "args")}
    print(json.dumps(summary, indent=2))
    return report


if __name__ == "__main__":
    main()
