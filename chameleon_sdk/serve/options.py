"""What a server allows: its address, its key, its size limits and its batch."""

from __future__ import annotations

from typing import Literal

import attrs

from chameleon_sdk.config import positive, typed

__all__ = ["ServeOptions"]


@attrs.frozen(kw_only=True)
class ServeOptions:
    """Limits and settings of :func:`chameleon_sdk.serve.create_app` (and ``chameleon serve``).

    :ivar api_key: when set, every ``/v1`` route wants ``Authorization: Bearer <api_key>``.
    :ivar max_body_bytes: larger request bodies are refused with 413.
    :ivar max_image_pixels: larger images in a request are refused with 400.
    :ivar max_new_tokens: the most new tokens one request may ask for (and the default).
    :ivar max_rows: physical batch rows decoded together (a request with classifier-free guidance
        takes ``guidance.rows`` of them); further requests wait in the queue. Each row holds
        ``max_context`` KV slots per layer, allocated at start (a 7B model in bf16: 0.5 MiB a slot,
        2 GiB a row at 4096).
    :ivar max_context: KV-cache slots per row (prompt plus new tokens; at most the model's max_seq_len).
    :ivar max_queue: requests waiting for a row at most; beyond it the server answers 503 with ``Retry-After``.
    :ivar request_timeout: seconds a request may take from arrival (queueing included); a running
        request then stops with reason ``max_time``, a queued one is answered 503.
    :ivar progress_every: image codes between two streamed previews.
    :ivar compile: compile the decode step (CPU), as ``generate_tokens``'s ``compile``: ``True``, or
        ``"frozen"`` with the weights frozen in (faster in bf16 and int8; each row count holds its
        own laid-out copy of the weights). It compiles at start, once for each of the row counts the
        batch runs at (1, 2, 4... ``max_rows``; see :mod:`chameleon_sdk.serve.batch_forward`).
    """

    api_key: str | None = attrs.field(default=None, validator=typed)
    max_body_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=positive)
    max_image_pixels: int = attrs.field(default=4096 * 4096, validator=positive)
    max_new_tokens: int = attrs.field(default=1100, validator=positive)
    max_rows: int = attrs.field(default=8, validator=positive)
    max_context: int | None = attrs.field(default=None, validator=positive)
    max_queue: int = attrs.field(default=64, validator=positive)
    request_timeout: float = attrs.field(default=600.0, validator=positive)
    progress_every: int = attrs.field(default=64, validator=positive)
    compile: bool | Literal["frozen"] = attrs.field(default=False, validator=typed)
