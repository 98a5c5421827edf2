"""A synthetic mixed-modal token stream with a known entropy per modality.

Two "modalities" share one vocabulary, as text and image codes do in Chameleon, but differ in
entropy the way real ones do:

- **text-like tokens**: a first-order Markov chain whose every row is a Zipf distribution (exponent
  ``zipf_exponent``) over a random permutation of the ``text_vocab`` tokens: low entropy, highly
  predictable from the previous token.
- **image-code tokens**: blocks of ``image_length`` codes between ``boi`` and ``eoi``; each code is
  uniform over one of ``num_palettes`` random palettes of ``palette_size`` codes, the palette
  chosen by the text token right before ``boi`` (a cross-modal dependency): high entropy,
  ``log(palette_size)`` nats per code once the palette is known.

Ids: ``0`` bos, ``1`` eos, ``2`` boi, ``3`` eoi, then the text tokens, then the image codes.
Rows are packed documents (``bos`` starts one); attention and positions stay inside a document,
and the token after a document's last one is not a target.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from chameleon_sdk import ConfigError
from chameleon_sdk.plugin_api import IGNORE, Batch

__all__ = ["SyntheticMix", "SyntheticMixConfig"]

BOS, EOS, BOI, EOI = 0, 1, 2, 3
NUM_SPECIAL = 4


def _at_least(minimum: float) -> Any:
    def check(instance: object, attribute: attrs.Attribute, value: float) -> None:
        if value < minimum:
            raise ConfigError(f"{type(instance).__name__}.{attribute.name} must be >= {minimum}, got {value!r}")

    return check


def _probability(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{type(instance).__name__}.{attribute.name} must be in (0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class SyntheticMixConfig:
    """The synthetic language.

    :param text_vocab: number of text-like tokens.
    :param zipf_exponent: exponent of each Markov row's Zipf distribution (higher: lower entropy).
    :param image_codes: size of the image codebook.
    :param image_length: codes per image.
    :param num_palettes: distinct image "styles"; the text token before ``boi`` picks one.
    :param palette_size: codes per palette (an image code carries ``log(palette_size)`` nats).
    :param p_image: per text position, the chance that an image starts.
    :param p_end: per text position, the chance that the document ends.
    :param seed: fixes the language (transition table, palettes); batches have their own seeds.
    """

    text_vocab: int = attrs.field(default=256, validator=_at_least(2))
    zipf_exponent: float = attrs.field(default=1.8, validator=_at_least(0.0))
    image_codes: int = attrs.field(default=512, validator=_at_least(2))
    image_length: int = attrs.field(default=32, validator=_at_least(1))
    num_palettes: int = attrs.field(default=16, validator=_at_least(1))
    palette_size: int = attrs.field(default=128, validator=_at_least(1))
    p_image: float = attrs.field(default=0.04, validator=_probability)
    p_end: float = attrs.field(default=0.01, validator=_probability)
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.palette_size > self.image_codes:
            raise ConfigError(
                f"SyntheticMixConfig.palette_size ({self.palette_size}) must be <= image_codes ({self.image_codes})"
            )
        if self.p_image + self.p_end >= 1.0:
            raise ConfigError(f"SyntheticMixConfig: p_image + p_end must be < 1, got {self.p_image + self.p_end}")

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + self.text_vocab + self.image_codes


def _zipf(n: int, exponent: float) -> torch.Tensor:
    weights = torch.arange(1, n + 1, dtype=torch.float64) ** -exponent
    return weights / weights.sum()


class SyntheticMix:
    """A :class:`chameleon_sdk.plugin_api.BatchSource` of packed synthetic rows; ``batch_at`` is pure in
    (step, micro)."""

    def __init__(self, config: SyntheticMixConfig, *, batch_size: int, seq_len: int, seed: int = 0) -> None:
        if batch_size < 1 or seq_len < 2:
            raise ConfigError(f"SyntheticMix: need batch_size >= 1 and seq_len >= 2, got {batch_size}, {seq_len}")
        self.config, self.batch_size, self.seq_len, self.seed = config, batch_size, seq_len, seed
        language = torch.Generator().manual_seed(config.seed)
        zipf = _zipf(config.text_vocab, config.zipf_exponent)
        # row i: the Zipf weights laid on a random permutation of the text tokens
        order = torch.stack([torch.randperm(config.text_vocab, generator=language) for _ in range(config.text_vocab)])
        transitions = torch.zeros(config.text_vocab, config.text_vocab, dtype=torch.float64)
        transitions.scatter_(1, order, zipf.expand(config.text_vocab, -1).contiguous())
        self.text_cdf = transitions.cumsum(dim=1).float()
        palettes = [torch.randperm(config.image_codes, generator=language) for _ in range(config.num_palettes)]
        self.palettes = torch.stack(palettes)[:, : config.palette_size]
        self.text_offset = NUM_SPECIAL
        self.image_offset = NUM_SPECIAL + config.text_vocab

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def counters(self) -> dict[str, Any]:
        return {}

    def stage(self, step: int) -> int:
        return 1

    def entropies(self) -> dict[str, float]:
        """Nats per token: ``text`` (a text token given the previous one), ``image`` (a code given its palette)."""
        p = _zipf(self.config.text_vocab, self.config.zipf_exponent)
        return {"text": float(-(p * p.log()).sum()), "image": math.log(self.config.palette_size)}

    def batch_at(self, step: int, micro: int = 0) -> Batch:
        """Training batch of optimizer step ``step`` (micro-batch ``micro``)."""
        return self._batch((self.seed * 1_000_003 + step) * 1009 + micro)

    def eval_batch(self, index: int) -> Batch:
        """Held-out batch ``index`` (drawn from a stream the training batches never use)."""
        return self._batch(-(self.seed * 1_000_003 + index + 1))

    def _batch(self, key: int) -> Batch:
        c = self.config
        gen = torch.Generator().manual_seed(key % (2**63))
        rows, length = self.batch_size, self.seq_len + 1
        tokens = torch.empty(rows, length, dtype=torch.long)
        docs = torch.empty(rows, length, dtype=torch.long)
        tokens[:, 0], docs[:, 0] = BOS, 0
        prev_text = torch.randint(c.text_vocab, (rows,), generator=gen)
        image_left = torch.zeros(rows, dtype=torch.long)  # codes still to emit; -1: in text
        image_left -= 1
        palette = torch.zeros(rows, dtype=torch.long)
        for t in range(1, length):
            last = tokens[:, t - 1]
            u = torch.rand(rows, generator=gen)
            # the candidates for this position, then one choice per row by state
            text_next = torch.searchsorted(self.text_cdf[prev_text], torch.rand(rows, 1, generator=gen)).squeeze(1)
            text_next = text_next.clamp(max=c.text_vocab - 1)
            code = self.palettes[palette, torch.randint(c.palette_size, (rows,), generator=gen)]
            new_doc = last == EOS
            in_image = image_left > 0
            closing = image_left == 0
            ends = (u < c.p_end) & (last != BOS)
            opens = (u >= c.p_end) & (u < c.p_end + c.p_image)
            text = ~(new_doc | in_image | closing | ends | opens)
            out = torch.where(text, text_next + self.text_offset, torch.full_like(last, EOS))
            out = torch.where(opens & ~(new_doc | in_image | closing), torch.full_like(last, BOI), out)
            out = torch.where(closing, torch.full_like(last, EOI), out)
            out = torch.where(in_image, code + self.image_offset, out)
            out = torch.where(new_doc, torch.full_like(last, BOS), out)
            tokens[:, t] = out
            docs[:, t] = docs[:, t - 1] + new_doc.long()
            # state updates
            started = out == BOI
            palette = torch.where(started, prev_text % c.num_palettes, palette)
            image_left = torch.where(started, torch.full_like(image_left, c.image_length), image_left)
            image_left = torch.where(in_image | closing, image_left - 1, image_left)
            prev_text = torch.where(text, text_next, prev_text)
            prev_text = torch.where(
                new_doc, torch.randint(c.text_vocab, (rows,), generator=gen), prev_text
            )  # a fresh document
        targets = tokens[:, 1:].clone()
        targets[docs[:, 1:] != docs[:, :-1]] = IGNORE  # the next document's bos is not predictable
        return Batch(input_ids=tokens[:, :-1].contiguous(), targets=targets, document_ids=docs[:, :-1].contiguous())
