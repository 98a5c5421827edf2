"""One served generation: prepared in a worker thread, decoded by the batcher, read by an async handler."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import attrs

from chameleon_sdk.document import Document
from chameleon_sdk.errors import ChameleonError
from chameleon_sdk.generation.events import Finished, GenerationEvent
from chameleon_sdk.generation.stream import DocumentStream
from chameleon_sdk.serve.batcher import ContinuousBatcher, Job, JobEnd
from chameleon_sdk.serve.openmp import release_thread_workers
from chameleon_sdk.serve.options import ServeOptions

if TYPE_CHECKING:
    from chameleon_sdk.pipeline import Pipeline

__all__ = ["GenerationFailed", "ServedGeneration"]


class GenerationFailed(ChameleonError):
    """A request ended without a result: it timed out in the queue (``status="timeout"``), was
    cancelled, or failed while decoding (``status="error"``)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message or status)
        self.status = status


@attrs.define(eq=False)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ServedGeneration:
    """Start with :meth:`start`, then iterate :meth:`events` (or await :meth:`result`); :meth:`cancel`
    frees the batch row at the next step. Every method runs on the event loop."""

    def __init__(self, pipeline: Pipeline, batcher: ContinuousBatcher, options: ServeOptions) -> None:
        self.pipeline, self.batcher, self.options = pipeline, batcher, options
        self.arrived = time.monotonic()
        self.usage = Usage()
        self.reason = ""
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[list[GenerationEvent] | JobEnd] = asyncio.Queue()
        self._job: Job | None = None
        self._stream: DocumentStream | None = None
        self._ended = False

    async def start(self, prompt: Document, generation_options: dict[str, Any]) -> None:
        """Tokenize and check in a worker thread (bad input raises here, before any response), then queue."""
        timeout = self.options.request_timeout
        options = {"progress_every": self.options.progress_every, **generation_options}
        asked = options.get("max_time")  # a malformed value is refused by prepare_stream
        if asked is None or (isinstance(asked, (int, float)) and not isinstance(asked, bool) and asked > timeout):
            options["max_time"] = timeout
        stream = await asyncio.to_thread(self._prepare, prompt, options)
        self._stream = stream
        self.usage.prompt_tokens = len(stream.decoder.physical_prompts[0])
        remaining = max(0.0, timeout - (time.monotonic() - self.arrived))
        self._job = self.batcher.submit(stream, self._put, timeout=remaining)

    def _prepare(self, prompt: Document, options: dict[str, Any]) -> DocumentStream:
        """In a worker thread: tokenizing an image runs parallel ops, and the worker's OpenMP pool
        would slow the decode thread's (see chameleon_sdk.serve.openmp)."""
        try:
            return self.pipeline.prepare_stream(prompt, **options)
        finally:
            release_thread_workers()

    def _put(self, item: list[GenerationEvent] | JobEnd) -> None:
        """Called from the decode thread."""
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutting down): nobody listens
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """The request's events up to its :class:`Finished`; :class:`GenerationFailed` if it ends otherwise."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, JobEnd):
                    self._ended = True
                    if item.status != "finished":
                        raise GenerationFailed(item.status, item.message)
                    return
                for event in item:
                    if isinstance(event, Finished):
                        self.reason = event.reason
                        assert self._stream is not None
                        self.usage.completion_tokens = int(self._stream.decoder.counts[event.row])
                    yield event
        finally:
            self.cancel()

    async def result(self) -> Document:
        """The generated document (waits for the end)."""
        document = None
        async for event in self.events():
            if isinstance(event, Finished):
                document = event.document
        if document is None:
            raise GenerationFailed("error", "the generation ended without a result")
        return document

    def cancel(self) -> None:
        """Free the request's row (nothing happens once it has ended)."""
        if self._job is not None and not self._ended:
            self.batcher.cancel(self._job)
            self._ended = True
