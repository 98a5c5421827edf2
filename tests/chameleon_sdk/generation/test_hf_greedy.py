"""Greedy text generation from an HF-layout checkpoint equals transformers' generate(do_sample=False)."""

from __future__ import annotations

import pytest
import torch

import chameleon_sdk as cs
from chameleon_sdk.token_names import image_name  # the released IMGIMG spelling

transformers = pytest.importorskip("transformers")

NUM_CODES = 16
OFFSET = 4
TEXT = 40  # ids after the image block and the specials are plain text pieces


def _vocabulary_map() -> dict[str, int]:
    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    names |= {image_name(c): OFFSET + c for c in range(NUM_CODES)}
    end = OFFSET + NUM_CODES
    names |= {"<eoss>": end, "<racm3:break>": end + 1, "<reserved08706>": end + 2}
    names |= {f"piece{i}": end + 3 + i for i in range(TEXT)}
    return names


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    vocab_map = _vocabulary_map()
    config = transformers.ChameleonConfig(
        vocab_size=len(vocab_map),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocabulary_map=vocab_map,
        vq_config={
            "embed_dim": 4,
            "num_embeddings": NUM_CODES,
            "latent_channels": 4,
            "base_channels": 32,
            "channel_multiplier": [1],
            "num_res_blocks": 1,
            "resolution": 8,
            "attn_resolutions": [],
        },
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.ChameleonForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():  # random, large enough for varied argmaxes
            param.copy_(torch.randn_like(param) * 0.5 + (1.0 if name.endswith("norm.weight") else 0.0))
    directory = tmp_path_factory.mktemp("hf")
    model.save_pretrained(directory)
    return model, directory


@pytest.mark.parametrize("prompt", [[0, 30, 31, 32], [0, 45], [0, 50, 29, 61, 33, 40]])
def test_greedy_tokens_equal_transformers(registry, checkpoint, prompt):
    theirs_model, directory = checkpoint
    ours = cs.load_model(directory)
    vocab = ours.vocabulary
    assert vocab is not None and vocab.block("image").size == NUM_CODES
    eot = vocab.specials["eot"]
    # our text mode forbids every structural token but the stop tokens; ask transformers for the same
    forbidden = [
        vocab.specials["bos"],
        vocab.specials["pad"],
        vocab.block("image").begin_id,
        vocab.block("image").end_id,
    ]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        theirs = theirs_model.generate(
            ids, max_new_tokens=16, do_sample=False, suppress_tokens=forbidden, eos_token_id=[2, eot], pad_token_id=1
        )[0, len(prompt) :]
    got = cs.generate_tokens(ours, prompt, max_new_tokens=16)
    assert got.tolist() == theirs.tolist()
