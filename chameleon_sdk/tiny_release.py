"""Tiny checkpoints in the released layouts, for tests and runnable examples.

There are no model hubs here, so the SDK writes its own small stand-ins for the released folders:
random weights, a real byte-level BPE ``tokenizer.json`` trained on a few sentences in the released
style (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, image codes ``IMGIMG…`` from id 4, then ``<eoss>``,
``<racm3:break>`` and ``<reserved…>`` names), and a VQGAN image tokenizer. Every file a loader reads
is there, laid out as the release lays it out:

- ``"hf"``: ``config.json`` (with ``vocabulary_map`` and ``vq_config``), safetensors with the
  image tokenizer's encoder under ``model.vqmodel.``, ``tokenizer.json``, ``tokenizer_config.json``
  and ``processor_config.json`` (what ``transformers`` 5.x writes);
  ``"hf-legacy"`` writes ``preprocessor_config.json`` instead (older ``transformers``).
- ``"meta"`` (or ``"anole"``, the same layout): ``models/7b/{params.json, consolidate_params.json,
  consolidated.pth}`` and ``tokenizer/{text_tokenizer.json, vqgan.yaml, vqgan.ckpt}``; the weights
  are random either way, and the VQGAN has a decoder.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from chameleon_sdk.config import ComponentSpec, ModelConfig, PipelineConfig
from chameleon_sdk.pipeline import Pipeline
from chameleon_sdk.release_writer import write_release
from chameleon_sdk.token_names import image_name

__all__ = ["TINY_CORPUS", "tiny_bpe_json", "tiny_release_pipeline", "write_tiny_release"]

Layout = Literal["hf", "hf-legacy", "meta", "anole"]

TINY_CORPUS = (
    "What is in this picture? A red circle on a white background.",
    "A watercolour of a lighthouse, 1024 pixels wide, drawn in 2024.",
    "Describe the image: two blue squares and a yellow triangle!",
    "x <= y and a < b; </div> is a closing tag, <b>bold</b> too.",
    "Chameleon reads and writes text and images in one token space.",
)
#: the image codebook and grid of the tiny image tokenizers
TINY_CODES = 16
TINY_RESOLUTION = 16
TINY_MULTIPLIERS = (1, 1, 2)  # 16 px -> a 4 x 4 grid


def tiny_bpe_json(*, image_codes: int = TINY_CODES, vocab_size: int = 400, image_placeholder: str = "<image>") -> str:
    """A ``tokenizers`` JSON file in the released style: byte-level BPE (digits split one by one),
    specials first, ``image_codes`` ``IMGIMG`` names at ids ``4..``, ``<s>`` added by its post-processor.

    :param image_placeholder: the name of the id after end-of-turn: ``transformers`` calls it
        ``<image>``, Meta's file ``<reserved08707>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", *(image_name(c) for c in range(image_codes))]
    specials += ["<eoss>", "<racm3:break>", "<reserved08706>", image_placeholder, "<reserved08708>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return str(tokenizer.to_str())


def tiny_release_pipeline(*, meta: bool = False, seed: int = 0, decoder: bool | None = None) -> Pipeline:
    """A pipeline of tiny released-style components with random weights: the ``bpe`` tokenizer on
    :func:`tiny_bpe_json`, a 16 px VQGAN (4 x 4 codes from 16; with a decoder when ``decoder``, by
    default when ``meta``: one to train before writing either layout), and a 2-layer model over the
    tokenizer's ids."""
    torch.manual_seed(seed)
    text = tiny_bpe_json(image_placeholder="<reserved08707>" if meta else "<image>")
    image_options: dict[str, Any] = {
        "resolution": TINY_RESOLUTION,
        "base_channels": 32,
        "channel_multipliers": TINY_MULTIPLIERS,
        "num_res_blocks": 1,
        "latent_channels": 8,
        "embed_dim": 8,
        "codebook_size": TINY_CODES,
        "decoder": meta if decoder is None else decoder,
        "preprocessing": "meta" if meta else "hf",
    }
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(text, encoding="utf-8")
        config = PipelineConfig(
            text_tokenizer=ComponentSpec(name="bpe", options={"path": str(Path(tmp) / "tokenizer.json")}),
            modalities=(ComponentSpec(name="image", options=image_options),),
            vocabulary="tokenizer",
            model=ModelConfig(dim=32, num_layers=2, num_heads=4, num_kv_heads=2, max_seq_len=256),
            stability=(ComponentSpec(name="qk-norm", options={"sharing": "layer"}),),
        )
        pipe = Pipeline.from_config(config)
        pipe.model = pipe.build_model().eval()
    with torch.no_grad():  # untrained heads are near-uniform; a wider spread makes greedy choices clear-cut
        pipe.model.output.weight.normal_(0.0, 0.5)
    return pipe


def write_tiny_release(directory: str | Path, layout: Layout = "hf", *, seed: int = 0) -> Path:
    """Write a tiny checkpoint folder in ``layout`` (see the module docstring) and return its path."""
    directory = Path(directory)
    meta = layout in ("meta", "anole")
    pipe = tiny_release_pipeline(meta=meta, seed=seed)
    return write_release(pipe, directory, "original" if meta else "hf", legacy_processor=layout == "hf-legacy")
