"""The continuous batcher's forward pass over its live rows: eager, or compiled for a few row counts.

A compiled step has a fixed row count (one compile each: 9-15 s with ``compile=True``, 19-35 s
frozen, at the bench config on two cores), while the batch grows and shrinks by a request at a
time. So the compiled batch runs at the next of a few row counts (:func:`row_counts`: 1, 2, 4, 8...
and ``max_rows``), padded with idle rows. Where decoding reads the weights at the memory's speed an
idle row costs little (bench config, bf16, frozen: 2.6 ms a step at 1 row, 3.2 at 4, 4.2 at 8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from chameleon_sdk.errors import ConfigError
from chameleon_sdk.generation.compiled import CompileChoice, compile_decode_step
from chameleon_sdk.model import ChameleonModel, KVCache

__all__ = ["BatchForward", "check_compile", "row_counts"]


def row_counts(max_rows: int) -> list[int]:
    """The row counts a compiled batch runs at: the powers of two below ``max_rows``, and ``max_rows``."""
    return [2**k for k in range(max_rows.bit_length()) if 2**k < max_rows] + [max_rows]


def check_compile(compile: CompileChoice, max_rows: int, device: torch.device) -> None:
    """Raise :class:`ConfigError` if a batch of ``max_rows`` on ``device`` cannot run ``compile``d:
    off a CPU, or at more row counts than dynamo keeps compiled graphs of one function."""
    if not compile:
        return
    if device.type != "cpu":
        raise ConfigError(
            f"compiling the served decode step runs on a CPU; the model is on {device}: serve it without compile"
        )
    counts = row_counts(max_rows)
    if len(counts) > (limit := torch._dynamo.config.recompile_limit):
        raise ConfigError(
            f"compiling the served decode step for max_rows={max_rows} takes {len(counts)} row counts "
            f"({counts}), and dynamo keeps {limit} compiled graphs of a step: serve fewer rows"
        )


class BatchForward:
    """One forward pass of the next token of the first rows of ``cache``.

    :param compile: as :func:`~chameleon_sdk.generation.generate_tokens`'s ``compile``, on a CPU.
        Call :meth:`compile_steps` on the thread that decodes before the first pass.
    """

    def __init__(self, model: ChameleonModel, cache: KVCache, compile: CompileChoice) -> None:
        check_compile(compile, cache.batch, cache.lengths.device)
        self.model, self.cache, self.compile = model, cache, compile
        self._steps: dict[int, Callable[..., Any]] = {}

    def compile_steps(self) -> None:
        """Compile (or find in inductor's caches) the step at every row count, with a pass over
        empty rows each; the cache is empty again afterwards."""
        if not self.compile:
            return
        frozen = self.compile == "frozen"
        for rows in row_counts(self.cache.batch):
            view = self.cache.first_rows(rows)
            step = compile_decode_step(self.model, view, view.lengths.device, frozen=frozen)
            # one written slot before the pass, so it attends over two: a pass over one slot compiles
            # a graph for that size alone, and the one every step uses would wait for the first request
            self.cache.lengths[:rows] = 1
            step(torch.zeros(rows, 1, dtype=torch.long, device=view.lengths.device), cache=view)
            self._steps[rows] = step
        self.cache.reset()

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[live, vocab]`` fp32 next-token logits of rows ``0..live-1`` after ``tokens`` ``[live]``."""
        live = tokens.numel()
        if not self._steps:
            return self.model(tokens.unsqueeze(1), cache=self.cache.first_rows(live)).logits[:, -1].float()
        rows = next(count for count in self._steps if count >= live)
        if rows > live:
            # idle rows: at length 0 each writes one slot, so none is ever the longest row
            self.cache.lengths[live:rows] = 0
            self.cache.next_position[live:rows] = 0
            tokens = torch.cat([tokens, tokens.new_zeros(rows - live)])
        logits = self._steps[rows](tokens.unsqueeze(1), cache=self.cache.first_rows(rows)).logits
        return logits[:live, -1].float()
