"""A static, pre-allocated key/value cache with a length per row.

All buffers are allocated once for ``batch`` rows and ``max_len`` slots, so shapes never change
while decoding (good for ``torch.compile`` and CUDA graphs). Each row keeps its own length, so the
rows of a batch may hold prompts of different lengths and advance independently.
"""

from __future__ import annotations

import torch

from chameleon_sdk.config import ModelConfig
from chameleon_sdk.errors import ConfigError

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of every layer for ``batch`` rows of up to ``max_len`` tokens:
    ``keys[layer]`` and ``values[layer]`` are ``[batch, kv_heads, max_len, head_dim]``.

    :param config: the model shape (layers, kv heads, head dim).
    :param batch: number of rows.
    :param max_len: slots per row (prompt plus generated tokens).
    :param documents: keep a document id per slot so a cached forward can mask packed documents;
        then every cached call attends only within documents (a call without ``document_ids``
        continues each row's last document).
    :param spans: keep a bidirectional span id per slot (``-1``: no span).
    :param lengths: initial per-row lengths (default 0), for example after a left-aligned prefill
        done elsewhere.

    ``lengths[b]`` is the number of written slots of row ``b``; the next token of row ``b`` goes
    to slot ``lengths[b]`` and gets rotary position ``next_position[b]`` unless positions are given.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        batch: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        documents: bool = False,
        spans: bool = False,
    ) -> None:
        counts = (batch, max_len)
        if any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in counts):
            raise ConfigError(f"KVCache: batch and max_len must be > 0, got batch={batch}, max_len={max_len}")
        # one buffer per layer, not one [layers, ...] tensor: a compiled step then writes each
        # layer's new key in place, where a write into a view of a shared tensor was compiled as a
        # copy of the whole cache per layer (a cost that grew with layers x cache length)
        shape = (batch, config.kv_heads, max_len, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.lengths = torch.zeros(batch, dtype=torch.long, device=device)
        self.next_position = torch.zeros(batch, dtype=torch.long, device=device)
        self.documents = documents
        self.spans = spans
        self.document_ids = torch.zeros(batch, max_len, dtype=torch.long, device=device) if documents else None
        self.span_ids = torch.full((batch, max_len), -1, dtype=torch.long, device=device) if spans else None

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    @property
    def dtype(self) -> torch.dtype:
        return self.keys[0].dtype

    def _layout(self) -> tuple[int, int, int]:
        """(layers, kv heads, head dim): what two caches must share to exchange rows."""
        return len(self.keys), self.keys[0].shape[1], self.keys[0].shape[3]

    def reset(self) -> None:
        """Forget every row's content (buffers are kept)."""
        self.lengths.zero_()
        self.next_position.zero_()
        if self.document_ids is not None:
            self.document_ids.zero_()
        if self.span_ids is not None:
            self.span_ids.fill_(-1)

    def copy_rows(self, rows: torch.Tensor, source: KVCache, source_rows: torch.Tensor) -> None:
        """Make ``rows`` of this cache hold what ``source_rows`` of ``source`` hold (content, lengths,
        positions, document and span ids); ``source`` may be this cache. A continuous-batching
        scheduler uses it to admit a request prefilled in its own cache and to keep live rows packed."""
        if source.max_len > self.max_len or source._layout() != self._layout():
            raise ConfigError(
                f"KVCache.copy_rows: a source of {source.max_len} slots per row and (layers, kv heads, head dim) "
                f"{source._layout()} does not fit this cache's {self.max_len} slots and {self._layout()}"
            )
        width = source.max_len
        for mine, theirs in zip(self.keys + self.values, source.keys + source.values, strict=True):
            mine[rows, :, :width] = theirs[source_rows]
        self.lengths[rows] = source.lengths[source_rows]
        self.next_position[rows] = source.next_position[source_rows]
        for name in ("document_ids", "span_ids"):
            mine, theirs = getattr(self, name), getattr(source, name)
            if mine is not None:
                mine[rows] = 0 if name == "document_ids" else -1
                if theirs is not None:
                    mine[rows, :width] = theirs[source_rows]

    def first_rows(self, count: int) -> KVCache:
        """A cache over rows ``0..count-1`` that shares this one's buffers (writes go through), so a
        batch of ``count`` live rows runs without touching the rest."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= self.batch:
            raise ConfigError(f"KVCache.first_rows: count must be in [1, {self.batch}], got {count!r}")
        return self._view(rows=count, slots=self.max_len)

    def first_slots(self, count: int) -> KVCache:
        """A cache over slots ``0..count-1`` of every row that shares this one's buffers (writes go
        through, lengths and positions included). An eager forward attends over this view, so its
        cost follows the longest row, not the capacity (a server's cache has thousands of slots per
        row while its rows hold tens)."""
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= self.max_len:
            raise ConfigError(f"KVCache.first_slots: count must be in [1, {self.max_len}], got {count!r}")
        return self._view(rows=self.batch, slots=count)

    def written_slots(self, new_tokens: int) -> KVCache:
        """:meth:`first_slots` up to the longest row's end after ``new_tokens`` more: what a forward
        pass of ``new_tokens`` per row attends over (eager and compiled CPU steps alike). Raises
        :class:`ConfigError` when that end is past the capacity."""
        longest = int(self.lengths.max())
        if longest + new_tokens > self.max_len:
            raise ConfigError(
                f"cache overflow: a row holds {longest} of {self.max_len} slots and {new_tokens} more tokens were given"
            )
        return self.first_slots(longest + new_tokens)

    def _view(self, *, rows: int, slots: int) -> KVCache:
        view = object.__new__(KVCache)
        view.__dict__.update(self.__dict__)
        for name in ("keys", "values"):
            setattr(view, name, [layer[:rows, :, :slots] for layer in getattr(self, name)])
        view.lengths, view.next_position = self.lengths[:rows], self.next_position[:rows]
        for name in ("document_ids", "span_ids"):
            tensor = getattr(self, name)
            setattr(view, name, None if tensor is None else tensor[:rows, :slots])
        return view

    def truncate(self, lengths: torch.Tensor) -> None:
        """Shorten rows to ``lengths`` ``[B]`` (each <= its current length); the dropped slots are reused.

        This is how prompts of different lengths share one batch: prefill them right-padded to a
        common length, then truncate each row to its true length before decoding. Rotary positions
        step back by the same amount.
        """
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=self.lengths.device)
        if lengths.shape != self.lengths.shape or bool((lengths < 0).any()) or bool((lengths > self.lengths).any()):
            raise ConfigError(
                f"KVCache.truncate: lengths must be {tuple(self.lengths.shape)} values in [0, current length "
                f"{self.lengths.tolist()}], got {lengths.tolist()}"
            )
        self.next_position.sub_(self.lengths - lengths).clamp_(min=0)
        self.lengths.copy_(lengths)
        if self.span_ids is not None:
            unwritten = torch.arange(self.max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)
            self.span_ids.masked_fill_(unwritten, -1)

    def slots(self, q_len: int) -> torch.Tensor:
        """``[B, q_len]`` slots the next ``q_len`` tokens of every row will occupy."""
        return self.lengths.unsqueeze(1) + torch.arange(q_len, device=self.lengths.device)

    def last_document(self) -> torch.Tensor:
        """``[B]`` document id of each row's last written slot (0 for an empty row)."""
        if self.document_ids is None:
            return torch.zeros_like(self.lengths)
        last = (self.lengths - 1).clamp(min=0).unsqueeze(1)
        return self.document_ids.gather(1, last).squeeze(1) * (self.lengths > 0)

    def write_tokens(
        self, slots: torch.Tensor, document_ids: torch.Tensor | None, span_ids: torch.Tensor | None
    ) -> None:
        """Record per-slot document/span ids for new tokens at ``slots`` ``[B, T]``."""
        if self.document_ids is not None and document_ids is not None:
            self.document_ids.scatter_(1, slots, document_ids)
        if self.span_ids is not None and span_ids is not None:
            self.span_ids.scatter_(1, slots, span_ids)

    def write_kv(
        self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``[B, KV, T, Dh]`` of ``layer`` at ``slots`` ``[B, T]``; return the full buffers."""
        keys, values = self.keys[layer], self.values[layer]
        # an index_put_ (not scatter_): a compiled step does it in place on the cache buffer
        rows = torch.arange(slots.shape[0], device=slots.device).unsqueeze(1)
        keys[rows, :, slots] = k.transpose(1, 2).to(keys.dtype)
        values[rows, :, slots] = v.transpose(1, 2).to(values.dtype)
        return keys, values

    def advance(self, q_len: int, positions: torch.Tensor) -> None:
        """Move every row forward by ``q_len`` slots; ``positions`` ``[B, T]`` were the rotary positions used."""
        self.lengths.add_(q_len)
        self.next_position.copy_(positions[:, -1] + 1)
