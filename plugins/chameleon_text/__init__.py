"""Built-in text tokenizers. Registered through the ``chameleon_sdk`` entry-point group."""

from __future__ import annotations

import chameleon_sdk
from chameleon_text.bpe_tokenizer import BPEOptions, BPETokenizer
from chameleon_text.sentencepiece_tokenizer import SentencePieceOptions, SentencePieceTokenizer

__all__ = ["BPEOptions", "BPETokenizer", "SentencePieceOptions", "SentencePieceTokenizer"]


@chameleon_sdk.hookimpl
def register_text_tokenizers(register):
    register("sentencepiece", SentencePieceTokenizer, options=SentencePieceOptions)
    register("bpe", BPETokenizer, options=BPEOptions)
