"""TokenDecoder.prefill/advance, driven by a caller that runs the forward passes itself, decode the
same tokens as TokenDecoder.steps."""

from __future__ import annotations

import torch

import chameleon_sdk as cs
from chameleon_sdk.generation.engine import TokenDecoder


def _decoder(pipe, guidance):
    prompts = [pipe.tokenize("a red circle"), pipe.tokenize("two")]
    samplers = {"text": pipe.registry.build("sampler", "greedy", {})}
    return TokenDecoder(
        pipe.model, prompts, max_new_tokens=70, modes=["image", "text"], vocabulary=pipe.vocabulary,
        samplers=samplers, guidance=guidance, stop_ids=[pipe.vocabulary.specials["eos"]],
    )  # fmt: skip


def test_advance_with_outside_forward_passes_matches_steps(tiny_image_pipe):
    pipe = tiny_image_pipe
    guidance = cs.Guidance()
    reference = _decoder(pipe, guidance)
    expected = reference.run()
    decoder = _decoder(pipe, guidance)
    cache, logits = decoder.prefill()
    with torch.no_grad():
        while True:
            step = decoder.advance(logits)
            if bool(decoder.done.all()):
                break
            ids = step.tokens.repeat_interleave(decoder.k).unsqueeze(1)
            logits = pipe.model(ids, cache=cache).logits[:, -1].float()
    assert decoder.tokens == expected and decoder.reasons == reference.reasons
