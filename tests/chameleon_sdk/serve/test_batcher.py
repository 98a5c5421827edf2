"""The continuous batcher: requests share decode steps, join and leave at any step, and give the same
results as decoding each one alone."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chameleon_sdk as cs
from chameleon_sdk.serve.batcher import ContinuousBatcher, JobEnd, QueueFullError

from .conftest import IMAGE_CODES


class Collector:
    """A sink that records what the decode thread sends."""

    def __init__(self, on_event=None) -> None:
        self.events: list = []
        self.end: JobEnd | None = None
        self.ended = threading.Event()
        self.on_event = on_event

    def __call__(self, item) -> None:
        if isinstance(item, JobEnd):
            self.end = item
            self.ended.set()
            return
        self.events += item
        if self.on_event is not None:
            self.on_event(self)

    def document(self) -> cs.Document:
        assert self.ended.wait(60) and self.end == JobEnd("finished"), self.end
        (finished,) = [e for e in self.events if isinstance(e, cs.Finished)]
        return finished.document


REQUESTS = [
    ("a red square", {"mode": "text", "max_new_tokens": 9}),
    ("one two three four five", {"mode": "text", "max_new_tokens": 3}),
    ("a blue circle", {"mode": "image", "max_new_tokens": IMAGE_CODES + 1, "guidance": cs.Guidance()}),
    ("x", {"mode": "interleaved", "max_new_tokens": 20}),
    ("a big green", {"mode": "image", "max_new_tokens": IMAGE_CODES + 1, "guidance": cs.Guidance(rows=2)}),
]


@settings(max_examples=8)
@given(picks=st.lists(st.sampled_from(range(len(REQUESTS))), min_size=1, max_size=5), rows=st.sampled_from([4, 8]))
def test_batched_requests_match_decoding_each_alone(served_pipe, picks, rows):
    expected = [served_pipe.generate(REQUESTS[i][0], sampler="greedy", **REQUESTS[i][1]) for i in picks]
    batcher = ContinuousBatcher(served_pipe.model, max_rows=rows, max_context=256, max_queue=8)
    try:
        sinks = [Collector() for _ in picks]
        for i, sink in zip(picks, sinks):
            prompt, options = REQUESTS[i]
            batcher.submit(served_pipe.prepare_stream(prompt, sampler="greedy", **options), sink, timeout=60)
        assert [s.document() for s in sinks] == expected
        assert batcher.load()["running"] == 0 and batcher.load()["rows_in_use"] == 0
    finally:
        batcher.close()


def test_requests_share_steps_and_a_late_request_joins_the_running_batch(served_pipe):
    batcher = ContinuousBatcher(served_pipe.model, max_rows=8, max_context=256, max_queue=8)
    late = Collector()
    joined = threading.Event()

    def join_after_five_tokens(sink: Collector) -> None:
        if not joined.is_set() and sum(isinstance(e, cs.TextDelta) for e in sink.events) >= 5:
            joined.set()
            stream = served_pipe.prepare_stream("late one", sampler="greedy", max_new_tokens=30)
            batcher.submit(stream, late, timeout=60)

    try:
        first = Collector(join_after_five_tokens)
        options = {"sampler": "greedy", "max_new_tokens": 60, "stop": []}
        batcher.submit(served_pipe.prepare_stream("early", **options), first, timeout=60)
        early_doc, late_doc = first.document(), late.document()
        assert early_doc == served_pipe.generate("early", **options)
        assert late_doc == served_pipe.generate("late one", sampler="greedy", max_new_tokens=30)
        # 60 + 30 tokens if decoded one request at a time; the late one rode along instead
        assert batcher.steps < 60 + 30 - 5
    finally:
        batcher.close()


def test_a_cancelled_request_frees_its_rows_at_the_next_step(served_pipe):
    batcher = ContinuousBatcher(served_pipe.model, max_rows=4, max_context=512, max_queue=8)
    try:
        long = Collector()
        job = batcher.submit(served_pipe.prepare_stream("go on", max_new_tokens=400, stop=[]), long, timeout=60)
        other = Collector()
        image = {"mode": "image", "max_new_tokens": IMAGE_CODES + 1, "guidance": cs.Guidance()}
        batcher.submit(served_pipe.prepare_stream("a red circle", sampler="greedy", **image), other, timeout=60)
        batcher.cancel(job)
        assert long.ended.wait(60) and long.end == JobEnd("cancelled")
        assert other.document() == served_pipe.generate("a red circle", sampler="greedy", **image)
        assert not any(isinstance(e, cs.Finished) for e in long.events)
        assert batcher.load() == {"running": 0, "waiting": 0, "rows_in_use": 0, "steps": batcher.steps}
    finally:
        batcher.close()


def test_queue_limit_and_row_limit(served_pipe):
    batcher = ContinuousBatcher(served_pipe.model, max_rows=2, max_context=128, max_queue=1)
    try:
        guided = served_pipe.prepare_stream("a", mode="image", max_new_tokens=IMAGE_CODES + 1, guidance=cs.Guidance())
        with pytest.raises(cs.GenerationError, match="needs 3 batch rows"):
            batcher.submit(guided, Collector(), timeout=60)
        with pytest.raises(cs.GenerationError, match="exceeds the server's context of 128"):
            batcher.submit(served_pipe.prepare_stream("a", max_new_tokens=200), Collector(), timeout=60)
        sinks = [Collector() for _ in range(4)]
        jobs = []
        with pytest.raises(QueueFullError):
            for sink in sinks:  # 2 rows and 1 waiting place: one of the four is refused at the latest
                stream = served_pipe.prepare_stream("b", max_new_tokens=100, stop=[])
                jobs.append(batcher.submit(stream, sink, timeout=60))
        for job in jobs:
            batcher.cancel(job)
        for sink in sinks[: len(jobs)]:
            assert sink.ended.wait(60)
    finally:
        batcher.close()


def test_a_queued_request_times_out(served_pipe):
    batcher = ContinuousBatcher(served_pipe.model, max_rows=1, max_context=256, max_queue=4)
    try:
        busy = batcher.submit(served_pipe.prepare_stream("a", max_new_tokens=200, stop=[]), Collector(), timeout=60)
        waiting = Collector()
        batcher.submit(served_pipe.prepare_stream("b", max_new_tokens=5), waiting, timeout=0.01)
        assert waiting.ended.wait(60) and waiting.end.status == "timeout"
        batcher.cancel(busy)
    finally:
        batcher.close()


def test_close_ends_everything(served_pipe):
    batcher = ContinuousBatcher(served_pipe.model, max_rows=1, max_context=256, max_queue=4)
    sinks = [Collector(), Collector()]
    for sink in sinks:
        batcher.submit(served_pipe.prepare_stream("a", max_new_tokens=200, stop=[]), sink, timeout=60)
    batcher.close()
    assert all(s.ended.is_set() and s.end.status in ("cancelled", "finished") for s in sinks)
    with pytest.raises(cs.ChameleonError, match="shutting down"):
        batcher.submit(served_pipe.prepare_stream("a", max_new_tokens=5), Collector(), timeout=60)


def test_the_cache_is_allocated_on_the_decode_thread_and_a_failure_reaches_the_caller(served_pipe, monkeypatch):
    model = served_pipe.model
    threads: list[str] = []
    new_cache = model.new_cache

    def recording_new_cache(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return new_cache(*args, **kwargs)

    monkeypatch.setattr(model, "new_cache", recording_new_cache)
    batcher = ContinuousBatcher(model, max_rows=2, max_context=64, max_queue=1)
    batcher.close()
    # the one thread that runs torch's parallel CPU ops (see ContinuousBatcher._run)
    assert threads == ["chameleon-decode"] and batcher.cache.batch == 2

    def failing_new_cache(*args, **kwargs):
        raise MemoryError("no room for the cache")

    monkeypatch.setattr(model, "new_cache", failing_new_cache)
    with pytest.raises(MemoryError, match="no room"):
        ContinuousBatcher(model, max_rows=2, max_context=64, max_queue=1)


def test_requests_admitted_together_are_prefilled_in_one_pass_and_match_decoding_alone(served_pipe, monkeypatch):
    import chameleon_sdk.serve.batcher as batcher_module

    passes: list[int] = []
    prefill = batcher_module.prefill_prompts

    def counting_prefill(model, prompts, **kwargs):
        passes.append(len(prompts))
        return prefill(model, prompts, **kwargs)

    monkeypatch.setattr(batcher_module, "prefill_prompts", counting_prefill)
    picks = [0, 1, 2, 0]  # text, text, image with 3-row guidance, text: 6 rows
    expected = [served_pipe.generate(REQUESTS[i][0], sampler="greedy", **REQUESTS[i][1]) for i in picks]
    batcher = ContinuousBatcher(served_pipe.model, max_rows=8, max_context=256, max_queue=8)
    try:
        sinks = [Collector() for _ in picks]
        with batcher._cond:  # the decode thread waits for this lock: every request joins the same round
            for i, sink in zip(picks, sinks):
                prompt, options = REQUESTS[i]
                batcher.submit(served_pipe.prepare_stream(prompt, sampler="greedy", **options), sink, timeout=60)
        assert [s.document() for s in sinks] == expected
    finally:
        batcher.close()
    assert sum(passes) == 6 and len(passes) < len(picks)


class _Prompts:
    """What prefill_groups reads of a job: its physical prompts."""

    def __init__(self, lengths: list[int]) -> None:
        self.stream = type("S", (), {"decoder": type("D", (), {"physical_prompts": [[0] * n for n in lengths]})})


@given(st.lists(st.lists(st.integers(1, 300), min_size=1, max_size=3), min_size=1, max_size=10))
def test_prefill_groups_keep_order_and_bound_the_padding(lengths):
    from chameleon_sdk.serve.batcher import PREFILL_PADDING_LIMIT, prefill_groups

    jobs = [_Prompts(n) for n in lengths]
    groups = prefill_groups(jobs)  # type: ignore[arg-type]
    assert [j for g in groups for j in g] == jobs
    for group in groups:
        prompts = [len(p) for j in group for p in j.stream.decoder.physical_prompts]
        assert len(group) == 1 or sum(prompts) >= (1 - PREFILL_PADDING_LIMIT) * len(prompts) * max(prompts)
    # a job joins the run before it whenever the padding allows it
    for before, after in itertools.pairwise(groups):
        prompts = [len(p) for j in (*before, after[0]) for p in j.stream.decoder.physical_prompts]
        assert sum(prompts) < (1 - PREFILL_PADDING_LIMIT) * len(prompts) * max(prompts)


def test_the_heap_is_trimmed_once_each_time_the_batch_empties(served_pipe, monkeypatch):
    import chameleon_sdk.serve.batcher as batcher_module

    trims: list[tuple[int, bool]] = []
    batcher = ContinuousBatcher(served_pipe.model, max_rows=2, max_context=64, max_queue=2)

    def trim() -> None:
        # another thread asking for the load meanwhile is not kept waiting: the trim runs unlocked
        other = threading.Thread(target=batcher.load)
        other.start()
        other.join(timeout=5)
        trims.append((batcher.load()["running"], not other.is_alive()))

    monkeypatch.setattr(batcher_module, "release_free_memory", trim)

    def run_one(runs: int) -> None:
        sink = Collector()
        job = batcher.submit(served_pipe.prepare_stream("a red", max_new_tokens=4), sink, timeout=60)
        sink.document()
        for _ in range(500):  # the decode thread trims after it has handed the end over
            if len(trims) == runs:
                break
            threading.Event().wait(0.01)
        batcher.cancel(job)  # a wake-up with nothing to do: no second trim

    try:
        assert trims == []  # nothing ran yet: nothing to give back
        for runs in (1, 2):
            run_one(runs)
            threading.Event().wait(0.05)
            assert trims == [(0, True)] * runs  # once per emptying, with no request running, unlocked
    finally:
        batcher.close()
