"""Dense vs modality-aware experts (``mot``): parameters, FLOPs per token and training-step time.

The bench config (vocab 16,384 = 8,192 text ids + specials + an 8,192-code image block, hidden 512,
8 layers, 8 heads, FFN 1,376, batch 4 x 512 tokens, fp32) with a 50/50 text/image token mix: each
row is 256 text tokens, then a 256-code image block. Both models start from the same seed; a step
is forward + backward + fused AdamW, as the ``local`` trainer runs it (loss in chunks of
positions). The two are timed interleaved in one process; times are medians over ``--steps`` steps
after one warm-up step each. ``--small`` shrinks the shape for a quick run.

MoT unties every block's attention projections, feed-forward network and norms (the paper's
setting), so its parameters grow by one copy of the blocks per extra group; each token still goes
through one copy, so its FLOPs per token equal the dense model's. FLOPs per trained token follow
``train_step.py``'s convention, ``6 N_active + 6 L H Dh T``, where ``N_active`` counts the matmul
parameters one token uses.

    .venv/bin/python benchmarks/mot.py [--small] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import chameleon_sdk as cs

FULL = {"text": 8189, "codes": 8192, "hidden": 512, "layers": 8, "heads": 8, "ffn": 1376, "batch": 4, "seq": 512}
SMALL = {"text": 2045, "codes": 2048, "hidden": 256, "layers": 4, "heads": 4, "ffn": 688, "batch": 2, "seq": 256}


def build(shape: dict[str, int], vocabulary: cs.Vocabulary, stability: list, seed: int = 0) -> cs.ChameleonModel:
    config = cs.ModelConfig(
        dim=shape["hidden"],
        num_layers=shape["layers"],
        num_heads=shape["heads"],
        ffn_dim=shape["ffn"],
        vocab_size=vocabulary.size,
        max_seq_len=shape["seq"],
    )
    torch.manual_seed(seed)
    return cs.build_model(config, stability=stability, vocabulary=vocabulary).train()


def half_text_half_image(shape: dict[str, int], vocabulary: cs.Vocabulary) -> torch.Tensor:
    batch, seq = shape["batch"], shape["seq"]
    gen = torch.Generator().manual_seed(0)
    text = torch.randint(3, shape["text"], (batch, seq // 2), generator=gen)
    block = vocabulary.block("image")
    codes = block.code_ids[torch.randint(block.size, (batch, seq // 2 - 2), generator=gen)]
    begin = torch.full((batch, 1), block.begin_id)
    end = torch.full((batch, 1), block.end_id)
    return torch.cat([text, begin, codes, end], dim=1)


def active_matmul_params(model: cs.ChameleonModel) -> int:
    """Matmul parameters one token uses: a grouped weight counts one group's slice."""
    total = 0
    for name, p in model.named_parameters():
        if name == "tok_embeddings.weight":
            continue
        grouped = p.dim() >= 2 and model.parameter_groups is not None and p.shape[0] == model.parameter_groups.count
        total += p[0].numel() if grouped and name.startswith("layers.") else p.numel()
    return total


def step_fn(model: cs.ChameleonModel, ids: torch.Tensor):
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1, fused=True
    )
    targets = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, targets=targets).loss.loss
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = SMALL if args.small else FULL
    vocabulary = cs.Vocabulary.appended(
        text_size=shape["text"], bos_id=0, eos_id=1, pad_id=2, modalities={"image": shape["codes"]}
    )
    ids = half_text_half_image(shape, vocabulary)
    arms = {"dense": ["qk-norm"], "mot": ["qk-norm", "mot"]}
    models = {name: build(shape, vocabulary, stability) for name, stability in arms.items()}
    steps = {name: step_fn(model, ids) for name, model in models.items()}
    for step in steps.values():
        step()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    config = models["dense"].config
    attention = 6 * config.num_layers * config.num_heads * config.head_dim * shape["seq"]
    image_share = float((ids >= vocabulary.block("image").code_ids[0]).float().mean())
    print(
        f"bench shape: vocab {vocabulary.size}, hidden {shape['hidden']}, {shape['layers']} layers, "
        f"batch {shape['batch']} x {shape['seq']}, fp32, {torch.get_num_threads()} threads; "
        f"{image_share:.0%} image codes"
    )
    print(f"{'':6} {'parameters':>12} {'active/token':>13} {'FLOPs/token':>12} {'step (median)':>14}")
    medians = {}
    for name, model in models.items():
        params = sum(p.numel() for p in model.parameters())
        active = active_matmul_params(model)
        medians[name] = statistics.median(times[name])
        flops = 6 * active + attention
        print(f"{name:6} {params:12,d} {active:13,d} {flops / 1e6:10.1f} M {medians[name] * 1e3:11.0f} ms")
    print(f"MoT / dense step time: {medians['mot'] / medians['dense']:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
