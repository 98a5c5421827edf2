"""The attention call contract: what a backend receives and which masks it must honour.

Every attention backend (kind ``attention``) is a callable::

    backend(q, k, v, mask: MaskSpec, scale: float) -> out

- ``q``: ``[B, H, Tq, Dh]``; ``k``, ``v``: ``[B, KV, Tk, Dh]`` with ``H % KV == 0`` (grouped-query
  attention: query head ``h`` reads kv head ``h // (H // KV)``); ``out``: ``[B, H, Tq, Dh]`` in
  ``q``'s dtype.
- ``scale``: the factor applied to ``q @ k^T`` before the softmax (usually ``Dh ** -0.5``).
- ``mask``: a :class:`MaskSpec`. A backend registers the trait ``mask_kinds`` (a frozenset of
  :class:`MaskKind`); the model raises :class:`UnsupportedMaskError` before calling a backend with a
  mask whose :attr:`MaskSpec.kinds` are not all supported, so a mask is never silently dropped.

Key slots and query slots: query ``i`` of row ``b`` sits at key slot ``q_offset[b] + i`` (``q_offset``
is 0 without a KV cache). Slots at or beyond ``q_offset[b] + Tq`` are not written yet and are never
attended. Query ``i`` may attend key ``j`` when all of:

- causal: ``j <= q_offset[b] + i``, or both tokens carry the same bidirectional span id ``>= 0``
  (and ``j < q_offset[b] + Tq``);
- document (when document ids are given): ``q_document_ids[b, i] == kv_document_ids[b, j]``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Collection

import torch

from chameleon_sdk.errors import ChameleonError, ConfigError

__all__ = [
    "BackendUnavailableError",
    "MaskKind",
    "MaskSpec",
    "UnsupportedMaskError",
    "check_mask_support",
]


class MaskKind(enum.StrEnum):
    """The mask features a backend can declare in its ``mask_kinds`` trait."""

    CAUSAL = "causal"
    """Plain causal attention over ``Tq == Tk`` tokens starting at slot 0."""
    DOCUMENT = "document"
    """Packed documents: attention is block-diagonal by document id (and causal inside)."""
    BIDIRECTIONAL = "bidirectional"
    """Spans (for example a prefix) whose tokens see each other in both directions."""
    OFFSET = "offset"
    """Queries start at a per-row key slot ``q_offset`` inside longer (cached) keys."""


class UnsupportedMaskError(ConfigError):
    """The chosen attention backend cannot apply the mask this call needs."""


class BackendUnavailableError(ChameleonError, RuntimeError):
    """An attention backend cannot run here (a missing package, the wrong device or dtype)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MaskSpec:
    """A description of the attention mask; backends build whatever representation they need.

    Tensors live on the same device as q/k/v. ``None`` fields mean "feature not used".

    :param q_offset: ``[B]`` long, key slot of each row's first query (KV cache); ``None`` means 0.
    :param q_document_ids: ``[B, Tq]`` document id of each query.
    :param kv_document_ids: ``[B, Tk]`` document id of each key slot.
    :param q_span_ids: ``[B, Tq]`` bidirectional span id of each query (``-1``: none).
    :param kv_span_ids: ``[B, Tk]`` bidirectional span id of each key slot (``-1``: none).
    """

    q_offset: torch.Tensor | None = None
    q_document_ids: torch.Tensor | None = None
    kv_document_ids: torch.Tensor | None = None
    q_span_ids: torch.Tensor | None = None
    kv_span_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.q_document_ids is None) != (self.kv_document_ids is None):
            raise ConfigError("MaskSpec: q_document_ids and kv_document_ids must be given together")
        if (self.q_span_ids is None) != (self.kv_span_ids is None):
            raise ConfigError("MaskSpec: q_span_ids and kv_span_ids must be given together")

    @property
    def kinds(self) -> frozenset[MaskKind]:
        """The mask kinds a backend needs to apply this mask exactly."""
        kinds = {MaskKind.CAUSAL}
        if self.q_document_ids is not None:
            kinds.add(MaskKind.DOCUMENT)
        if self.q_span_ids is not None:
            kinds.add(MaskKind.BIDIRECTIONAL)
        if self.q_offset is not None:
            kinds.add(MaskKind.OFFSET)
        return frozenset(kinds)

    def query_slots(self, batch: int, q_len: int, device: torch.device) -> torch.Tensor:
        """``[B, Tq]`` key slot of every query."""
        slots = torch.arange(q_len, device=device).unsqueeze(0).expand(batch, q_len)
        return slots if self.q_offset is None else slots + self.q_offset.unsqueeze(1)

    def allowed(self, batch: int, q_len: int, kv_len: int, device: torch.device) -> torch.Tensor:
        """The dense boolean mask ``[B, Tq, Tk]`` (True: may attend). The reference semantics."""
        q_slot = self.query_slots(batch, q_len, device).unsqueeze(-1)  # [B, Tq, 1]
        kv_slot = torch.arange(kv_len, device=device).view(1, 1, kv_len)
        allowed = kv_slot <= q_slot
        if self.q_span_ids is not None and self.kv_span_ids is not None:
            q_span = self.q_span_ids.unsqueeze(-1)
            same_span = (q_span == self.kv_span_ids.unsqueeze(1)) & (q_span >= 0)
            written = kv_slot < (q_slot[:, :1] + q_len)
            allowed = allowed | (same_span & written)
        if self.q_document_ids is not None and self.kv_document_ids is not None:
            allowed = allowed & (self.q_document_ids.unsqueeze(-1) == self.kv_document_ids.unsqueeze(1))
        return allowed


def check_mask_support(backend_name: str, supported: Collection[str], mask: MaskSpec) -> None:
    """Raise :class:`UnsupportedMaskError` when ``mask`` needs a kind the backend did not declare.

    Written with plain membership tests (no set arithmetic) so that every torch version's dynamo can
    trace it inside ``torch.compile(fullgraph=True)``: the check stays on in compiled models.
    """
    needed = (
        (MaskKind.DOCUMENT, mask.q_document_ids is not None),
        (MaskKind.BIDIRECTIONAL, mask.q_span_ids is not None),
        (MaskKind.OFFSET, mask.q_offset is not None),
    )
    missing = [kind.value for kind, needs in needed if needs and kind.value not in supported]
    if missing:
        raise UnsupportedMaskError(
            f"attention backend {backend_name!r} supports mask kinds {sorted(supported)} but this call needs "
            f"{sorted(missing)} as well; choose a backend that supports them (for example 'eager' or 'sdpa')"
        )
