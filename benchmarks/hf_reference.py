"""The reference side of the benchmarks: random transformers Chameleon checkpoints of a given shape.

Shared by ``train_step.py`` and ``generate.py`` (run them as scripts: this folder is on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from chameleon_sdk.token_names import image_name  # the released IMGIMG spelling

NUM_CODES = 8192
OFFSET = 4
FULL = {"vocab": 16384, "hidden": 512, "layers": 8, "heads": 8, "intermediate": 1376, "batch": 4, "seq": 512}
#: a tiny VQ model: transformers builds one inside every Chameleon; its size is not what is measured
TINY_VQ_CONFIG = {
    "embed_dim": 4,
    "num_embeddings": 16,
    "latent_channels": 4,
    "base_channels": 32,
    "channel_multiplier": [1],
    "num_res_blocks": 1,
    "resolution": 8,
    "attn_resolutions": [],
}
SMALL = {"vocab": 4096, "hidden": 256, "layers": 4, "heads": 4, "intermediate": 688, "batch": 2, "seq": 256}


def num_codes(vocab_size: int) -> int:
    return min(NUM_CODES, vocab_size // 2)


def text_ids(vocab_size: int, batch: int, seq: int) -> torch.Tensor:
    """Random text token ids (after the image codes and structural tokens): no side masks them."""
    first = OFFSET + num_codes(vocab_size) + 3
    return torch.randint(first, vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))


def vocabulary_map(vocab_size: int) -> dict[str, int]:
    """A released-style map: image codes at ids 4.. (as many as fit), then the structural tokens."""
    codes = num_codes(vocab_size)

    names = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    names |= {image_name(c): OFFSET + c for c in range(codes)}
    end = OFFSET + codes
    return names | {"<eoss>": end, "<racm3:break>": end + 1, "<reserved08706>": end + 2}


def write_checkpoint(shape: dict[str, int], directory: Path) -> None:
    """A random transformers Chameleon of ``shape``, saved with ``save_pretrained``."""
    import transformers

    config = transformers.ChameleonConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_position_embeddings=4096,
        vocabulary_map=vocabulary_map(shape["vocab"]),
        vq_config=TINY_VQ_CONFIG,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    transformers.ChameleonForConditionalGeneration(config).save_pretrained(directory)
