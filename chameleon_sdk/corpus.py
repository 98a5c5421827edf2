"""The small English corpus shipped with the package, to train a text tokenizer without downloads."""

from __future__ import annotations

from importlib import resources

__all__ = ["bundled_corpus"]


def bundled_corpus() -> list[str]:
    """The small text corpus shipped with the package (one training sentence per line)."""
    text = resources.files("chameleon_sdk").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]
