"""Modality switching as logits constraints, one small state machine per row.

Outside a block a row may sample text (except the vocabulary's ``unsampled`` ids), its stop tokens
and (in interleaved mode) the begin token of a modality whose whole block still fits in the budget.
Inside a block the modality's :class:`BlockConstraint` decides: by default a fixed-length block
allows exactly ``block_length`` codes and then only the end token; a variable-length block allows
codes or the end token.

A modality plugin can contribute its own constraint by giving the modality object a method
``block_constraint(vocabulary) -> BlockConstraint``; the pipeline passes it to the decoder, so a new
modality gets correct switching with no core change.
"""

from __future__ import annotations

import torch

from chameleon_sdk.contracts.modality import BlockConstraint
from chameleon_sdk.errors import GenerationError
from chameleon_sdk.vocabulary import ModalityBlock, Vocabulary

__all__ = ["FixedLengthBlock", "ModalityStates", "VariableLengthBlock"]

TEXT_MODES = ("text", "interleaved")


class FixedLengthBlock:
    """Exactly ``block_length`` codes, then the end token (the image rule)."""

    def __init__(self, vocabulary: Vocabulary, block: ModalityBlock) -> None:
        if block.block_length is None:
            raise GenerationError(f"modality {block.modality!r} has no fixed block length")
        self.length = block.block_length
        self.tokens_needed: int | None = block.block_length + 2
        self._codes = vocabulary.code_mask(block.modality)
        self._end = torch.zeros(vocabulary.size, dtype=torch.bool)
        self._end[block.end_id] = True

    def allowed(self, codes_emitted: torch.Tensor) -> torch.Tensor:
        full = (codes_emitted >= self.length).unsqueeze(1)
        return torch.where(full, self._end.to(full.device), self._codes.to(full.device))


class VariableLengthBlock:
    """Codes, or the end token once at least ``min_codes`` codes were emitted."""

    def __init__(self, vocabulary: Vocabulary, block: ModalityBlock, *, min_codes: int = 1) -> None:
        self.tokens_needed: int | None = None
        self.min_codes = min_codes
        self._codes = vocabulary.code_mask(block.modality)
        self._end = torch.zeros(vocabulary.size, dtype=torch.bool)
        self._end[block.end_id] = True

    def allowed(self, codes_emitted: torch.Tensor) -> torch.Tensor:
        may_end = (codes_emitted >= self.min_codes).unsqueeze(1)
        codes, end = self._codes.to(may_end.device), self._end.to(may_end.device)
        return codes.unsqueeze(0) | (end.unsqueeze(0) & may_end)


def default_constraint(vocabulary: Vocabulary, modality: str) -> BlockConstraint:
    block = vocabulary.block(modality)
    if block.block_length is not None:
        return FixedLengthBlock(vocabulary, block)
    return VariableLengthBlock(vocabulary, block)


class ModalityStates:
    """Per-row decoding state and the allowed-token mask it implies.

    :param modes: one mode per row: ``"text"``, ``"interleaved"``, or a modality name (generate
        exactly one block of it, then stop).
    :param stop_ids: tokens that end a row (outside blocks).
    :param constraints: per-modality overrides of the default block constraints.
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        modes: list[str],
        *,
        stop_ids: list[int],
        max_new_tokens: int,
        constraints: dict[str, BlockConstraint] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.vocabulary = vocabulary
        self.names = vocabulary.modalities
        for mode in modes:
            if mode not in TEXT_MODES and mode not in self.names:
                raise GenerationError(
                    f"unknown generation mode {mode!r}; expected 'text', 'interleaved' or a modality of the "
                    f"vocabulary: {self.names}"
                )
        self.constraints = {
            name: (constraints or {}).get(name) or default_constraint(vocabulary, name) for name in self.names
        }
        rows = len(modes)
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        self.modes = list(modes)
        # -1: outside any block; i: inside a block of modality self.names[i]
        self.open_block = torch.full((rows,), -1, dtype=torch.long, device=self.device)
        self.codes_emitted = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.generated = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.block_mode = torch.tensor([m not in TEXT_MODES for m in modes], device=self.device)

        size = vocabulary.size
        text = vocabulary.sampled_text_mask().to(self.device)
        stops = torch.zeros(size, dtype=torch.bool, device=self.device)
        stops[torch.tensor(stop_ids, dtype=torch.long)] = True
        self.stop_mask = stops
        self.begin_ids = torch.tensor([vocabulary.block(n).begin_id for n in self.names], dtype=torch.long)
        self.end_ids = torch.tensor([vocabulary.block(n).end_id for n in self.names], dtype=torch.long)
        needed = [self.constraints[n].tokens_needed for n in self.names]
        self.tokens_needed = torch.tensor([2 if n is None else n for n in needed], dtype=torch.long, device=self.device)
        # Outside blocks: text rows may sample text and stops; interleaved rows also begin tokens.
        self.outside = (text | stops).unsqueeze(0).repeat(rows, 1)
        self.may_begin = torch.tensor([m == "interleaved" for m in modes], device=self.device)
        self.token_to_block = torch.full((size,), -1, dtype=torch.long)
        self.token_to_block[self.begin_ids] = torch.arange(len(self.names))
        self.is_end = torch.zeros(size, dtype=torch.bool)
        self.is_end[self.end_ids] = True
        self.token_to_block, self.is_end = self.token_to_block.to(self.device), self.is_end.to(self.device)
        self.begin_ids, self.end_ids = self.begin_ids.to(self.device), self.end_ids.to(self.device)
        # when no row is in a block or may begin one (their begin tokens are never allowed), the state
        # and its mask stay as they are: the per-step methods skip their ~25 small tensor ops (a tenth
        # of a compiled bf16 step at the bench config)
        can_open = bool(self.may_begin.any() or self.block_mode.any())
        self._text_allowed = None if can_open else self._allowed()

    def begin_block_rows(self) -> list[tuple[int, int]]:
        """``(row, begin_id)`` for rows in a modality mode: their prompt must end with the begin token."""
        return [(r, int(self.vocabulary.block(m).begin_id)) for r, m in enumerate(self.modes) if m not in TEXT_MODES]

    def open_blocks_for_mode_rows(self) -> None:
        """Mark modality-mode rows as inside their block (their begin token was part of the prompt)."""
        for r, mode in enumerate(self.modes):
            if mode not in TEXT_MODES:
                self.open_block[r] = self.names.index(mode)

    @property
    def text_only(self) -> bool:
        """No row is in a block, and none may begin one."""
        return self._text_allowed is not None

    def allowed(self) -> torch.Tensor:
        """``[rows, V]`` bool mask of the tokens each row may sample next."""
        if self._text_allowed is not None:
            return self._text_allowed.clone()
        return self._allowed()

    def _allowed(self) -> torch.Tensor:
        allowed = self.outside.clone()
        if self.names:
            remaining = self.max_new_tokens - self.generated
            fits = remaining.unsqueeze(1) >= self.tokens_needed.unsqueeze(0)  # [rows, M]
            begin_ok = fits & self.may_begin.unsqueeze(1)
            allowed[:, self.begin_ids] = begin_ok
        for i, name in enumerate(self.names):  # a loop over modalities, not tokens
            rows = torch.nonzero(self.open_block == i).flatten()
            if rows.numel():
                allowed[rows] = self.constraints[name].allowed(self.codes_emitted[rows])
        return allowed

    def inside(self, modality: str | None) -> torch.Tensor:
        """``[rows]`` bool: which rows are inside a block of ``modality`` (``None``: of any modality)."""
        if modality is None:
            return self.open_block >= 0
        if modality not in self.names:
            return torch.zeros_like(self.block_mode)
        return self.open_block == self.names.index(modality)

    def update(self, tokens: torch.Tensor) -> torch.Tensor:
        """Advance every row by its sampled token; returns ``[rows]`` bool: a block-mode row just finished."""
        self.generated += 1
        if self.text_only:
            return torch.zeros_like(self.block_mode)
        was_inside = self.open_block >= 0
        began = self.token_to_block[tokens]
        ended = was_inside & self.is_end[tokens]
        self.codes_emitted = torch.where(was_inside & ~ended, self.codes_emitted + 1, self.codes_emitted)
        self.open_block = torch.where(ended, torch.full_like(self.open_block, -1), self.open_block)
        opening = ~was_inside & (began >= 0)
        self.open_block = torch.where(opening, began, self.open_block)
        self.codes_emitted = torch.where(opening | ended, torch.zeros_like(self.codes_emitted), self.codes_emitted)
        return ended & self.block_mode

    def is_stop(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[rows]`` bool: the token is a stop token sampled outside a block."""
        if self.text_only:
            return self.stop_mask[tokens]
        return self.stop_mask[tokens] & (self.open_block < 0)
