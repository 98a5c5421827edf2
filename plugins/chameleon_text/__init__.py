"""Built-in text tokenizers. Registered through the ``chameleon_sdk`` entry-point group."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chameleon_sdk import plugin_api

if TYPE_CHECKING:
    from chameleon_text.bpe_tokenizer import BPEOptions, BPETokenizer
    from chameleon_text.sentencepiece_tokenizer import SentencePieceOptions, SentencePieceTokenizer

__all__ = ["BPEOptions", "BPETokenizer", "SentencePieceOptions", "SentencePieceTokenizer"]
__getattr__ = plugin_api.lazy_module_attributes(__name__, __file__)


@plugin_api.hookimpl
def register_text_tokenizers(register):
    register(
        "sentencepiece",
        "chameleon_text.sentencepiece_tokenizer:SentencePieceTokenizer",
        options="chameleon_text.sentencepiece_tokenizer:SentencePieceOptions",
    )
    register("bpe", "chameleon_text.bpe_tokenizer:BPETokenizer", options="chameleon_text.bpe_tokenizer:BPEOptions")
