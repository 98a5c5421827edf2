"""Greedy decoding speed: chameleon-sdk's static-cache decoder vs transformers' generate, same weights.

Config (the issue's): vocab 16,384, hidden 512, 8 layers, 8 heads, intermediate 1,376, fp32.
Prints tokens/s of both and the ratio ours/theirs at batch 1 and 8, time to first token, and our
image-block tokens/s with 3-row classifier-free guidance. Both sides run interleaved in one process;
each figure is the median of ``--repeats`` runs.

    .venv/bin/python benchmarks/generate.py [--tokens 256] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import attrs
import torch
from hf_reference import FULL, OFFSET, num_codes, write_checkpoint

import chameleon_sdk as cs


def build(shape: dict[str, int]):
    """The same random weights on both sides: a transformers save, loaded by each."""
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(shape, Path(tmp))
        theirs = transformers.ChameleonForConditionalGeneration.from_pretrained(tmp, attn_implementation="sdpa")
        ours = cs.load_model(tmp)
    return theirs.eval(), ours


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def hf_generate(model, prompt: torch.Tensor, n: int, *, exact: bool = True) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            prompt, max_new_tokens=n, min_new_tokens=n if exact else 0, do_sample=False, pad_token_id=1
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=32, help="prompt length")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--compile", action="store_true", help="also time generate_tokens(compile=True)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    theirs, ours = build(FULL)
    theirs, ours = theirs.to(args.device), ours.to(args.device)
    text_ids = torch.arange(OFFSET + num_codes(FULL["vocab"]) + 3, FULL["vocab"])
    n = args.tokens
    where = f"{args.threads} threads" if args.device == "cpu" else args.device
    print(f"greedy decode of {n} tokens, prompt {args.prompt}, fp32, {where}; median of {args.repeats}")
    print(f"{'batch':>5} {'ours tok/s':>11} {'theirs tok/s':>13} {'ratio':>6}")
    for batch in (1, 8):
        picks = torch.randint(len(text_ids), (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        prompt = text_ids[picks].to(args.device)
        prompt[:, 0] = 0
        mine, hf = [], []
        for _ in range(args.repeats):
            # no stop tokens on our side and min_new_tokens on theirs: both decode exactly n tokens
            mine.append(timed(lambda p=prompt: cs.generate_tokens(ours, p, max_new_tokens=n, stop_ids=[])))
            hf.append(timed(lambda p=prompt: hf_generate(theirs, p, n)))
        a, b = batch * n / statistics.median(mine), batch * n / statistics.median(hf)
        print(f"{batch:>5} {a:>11.1f} {b:>13.1f} {a / b:>6.2f}x")
        if args.compile:
            cs.generate_tokens(ours, prompt, max_new_tokens=n, stop_ids=[], compile=True)  # compile + warm up
            compiled = statistics.median(
                timed(lambda p=prompt: cs.generate_tokens(ours, p, max_new_tokens=n, stop_ids=[], compile=True))
                for _ in range(args.repeats)
            )
            c = batch * n / compiled
            print(f"{batch:>5} {c:>11.1f} {b:>13.1f} {c / b:>6.2f}x  (ours with compile=True, compile time excluded)")
    one = [0, *text_ids[: args.prompt - 1].tolist()]
    ttft_ours = statistics.median(
        timed(lambda: cs.generate_tokens(ours, one, max_new_tokens=1)) for _ in range(args.repeats)
    )
    ttft_theirs = statistics.median(
        timed(lambda: hf_generate(theirs, torch.tensor([one], device=args.device), 1)) for _ in range(args.repeats)
    )
    print(f"time to first token: ours {ttft_ours * 1e3:.1f} ms, theirs {ttft_theirs * 1e3:.1f} ms")
    block = 256  # codes per image here; the released model uses 1,024
    v = ours.vocabulary
    blocks = [attrs.evolve(b, block_length=block) for b in v.blocks.values()]
    vocab = cs.Vocabulary(layout=v.layout, size=v.size, specials=v.specials, blocks=blocks)
    guided = cs.Guidance()
    elapsed = timed(
        lambda: cs.generate_tokens(ours, one, max_new_tokens=block + 1, mode="image", vocabulary=vocab, guidance=guided)
    )
    rate = (block + 1) / elapsed
    print(f"image block of {block} codes, 3-row CFG: {rate:.1f} tok/s (transformers cannot generate images)")


if __name__ == "__main__":
    main()
