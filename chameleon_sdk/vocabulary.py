"""The unified token space: text ids, special tokens and one code block per modality.

Two layouts:

- ``chameleon``: the released checkpoints' 65,536-id layout. Image codes sit inside the BPE range
  at ids 4..8195 (``id = code + 4``); ``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<eoss>``=8196 ends an
  image, ``<racm3:break>``=8197 begins one, ``<reserved08706>``=8710 ends a turn. Other modalities
  are appended after id 65,535.
- ``appended``: the text tokenizer's ids first (its own bos/eos/pad), then end-of-turn, then for each
  modality its begin token, end token and codebook, in config order. For models trained here.

All code <-> id conversions are tensor lookups, never per-token Python loops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch

from chameleon_sdk.errors import ConfigError, TokenizationError

__all__ = ["ModalityBlock", "Vocabulary"]

CHAMELEON_VOCAB_SIZE = 65536
CHAMELEON_IMAGE_CODES = 8192
CHAMELEON_IMAGE_OFFSET = 4
CHAMELEON_IMAGE_BLOCK = 1024
CHAMELEON_SPECIALS = {"bos": 0, "pad": 1, "eos": 2, "eot": 8710}
CHAMELEON_BEGIN_IMAGE = 8197
CHAMELEON_END_IMAGE = 8196

TEXT = -1  # modality_index value of text ids
SPECIAL = -2  # modality_index value of structural tokens (bos, eos, pad, eot, begin/end)


def _int(value: Any, what: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"Vocabulary: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _as_long(values: torch.Tensor | Sequence[int], what: str) -> torch.Tensor:
    if not isinstance(values, torch.Tensor):
        try:
            values = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise TokenizationError(f"{what} must be a sequence of integers: {exc}") from exc
    if values.numel() and (values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool):
        raise TokenizationError(f"{what} must be integers, got {values.dtype} values")
    return values.long()


@attrs.frozen(kw_only=True)
class ModalityBlock:
    """Where one modality lives in the vocabulary."""

    modality: str
    begin_id: int
    end_id: int
    code_ids: torch.Tensor = attrs.field(eq=False, repr=False)  # code c -> token id code_ids[c]
    block_length: int | None = None  # codes per payload when fixed (an image: 1024), else None

    @property
    def size(self) -> int:
        return int(self.code_ids.numel())

    def to_json(self) -> dict[str, Any]:
        start = int(self.code_ids[0]) if self.size else 0
        contiguous = bool(torch.equal(self.code_ids, torch.arange(start, start + self.size)))
        codes: Any = {"start": start, "size": self.size} if contiguous else self.code_ids.tolist()
        return {"begin_id": self.begin_id, "end_id": self.end_id, "code_ids": codes, "block_length": self.block_length}


class Vocabulary:
    """Maps between token ids and (text | special | modality code).

    Build one with :meth:`appended` or :meth:`chameleon`; serialise with :meth:`to_json`.
    """

    def __init__(
        self,
        *,
        layout: str,
        size: int,
        specials: Mapping[str, int],
        blocks: Sequence[ModalityBlock] = (),
        unsampled: Sequence[int] | torch.Tensor = (),
    ) -> None:
        self.layout = layout
        self.size = _int(size, "size", minimum=1)
        if not isinstance(specials, Mapping):
            raise ConfigError(f"Vocabulary: specials must map role names to ids, got {specials!r}")
        self.specials = {str(role): _int(i, f"special token {role!r}") for role, i in specials.items()}
        if not all(isinstance(b, ModalityBlock) for b in blocks):
            raise ConfigError("Vocabulary: blocks must be ModalityBlock values")
        self.blocks = {b.modality: b for b in blocks}
        if len(self.blocks) != len(blocks):
            raise ConfigError("Vocabulary: a modality appears twice")
        for role in ("bos", "eos", "pad"):
            if role not in self.specials:
                raise ConfigError(f"Vocabulary: special token {role!r} is required")
        self.modality_index = torch.full((size,), TEXT, dtype=torch.long)
        self.id_to_code = torch.full((size,), -1, dtype=torch.long)
        claimed = torch.zeros(size, dtype=torch.long)
        structural = [*self.specials.values()] + [
            _int(i, f"{b.modality!r} begin/end id") for b in blocks for i in (b.begin_id, b.end_id)
        ]
        for i, block in enumerate(blocks):
            ids = block.code_ids
            if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 1:
                raise ConfigError(f"Vocabulary: {block.modality!r} code ids must be a 1-D integer tensor")
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
                raise ConfigError(f"Vocabulary: {block.modality!r} codes fall outside [0, {size})")
            self.modality_index[ids] = i
            self.id_to_code[ids] = torch.arange(ids.numel())
            claimed.index_add_(0, ids, torch.ones_like(ids))
        ids = torch.tensor(structural, dtype=torch.long)
        if int(ids.min()) < 0 or int(ids.max()) >= size:
            raise ConfigError(f"Vocabulary: a special token id falls outside [0, {size})")
        claimed.index_add_(0, ids, torch.ones_like(ids))
        self.modality_index[ids] = SPECIAL
        if int(claimed.max()) > 1:
            clash = torch.nonzero(claimed > 1).flatten()[:5].tolist()
            raise ConfigError(f"Vocabulary: ids {clash} are claimed twice (specials and code blocks must not overlap)")
        self.unsampled = torch.unique(_as_long(unsampled, "Vocabulary: unsampled")).long()
        if self.unsampled.numel() and (
            int(self.unsampled.min()) < 0
            or int(self.unsampled.max()) >= size
            or bool((self.modality_index[self.unsampled] != TEXT).any())
        ):
            raise ConfigError("Vocabulary: unsampled ids must be text ids of the vocabulary")
        self._names = list(self.blocks)

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def appended(
        cls,
        *,
        text_size: int,
        bos_id: int,
        eos_id: int,
        pad_id: int,
        modalities: Mapping[str, int] | None = None,
        block_lengths: Mapping[str, int | None] | None = None,
    ) -> Vocabulary:
        """Text ids ``[0, text_size)``, then end-of-turn, then [begin, end, codes...] per modality.

        :param modalities: codebook size per modality, in layout order.
        :param block_lengths: codes per payload for modalities with fixed-length blocks.
        """
        _int(text_size, "text_size", minimum=1)
        if not isinstance(modalities or {}, Mapping):
            raise ConfigError(f"Vocabulary.appended: modalities must map names to codebook sizes, got {modalities!r}")
        next_id = text_size
        specials = {"bos": bos_id, "eos": eos_id, "pad": pad_id, "eot": next_id}
        next_id += 1
        blocks = []
        for name, codebook_size in (modalities or {}).items():
            if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size <= 0:
                raise ConfigError(
                    f"Vocabulary.appended: modality {name!r} needs a codebook size > 0, got {codebook_size!r}"
                )
            begin, end = next_id, next_id + 1
            codes = torch.arange(next_id + 2, next_id + 2 + codebook_size)
            length = (block_lengths or {}).get(name)
            blocks.append(ModalityBlock(modality=name, begin_id=begin, end_id=end, code_ids=codes, block_length=length))
            next_id += 2 + codebook_size
        return cls(layout="appended", size=next_id, specials=specials, blocks=blocks)

    @classmethod
    def chameleon(
        cls,
        *,
        extra_modalities: Mapping[str, int] | None = None,
        block_lengths: Mapping[str, int | None] | None = None,
    ) -> Vocabulary:
        """The released checkpoints' layout; further modalities are appended after id 65,535.

        Images are 1,024-code blocks (a 32 x 32 grid) unless ``block_lengths`` says otherwise.
        """
        lengths = {"image": CHAMELEON_IMAGE_BLOCK, **(block_lengths or {})}
        image = ModalityBlock(
            modality="image",
            begin_id=CHAMELEON_BEGIN_IMAGE,
            end_id=CHAMELEON_END_IMAGE,
            code_ids=torch.arange(CHAMELEON_IMAGE_OFFSET, CHAMELEON_IMAGE_OFFSET + CHAMELEON_IMAGE_CODES),
            block_length=lengths["image"],
        )
        extra = dict(extra_modalities or {})
        if extra.pop("image", CHAMELEON_IMAGE_CODES) != CHAMELEON_IMAGE_CODES:
            raise ConfigError(
                f"Vocabulary.chameleon: the image codebook is fixed at {CHAMELEON_IMAGE_CODES} codes, "
                f"got {(extra_modalities or {})['image']}"
            )
        base = cls(layout="chameleon", size=CHAMELEON_VOCAB_SIZE, specials=CHAMELEON_SPECIALS, blocks=[image])
        return base.with_modalities(extra, block_lengths=lengths)

    def with_modalities(
        self, modalities: Mapping[str, int], *, block_lengths: Mapping[str, int | None] | None = None
    ) -> Vocabulary:
        """This vocabulary with further modalities appended after its last id: for each, in order, a
        begin token, an end token and its codebook.

        :param modalities: codebook size per new modality.
        :param block_lengths: codes per payload for modalities with fixed-length blocks.
        """
        blocks, next_id = list(self.blocks.values()), self.size
        for name, codebook_size in modalities.items():
            if name in self.blocks:
                raise ConfigError(f"Vocabulary: modality {name!r} is already part of the vocabulary")
            _int(codebook_size, f"codebook size of {name!r}", minimum=1)
            codes = torch.arange(next_id + 2, next_id + 2 + codebook_size)
            length = (block_lengths or {}).get(name)
            blocks.append(
                ModalityBlock(modality=name, begin_id=next_id, end_id=next_id + 1, code_ids=codes, block_length=length)
            )
            next_id += 2 + codebook_size
        return Vocabulary(
            layout=self.layout, size=next_id, specials=self.specials, blocks=blocks, unsampled=self.unsampled
        )

    @classmethod
    def from_token_names(
        cls,
        names: Mapping[str, int],
        *,
        size: int,
        fallback_ids: Mapping[str, int | None] | None = None,
        block_lengths: Mapping[str, int | None] | None = None,
        where: str = "the token names",
    ) -> Vocabulary:
        """The vocabulary a name -> id mapping in the released checkpoints' convention describes
        (``tokenizer.json``'s ``model.vocab``, ``config.json``'s ``vocabulary_map``); see
        :mod:`chameleon_sdk.token_names`."""
        from chameleon_sdk.token_names import vocabulary_from_names

        return vocabulary_from_names(
            names, size=size, fallback_ids=fallback_ids, block_lengths=block_lengths, where=where
        )

    def token_names(self) -> dict[str, int]:
        """The names of the ids this vocabulary determines (specials and image codes) in the released
        convention: the inverse of :meth:`from_token_names` for those ids."""
        from chameleon_sdk.token_names import names_from_vocabulary

        return names_from_vocabulary(self)

    # -- queries --------------------------------------------------------------------------------

    @property
    def modalities(self) -> list[str]:
        return list(self._names)

    def block(self, modality: str) -> ModalityBlock:
        try:
            return self.blocks[modality]
        except KeyError:
            raise TokenizationError(
                f"the vocabulary has no modality {modality!r}; it has {self._names or 'none'}"
            ) from None

    def codes_to_ids(self, modality: str, codes: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Map codes of ``modality`` (any shape) to token ids."""
        block = self.block(modality)
        codes = _as_long(codes, f"{modality} codes")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= block.size):
            bad = codes[(codes < 0) | (codes >= block.size)].flatten()[0].item()
            raise TokenizationError(f"{modality} code {bad} is outside the codebook [0, {block.size})")
        return block.code_ids[codes]

    def ids_to_codes(self, modality: str, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Map token ids (any shape) back to codes of ``modality``."""
        index = self._names.index(self.block(modality).modality)
        ids = self._checked_ids(ids)
        wrong = self.modality_index[ids] != index
        if bool(wrong.any()):
            bad = ids[wrong].flatten()[0].item()
            raise TokenizationError(f"token id {bad} is not a code of modality {modality!r}")
        return self.id_to_code[ids]

    def code_mask(self, modality: str) -> torch.Tensor:
        """A ``[size]`` bool mask of the ids that are codes of ``modality``."""
        return self.modality_index == self._names.index(self.block(modality).modality)

    def text_mask(self) -> torch.Tensor:
        """A ``[size]`` bool mask of plain text ids (no specials, no modality codes)."""
        return self.modality_index == TEXT

    def sampled_text_mask(self) -> torch.Tensor:
        """A ``[size]`` bool mask of the text ids generation may sample: :meth:`text_mask` without
        :attr:`unsampled` (in the released vocabulary, names starting with ``<``, as Meta's decoder rules)."""
        mask = self.text_mask()
        mask[self.unsampled] = False
        return mask

    def _checked_ids(self, ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
        ids = _as_long(ids, "token ids")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.size):
            bad = ids[(ids < 0) | (ids >= self.size)].flatten()[0].item()
            raise TokenizationError(f"token id {bad} is outside the vocabulary [0, {self.size})")
        return ids

    # -- serialisation --------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = {
            "layout": self.layout,
            "size": self.size,
            "specials": dict(self.specials),
            "modalities": {name: block.to_json() for name, block in self.blocks.items()},
        }
        if self.unsampled.numel():
            data["unsampled"] = self.unsampled.tolist()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Vocabulary:
        try:
            blocks = []
            for name, b in data["modalities"].items():
                codes = b["code_ids"]
                code_ids = (
                    torch.arange(codes["start"], codes["start"] + codes["size"])
                    if isinstance(codes, Mapping)
                    else torch.tensor(codes, dtype=torch.long)
                )
                blocks.append(
                    ModalityBlock(
                        modality=name,
                        begin_id=b["begin_id"],
                        end_id=b["end_id"],
                        code_ids=code_ids,
                        block_length=b.get("block_length"),
                    )
                )
            return cls(
                layout=data["layout"],
                size=data["size"],
                specials=data["specials"],
                blocks=blocks,
                unsampled=data.get("unsampled", ()),
            )
        except (KeyError, TypeError, AttributeError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"malformed vocabulary description: missing or wrong {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        mods = ", ".join(f"{n}:{b.size}" for n, b in self.blocks.items())
        return f"Vocabulary(layout={self.layout!r}, size={self.size}, modalities=[{mods}])"
