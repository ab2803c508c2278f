"""The micro-batcher on plain functions: grouping, a bounded queue, cancellation, a failing
row, asyncio callers, shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from semgrad_guard.errors import ModelClosedError
from semgrad_guard.model.batching import (
    MicroBatcher,
    RowFailure,
    each_alone_after_failure,
    settings_key,
)


class Recorder:
    """A batch function that records its calls; ``gate`` holds the worker inside a call."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.gate = threading.Event()
        self.inside = threading.Event()

    def __call__(self, items: list[Any]) -> list[Any]:
        self.calls.append(list(items))
        self.inside.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return [("done", x) for x in items]


@pytest.fixture
def batcher() -> Iterator[MicroBatcher]:
    b = MicroBatcher(max_batch=4, name="test-batcher")
    try:
        yield b
    finally:
        b.close(cancel_pending=True, timeout=30)


def _occupy(batcher: MicroBatcher, work: Recorder) -> Any:
    """Start one request and wait until the worker is inside it."""
    first = batcher.submit(work, "first")
    assert work.inside.wait(30)
    return first


def test_requests_queued_together_are_grouped_by_function_and_settings(batcher) -> None:
    work, other = Recorder(), Recorder()
    other.gate.set()
    first = _occupy(batcher, work)
    futures = [batcher.submit(work, i, key="greedy") for i in range(6)]
    futures.append(batcher.submit(work, "sampled", key="sampled"))
    futures.append(batcher.submit(other, "other", key="greedy"))
    assert batcher.queued == 8
    work.gate.set()
    assert first.result(30) == ("done", "first")
    assert [f.result(30) for f in futures[:6]] == [("done", i) for i in range(6)]
    assert futures[6].result(30) == ("done", "sampled")
    assert futures[7].result(30) == ("done", "other")
    # One call per group, at most max_batch items each, in order of arrival.
    assert work.calls == [["first"], [0, 1, 2, 3], [4, 5], ["sampled"]]
    assert other.calls == [["other"]]
    assert (batcher.batches, batcher.rows) == (5, 9)


def test_a_full_queue_makes_callers_wait_for_room() -> None:
    batcher = MicroBatcher(max_queue=2, name="small-queue")
    work = Recorder()
    try:
        _occupy(batcher, work)
        batcher.submit(work, 1)
        batcher.submit(work, 2)
        third_in = threading.Event()

        def third() -> None:
            batcher.submit(work, 3)
            third_in.set()

        thread = threading.Thread(target=third)
        thread.start()
        # The worker is held inside a call: the queue cannot drain, the caller waits.
        assert not third_in.wait(0.3)
        assert batcher.queued == 2
        work.gate.set()
        assert third_in.wait(30)
        thread.join(30)
    finally:
        work.gate.set()
        batcher.close(timeout=30)
    assert sorted(x for call in work.calls for x in call if x != "first") == [1, 2, 3]


def test_a_cancelled_caller_leaves_the_batch_and_the_others_get_theirs(batcher) -> None:
    work = Recorder()
    _occupy(batcher, work)
    a, b, c = (batcher.submit(work, x) for x in "abc")
    assert b.cancel()
    work.gate.set()
    assert a.result(30) == ("done", "a") and c.result(30) == ("done", "c")
    assert b.cancelled()
    assert work.calls[1] == ["a", "c"]


def test_one_failing_row_fails_only_its_caller(batcher) -> None:
    gate = Recorder()

    def picky(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("13 is unlucky")
        return [x * 10 for x in items]

    _occupy(batcher, gate)
    futures = [batcher.submit(picky, x) for x in (1, 13, 3)]
    gate.gate.set()
    assert futures[0].result(30) == 10 and futures[2].result(30) == 30
    with pytest.raises(ValueError, match="13 is unlucky"):
        futures[1].result(30)


def test_a_row_failure_reaches_its_caller_alone(batcher) -> None:
    def halves(items: list[int]) -> list[Any]:
        return [RowFailure(ValueError(f"{x} is odd")) if x % 2 else x // 2 for x in items]

    gate = Recorder()
    _occupy(batcher, gate)
    futures = [batcher.submit(halves, x) for x in (2, 3, 4)]
    gate.gate.set()
    assert futures[0].result(30) == 1 and futures[2].result(30) == 2
    with pytest.raises(ValueError, match="3 is odd"):
        futures[1].result(30)
    assert batcher.batches == 2  # the first request, then one call for the three


def test_after_a_failed_batch_each_item_runs_alone() -> None:
    calls: list[list[int]] = []

    def invert(items: list[int]) -> list[float]:
        calls.append(list(items))
        if 0 in items:
            raise ZeroDivisionError("0 has no inverse")
        if 3 in items:
            raise KeyError("not a failure of the rows")
        return [1 / x for x in items]

    results = each_alone_after_failure(invert, [2, 0, 4], ZeroDivisionError)
    assert calls == [[2, 0, 4], [2], [0], [4]]
    assert results[0] == 0.5 and results[2] == 0.25
    assert isinstance(results[1], RowFailure) and isinstance(results[1].error,
                                                             ZeroDivisionError)
    calls.clear()
    assert each_alone_after_failure(invert, [2, 4], ZeroDivisionError) == [0.5, 0.25]
    assert calls == [[2, 4]]  # a batch that does not fail runs once
    [lone] = each_alone_after_failure(invert, [0], ZeroDivisionError)
    assert isinstance(lone, RowFailure)
    with pytest.raises(KeyError):  # other errors are not the rows' to keep
        each_alone_after_failure(invert, [2, 3], ZeroDivisionError)


def test_asyncio_callers_await_without_blocking_the_loop(batcher) -> None:
    work = Recorder()

    async def scenario() -> tuple[list[Any], int]:
        ticks = 0
        calls = asyncio.gather(*(batcher.acall(work, i) for i in range(3)))
        while not work.inside.is_set() or ticks < 5:  # the loop keeps running meanwhile
            ticks += 1
            await asyncio.sleep(0.01)
        work.gate.set()
        return await calls, ticks

    results, ticks = asyncio.run(scenario())
    assert results == [("done", 0), ("done", 1), ("done", 2)]
    assert ticks >= 5


def test_cancelling_an_awaiting_task_does_not_break_the_batch(batcher) -> None:
    work = Recorder()

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(batcher.acall(work, "first"))
        while not work.inside.is_set():
            await asyncio.sleep(0.01)
        keep = [asyncio.ensure_future(batcher.acall(work, x)) for x in "ac"]
        drop = asyncio.ensure_future(batcher.acall(work, "b"))
        while batcher.queued < 3:
            await asyncio.sleep(0.01)
        drop.cancel()
        await asyncio.sleep(0)
        work.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await drop
        return [await first, *await asyncio.gather(*keep)]

    assert asyncio.run(scenario()) == [("done", "first"), ("done", "a"), ("done", "c")]
    assert ["b"] not in work.calls and "b" not in work.calls[-1]


def test_a_batch_function_may_ask_the_batcher_for_more(batcher) -> None:
    def outer(items: list[int]) -> list[int]:
        # Runs on the worker: a nested request must not wait for the worker itself.
        return [batcher.call(lambda xs: [x + 1 for x in xs], x) for x in items]

    assert batcher.call(outer, 1) == 2


def test_close_finishes_the_queue_then_refuses(batcher) -> None:
    work = Recorder()
    first = _occupy(batcher, work)
    queued = batcher.submit(work, "queued")
    closing = threading.Thread(target=batcher.close, kwargs={"timeout": 30})
    closing.start()
    work.gate.set()
    closing.join(30)
    assert first.result(0) == ("done", "first") and queued.result(0) == ("done", "queued")
    with pytest.raises(ModelClosedError, match="test-batcher is closed"):
        batcher.submit(work, "late")


def test_close_can_cancel_what_is_queued() -> None:
    batcher = MicroBatcher(name="cancelling")
    work = Recorder()
    first = _occupy(batcher, work)
    queued = batcher.submit(work, "queued")
    closing = threading.Thread(target=batcher.close, kwargs={"cancel_pending": True,
                                                             "timeout": 30})
    closing.start()
    while batcher.queued:
        time.sleep(0.001)
    work.gate.set()
    closing.join(30)
    assert first.result(0) == ("done", "first") and queued.cancelled()


def test_the_worker_stops_when_idle_and_starts_again() -> None:
    batcher = MicroBatcher(idle_timeout=0.01, name="idle")
    try:
        assert batcher.call(lambda xs: xs, 1) == 1
        worker = batcher._worker
        if worker is not None:
            worker.join(30)
        assert batcher._worker is None
        assert batcher.call(lambda xs: xs, 2) == 2
    finally:
        batcher.close(timeout=30)


def test_settings_keys() -> None:
    tokenizer = object()
    a = settings_key({"max_new_tokens": 8, "stop_strings": ["\n"], "tokenizer": tokenizer})
    b = settings_key({"tokenizer": tokenizer, "stop_strings": ["\n"], "max_new_tokens": 8})
    assert a == b and hash(a) == hash(b)
    assert a != settings_key({"max_new_tokens": 9, "stop_strings": ["\n"],
                              "tokenizer": tokenizer})
    assert a != settings_key({"max_new_tokens": 8, "stop_strings": ["\n"],
                              "tokenizer": object()})
    assert settings_key({"tools": [{"name": "f", "parameters": {}}]}) == \
        settings_key({"tools": [{"parameters": {}, "name": "f"}]})
