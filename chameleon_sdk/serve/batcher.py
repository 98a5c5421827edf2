"""Continuous batching: concurrent requests share the decode steps of one thread that owns the model.

Each request is a :class:`~chameleon_sdk.generation.stream.DocumentStream` (its own decoder with its
samplers, constraints, guidance and generator, and its event builders). The decode thread keeps one
static :class:`~chameleon_sdk.model.KVCache` of ``max_rows`` physical rows. A request joins at the
next step: its prompt is prefilled on its own and copied into free rows; from then on one forward
pass over all live rows feeds every request's ``decoder.advance``. A request leaves when it finishes
or is cancelled, and the rows after it move down so the live rows stay packed at the front (the
forward pass runs over ``cache.first_rows(n)``, never over idle rows).
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

import attrs
import torch

from chameleon_sdk.errors import ChameleonError, GenerationError
from chameleon_sdk.generation.compiled import CompileChoice
from chameleon_sdk.generation.engine import prefill_prompts
from chameleon_sdk.generation.events import GenerationEvent
from chameleon_sdk.generation.stream import DocumentStream
from chameleon_sdk.model import ChameleonModel, KVCache
from chameleon_sdk.serve.batch_forward import BatchForward
from chameleon_sdk.serve.memory import release_free_memory
from chameleon_sdk.serve.openmp import release_thread_workers

__all__ = ["BatcherClosedError", "ContinuousBatcher", "Job", "JobEnd", "QueueFullError"]

log = logging.getLogger(__name__)


class QueueFullError(ChameleonError):
    """Every row is busy and the waiting queue is full: try again later."""


class BatcherClosedError(ChameleonError):
    """The batcher was closed (the server is shutting down)."""


@attrs.frozen
class JobEnd:
    """The last item a job's sink receives: ``status`` is ``finished``, ``cancelled``, ``timeout``
    (it waited longer than the request timeout) or ``error`` (``message`` says what failed)."""

    status: str
    message: str = ""


Sink = Callable[[list[GenerationEvent] | JobEnd], None]


@attrs.define(eq=False)
class Job:
    """One request in the batcher. ``sink`` is called from the decode thread with each step's events
    and finally with a :class:`JobEnd`; it must not block."""

    stream: DocumentStream
    sink: Sink
    deadline: float
    start: int = -1  #: first physical row while running
    logits: torch.Tensor | None = None  #: next-token logits of its physical rows
    tokens: torch.Tensor | None = None  #: the tokens its rows sampled at the last step
    cancelled: bool = False

    @property
    def num_rows(self) -> int:
        return len(self.stream.decoder.physical_prompts)

    @property
    def tokens_needed(self) -> int:
        """Cache slots per row: the longest physical prompt plus the new tokens."""
        decoder = self.stream.decoder
        return max(len(p) for p in decoder.physical_prompts) + decoder.max_new_tokens


#: jobs prefilled together waste at most this share of the forward pass on padding
PREFILL_PADDING_LIMIT = 0.5


def prefill_groups(jobs: list[Job]) -> list[list[Job]]:
    """``jobs`` (in row order) in runs that are prefilled in one forward pass each: a run grows while
    padding every prompt to its longest keeps the padding under :data:`PREFILL_PADDING_LIMIT`.

    One pass over several prompts costs less than a pass per prompt (on the development CPU, 8
    prompts of ~40 tokens: 135 ms instead of 235), but a long prompt among short ones would make
    every row as long as it."""
    groups: list[list[Job]] = []
    for job in jobs:
        if groups:
            prompts = [p for j in (*groups[-1], job) for p in j.stream.decoder.physical_prompts]
            padded = len(prompts) * max(map(len, prompts))
            if sum(map(len, prompts)) >= (1 - PREFILL_PADDING_LIMIT) * padded:
                groups[-1].append(job)
                continue
        groups.append([job])
    return groups


class ContinuousBatcher:
    """The decode thread and its queue. :meth:`submit` a job, :meth:`cancel` it, :meth:`close` at the end.

    :param max_rows: physical rows decoded together.
    :param max_context: KV-cache slots per row (default: the model's max_seq_len).
    :param max_queue: jobs waiting for rows at most; :meth:`submit` raises :class:`QueueFullError` beyond.
    :param compile: compile the decode step (CPU; see :mod:`chameleon_sdk.serve.batch_forward`), at
        every row count it runs at, before the constructor returns.
    """

    def __init__(
        self,
        model: ChameleonModel,
        *,
        max_rows: int,
        max_context: int | None,
        max_queue: int,
        compile: CompileChoice = False,
    ) -> None:
        self.model = model
        self.max_rows, self.max_queue = max_rows, max_queue
        self.max_context = min(max_context or model.config.max_seq_len, model.config.max_seq_len)
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._closed = False
        self._busy_since_trim = False  # requests ran since the heap was last trimmed
        self.steps = 0  #: decode steps run (a forward pass over the live rows each)
        # the decode thread allocates the cache itself, and this thread's OpenMP workers go: see _run
        release_thread_workers()
        ready: concurrent.futures.Future[BatchForward] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, args=(ready, compile), name="chameleon-decode", daemon=True)
        self._thread.start()
        self._forward = ready.result()  # a cache too large for memory fails here, in the caller

    @property
    def cache(self) -> KVCache:
        """The batch's KV cache: ``max_rows`` rows of ``max_context`` slots, live rows first."""
        return self._forward.cache

    # -- the request side (any thread) --------------------------------------------------------------

    def submit(self, stream: DocumentStream, sink: Sink, *, timeout: float) -> Job:
        """Queue a prepared stream; it joins the batch at the next step with enough free rows."""
        job = Job(stream=stream, sink=sink, deadline=time.monotonic() + timeout)
        if job.num_rows > self.max_rows:
            raise GenerationError(
                f"the request needs {job.num_rows} batch rows (guidance rows) but the server decodes {self.max_rows}"
            )
        if job.tokens_needed > self.max_context:
            raise GenerationError(
                f"prompt + max_new_tokens = {job.tokens_needed} tokens exceeds the server's context of "
                f"{self.max_context} per request: shorten the prompt or ask for fewer tokens"
            )
        with self._cond:
            if self._closed:
                raise BatcherClosedError("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting for a batch row")
            self._waiting.append(job)
            self._cond.notify()
        return job

    def cancel(self, job: Job) -> None:
        """Stop ``job``; its rows are freed at the next step (its sink then gets ``JobEnd("cancelled")``)."""
        with self._cond:
            job.cancelled = True
            self._cond.notify()

    def load(self) -> dict[str, int]:
        """Requests running and waiting, physical rows in use, and decode steps so far."""
        with self._cond:
            rows = sum(j.num_rows for j in self._running)
            return {"running": len(self._running), "waiting": len(self._waiting), "rows_in_use": rows,
                    "steps": self.steps}  # fmt: skip

    def close(self) -> None:
        """Stop the decode thread; jobs still queued or running end with ``JobEnd("cancelled")``."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    # -- the decode thread --------------------------------------------------------------------------

    def _run(self, ready: concurrent.futures.Future[BatchForward], compile: CompileChoice) -> None:
        # Every torch op of the batcher runs on this thread, the cache's allocation and the compiles
        # included, so that its pool of OpenMP workers is the only one (see chameleon_sdk.serve.openmp).
        self.model.eval()
        try:
            forward = BatchForward(self.model, self.model.new_cache(self.max_rows, self.max_context), compile)
            with torch.no_grad():
                forward.compile_steps()
        except Exception as exc:
            ready.set_exception(exc)
            return
        ready.set_result(forward)
        with torch.no_grad():
            while True:
                admitted = self._next_round()
                if admitted is None:
                    break
                for group in prefill_groups(admitted):
                    self._admit(group)
                self._step()
        for job in [*self._running, *self._waiting]:
            job.sink(JobEnd("cancelled", "the server is shutting down"))
        self._running.clear()
        self._waiting.clear()

    def _next_round(self) -> list[Job] | None:
        """Drop cancelled and expired jobs, wait for work, pick the jobs that fit (under the lock)."""
        while True:
            with self._cond:
                self._drop_ended()
                if self._closed:
                    return None
                if self._running or self._waiting:
                    self._busy_since_trim = True
                    return self._admit_fitting()
                if not self._busy_since_trim:
                    self._cond.wait()
                    continue
                self._busy_since_trim = False
            # the batch just emptied: give what its requests freed back, outside the lock, which
            # submit() and load() wait for while the trim takes milliseconds
            release_free_memory()

    def _admit_fitting(self) -> list[Job]:
        """Move the waiting jobs that fit in the free rows, in order, into the batch (caller holds the lock)."""
        free = self.max_rows - sum(j.num_rows for j in self._running)
        admitted = []
        while self._waiting and self._waiting[0].num_rows <= free:
            job = self._waiting.popleft()
            job.start = self.max_rows - free
            free -= job.num_rows
            admitted.append(job)
            self._running.append(job)
        return admitted

    def _drop_ended(self) -> None:
        now = time.monotonic()
        for job in [j for j in self._waiting if j.cancelled or now >= j.deadline]:
            self._waiting.remove(job)
            job.sink(JobEnd("cancelled") if job.cancelled else JobEnd("timeout", "waited too long for a batch row"))
        cancelled = [j for j in self._running if j.cancelled]
        if cancelled:
            self._leave(cancelled)
            for job in cancelled:
                job.sink(JobEnd("cancelled"))

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill the jobs' prompts in one forward pass, in a cache of their own, and copy each job's
        rows into its place in the batch. If the shared pass fails, each job is prefilled alone, so
        only a job whose own prefill fails ends."""
        ready: list[tuple[Job, list[GenerationEvent]]] = []
        for job in jobs:
            try:
                ready.append((job, list(job.stream.opening_events())))
            except Exception as exc:
                self._fail(job, exc)
        if ready:
            self._prefill(ready)

    def _prefill(self, ready: list[tuple[Job, list[GenerationEvent]]]) -> None:
        prompts = [p for job, _ in ready for p in job.stream.decoder.physical_prompts]
        try:
            cache, logits = prefill_prompts(self.model, prompts, pad_id=ready[0][0].stream.decoder.pad_id, room=0)
        except Exception as exc:
            if len(ready) == 1:
                self._fail(ready[0][0], exc)
            else:
                for item in ready:
                    self._prefill([item])
            return
        source = 0
        for job, events in ready:
            rows = torch.arange(job.start, job.start + job.num_rows, device=self.cache.lengths.device)
            self.cache.copy_rows(rows, cache, rows - job.start + source)
            job.logits = logits[source : source + job.num_rows]
            source += job.num_rows
            if events:
                job.sink(events)

    def _step(self) -> None:
        """Every running job samples from its logits; one forward pass makes everyone's next logits."""
        ended: list[Job] = []
        for job in list(self._running):
            decoder = job.stream.decoder
            try:
                assert job.logits is not None
                step = decoder.advance(job.logits)
                job.tokens = step.tokens
                events = list(job.stream.events(step))
            except Exception as exc:
                self._fail(job, exc)
                continue
            if events:
                job.sink(events)
            if decoder.ended:
                ended.append(job)
        if ended:
            with self._cond:
                self._leave(ended)
            for job in ended:
                job.sink(JobEnd("finished"))
        if not self._running:
            return
        tokens = torch.cat([j.tokens.repeat_interleave(j.stream.decoder.k) for j in self._running])  # type: ignore[union-attr]
        try:
            logits = self._forward(tokens)
        except Exception as exc:  # the batch cannot go on: every running job fails
            with self._cond:
                running = list(self._running)
                self._leave(running)
            for job in running:
                job.sink(JobEnd("error", f"decode step failed: {exc}"))
            log.exception("decode step failed")
            return
        self.steps += 1
        for job in self._running:
            job.logits = logits[job.start : job.start + job.num_rows]

    def _fail(self, job: Job, exc: Exception) -> None:
        if not isinstance(exc, ChameleonError):
            log.error("request failed in the decode thread", exc_info=exc)
        with self._cond:
            if job in self._running:
                self._leave([job])
        job.sink(JobEnd("error", str(exc) if isinstance(exc, ChameleonError) else f"{type(exc).__name__}: {exc}"))

    def _leave(self, jobs: list[Job]) -> None:
        """Remove ``jobs`` (caller holds the lock) and move the later rows down into their place."""
        gone = set(map(id, jobs))
        self._running = [j for j in self._running if id(j) not in gone]
        cursor = 0
        for job in self._running:
            if job.start != cursor:
                source = torch.arange(job.start, job.start + job.num_rows, device=self.cache.lengths.device)
                self.cache.copy_rows(source - job.start + cursor, self.cache, source)
                job.start = cursor
            cursor += job.num_rows
