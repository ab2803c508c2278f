"""Many callers of one model, served in batches (micro-batching).

A request is a function and one item for it: ``generate_batch`` and a prompt, a scoring
pass and a generation. Requests wait in a bounded queue; one worker thread takes all
that is queued, groups the requests that can share a padded batch (the same function
and the same settings), calls the function once per group with every item of the group,
and resolves each caller's future with its own row. Threads wait on their future;
asyncio tasks await it without blocking their event loop.

A lone caller is never kept waiting for company: the worker lingers ``max_wait`` seconds
for more requests only while callers are arriving together (its last take held more
than one request).

>>> batcher = MicroBatcher(name="doubler")
>>> def double(items):
...     return [2 * x for x in items]
>>> futures = [batcher.submit(double, x) for x in (1, 2, 3)]
>>> [f.result() for f in futures]
[2, 4, 6]
>>> batcher.close()
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..errors import ModelClosedError

#: A batch function: one result per item, in order.
BatchFn = Callable[[list[Any]], Sequence[Any]]


@dataclass(frozen=True)
class RowFailure:
    """A batch function's result for a row that failed on its own: that row's caller
    gets ``error``; the other rows of the batch keep their results."""

    error: BaseException


@dataclass
class _Request:
    work: BatchFn
    key: Hashable
    item: Any
    future: Future[Any]


class MicroBatcher:
    """Runs requests of many threads and tasks in batches, on one worker thread.

    ``max_batch`` caps the items of one call; ``max_queue`` the requests waiting (a
    caller submitting to a full queue waits for room); ``max_wait`` is how long the
    worker lingers for company while callers arrive together; the worker thread starts
    on the first request and stops after ``idle_timeout`` seconds without one.

    A request whose batch fails is run again on its own, so that one bad row fails its
    own caller only; a batch function can also return :class:`RowFailure` for a row.
    A caller that cancels its future before the batch starts leaves the batch; after,
    its result is dropped. :meth:`close` finishes (or cancels) what is queued and stops
    the worker; later requests raise :class:`~semgrad_guard.errors.ModelClosedError`.
    """

    def __init__(self, *, max_batch: int = 16, max_queue: int = 1024, max_wait: float = 0.005,
                 idle_timeout: float = 10.0, name: str = "semgrad-batcher") -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.idle_timeout = idle_timeout
        self.name = name
        #: Calls made and items they held: ``rows / batches`` is the mean batch size.
        self.batches = 0
        self.rows = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._room = threading.Condition(self._lock)
        self._pending: deque[_Request] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._last_take = 0
        _LIVE.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        with self._lock:
            return len(self._pending)

    # -- callers -------------------------------------------------------------------------------
    def submit(self, work: BatchFn, item: Any, key: Hashable = None) -> Future[Any]:
        """Queue ``item`` for ``work``; requests with the same ``work`` and ``key`` may
        share a call. Waits while the queue is full."""
        future: Future[Any] = Future()
        if threading.current_thread() is self._worker:
            # A batch function asking for more work: run it here, the worker is busy.
            self._run(work, [_Request(work, key, item, future)])
            return future
        with self._lock:
            while len(self._pending) >= self.max_queue and not self._closed:
                self._room.wait()
            if self._closed:
                raise ModelClosedError(f"{self.name} is closed: it takes no more requests")
            self._pending.append(_Request(work, key, item, future))
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, name=self.name,
                                                daemon=True)
                self._worker.start()
            self._arrived.notify()
        return future

    def call(self, work: BatchFn, item: Any, key: Hashable = None) -> Any:
        """:meth:`submit` and wait for the result (raises the row's error)."""
        return self.submit(work, item, key).result()

    async def acall(self, work: BatchFn, item: Any, key: Hashable = None) -> Any:
        """:meth:`call` for asyncio: the event loop runs on while the batch does.
        Cancelling the awaiting task takes its request out of the queue."""
        with self._lock:
            full = len(self._pending) >= self.max_queue
        if full:  # waiting for room would block the loop: wait in a thread
            future = await asyncio.to_thread(self.submit, work, item, key)
        else:
            future = self.submit(work, item, key)
        return await asyncio.wrap_future(future)

    def close(self, *, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Refuse new requests, finish the queued ones (or cancel them), stop the worker."""
        with self._lock:
            self._closed = True
            if cancel_pending:
                while self._pending:
                    self._pending.popleft().future.cancel()
            worker = self._worker
            self._arrived.notify_all()
            self._room.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    # -- the worker ------------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            for work, requests in _groups(taken):
                for lo in range(0, len(requests), self.max_batch):
                    self._run(work, requests[lo:lo + self.max_batch])

    def _take(self) -> list[_Request] | None:
        """Everything queued, once there is something; None when the worker should stop."""
        with self._lock:
            idle_until = time.monotonic() + self.idle_timeout
            while not self._pending:
                left = idle_until - time.monotonic()
                if self._closed or left <= 0:
                    self._worker = None
                    return None
                self._arrived.wait(left)
            if self._last_take > 1 and self.max_wait > 0:
                until = time.monotonic() + self.max_wait
                while len(self._pending) < self.max_batch and not self._closed:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._arrived.wait(left)
            taken = list(self._pending)
            self._pending.clear()
            self._last_take = len(taken)
            self._room.notify_all()
        return taken

    def _run(self, work: BatchFn, requests: list[_Request]) -> None:
        live = [r for r in requests if r.future.set_running_or_notify_cancel()]
        if not live:
            return

        def counted(items: list[Any]) -> Sequence[Any]:
            self.batches += 1
            self.rows += len(items)
            return work(items)

        # Every waiting caller must hear of a failure: any error fails its rows.
        results = each_alone_after_failure(counted, [r.item for r in live], BaseException)
        for request, result in zip(live, results, strict=True):
            _resolve(request.future, result)


def each_alone_after_failure(work: BatchFn, items: list[Any],
                             failure: type[BaseException] | tuple[type[BaseException], ...]
                             ) -> list[Any]:
    """``work(items)``, one result per item; when the batch raises ``failure``, each item
    runs again alone, so that only the items that fail alone fail: their results are then
    :class:`RowFailure` (as is a lone item's error). Other errors propagate.

    >>> def invert(items):
    ...     if 0 in items:
    ...         raise ZeroDivisionError("0 has no inverse")
    ...     return [1 / x for x in items]
    >>> each_alone_after_failure(invert, [2, 0, 4], ZeroDivisionError)
    [0.5, RowFailure(error=ZeroDivisionError('0 has no inverse')), 0.25]
    """
    try:
        results = list(work(items))
        if len(results) != len(items):
            raise RuntimeError(f"the batch function returned {len(results)} results "
                               f"for {len(items)} items")
        return results
    except failure as exc:
        if len(items) == 1:
            return [RowFailure(exc)]
    return [_alone(work, item, failure) for item in items]


def _alone(work: BatchFn, item: Any,
           failure: type[BaseException] | tuple[type[BaseException], ...]) -> Any:
    try:
        return list(work([item]))[0]
    except failure as exc:
        return RowFailure(exc)


def _resolve(future: Future[Any], result: Any) -> None:
    if isinstance(result, RowFailure):
        future.set_exception(result.error)
    else:
        future.set_result(result)


def _groups(requests: list[_Request]) -> Iterator[tuple[BatchFn, list[_Request]]]:
    """Requests that can share a call, in order of their first arrival."""
    groups: dict[tuple[BatchFn, Hashable], list[_Request]] = {}
    for request in requests:
        groups.setdefault((request.work, request.key), []).append(request)
    for (work, _), members in groups.items():
        yield work, members


def settings_key(settings: Any) -> Hashable:
    """A hashable stand-in for generation settings: equal settings, equal keys.

    Objects that are not plain data (a tokenizer, a logits processor) count by identity.

    >>> settings_key({"max_new_tokens": 8, "stop_strings": ["\\n"]}) == \\
    ...     settings_key({"stop_strings": ["\\n"], "max_new_tokens": 8})
    True
    """
    if isinstance(settings, dict):
        return ("dict", tuple(sorted((str(k), settings_key(v)) for k, v in settings.items())))
    if isinstance(settings, (list, tuple)):
        return (type(settings).__name__, tuple(settings_key(v) for v in settings))
    if settings is None or isinstance(settings, (str, int, float, bool, bytes)):
        return settings
    return ("object", id(settings))


# Batchers still alive at interpreter exit stop cleanly (a daemon thread killed inside
# a torch call can crash the exit).
_LIVE: weakref.WeakSet[MicroBatcher] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for batcher in list(_LIVE):
        batcher.close(cancel_pending=True, timeout=30)
