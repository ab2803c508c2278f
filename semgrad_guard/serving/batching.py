"""Micro-batching: requests that arrive while the model is busy are scored together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")
# One request: its items and the future its caller waits on.
_Request = tuple[list[Item], "asyncio.Future[list[Result]]"]


class MicroBatcher(Generic[Item, Result]):
    """Collects the items of concurrent requests and runs ``work`` on them in one call.

    A batch closes when it holds ``max_batch`` items or ``max_wait`` seconds after its
    first request arrived; requests that arrive while a batch is being scored form the
    next one, so a busy model batches more. ``work`` runs in a worker thread (it is the
    model's forward/backward pass) and returns one result per item, in order.
    ``on_batch(size, seconds)`` is told about every batch (metrics).

    >>> async def demo():
    ...     batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], max_batch=8, max_wait=0.01)
    ...     results = await asyncio.gather(batcher.submit([1]), batcher.submit([2, 3]))
    ...     await batcher.close()
    ...     return results, batcher.batches
    >>> asyncio.run(demo())
    ([[2], [4, 6]], 1)
    """

    def __init__(self, work: Callable[[list[Item]], Sequence[Result]], *, max_batch: int = 32,
                 max_wait: float = 0.005,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.work = work
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.on_batch = on_batch
        self.batches = 0
        self._queue: asyncio.Queue[_Request[Item, Result]] | None = None
        self._carry: _Request[Item, Result] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Score ``items`` with whatever else is waiting; returns their results in order."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(self._queue), name="semgrad-micro-batcher")
        future: asyncio.Future[list[Result]] = loop.create_future()
        await self._queue.put((list(items), future))
        return await future

    async def close(self) -> None:
        """Stop the worker; requests still waiting fail with ``CancelledError``."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _next_batch(self, queue: asyncio.Queue[_Request[Item, Result]]
                          ) -> list[_Request[Item, Result]]:
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry is not None else await queue.get()
        self._carry = None
        batch, size = [first], len(first[0])
        deadline = loop.time() + self.max_wait
        while size < self.max_batch:
            remaining = deadline - loop.time()
            try:
                if not queue.empty():
                    request = queue.get_nowait()
                elif remaining > 0:
                    request = await asyncio.wait_for(queue.get(), remaining)
                else:
                    break
            except TimeoutError:
                break
            if size + len(request[0]) > self.max_batch:
                self._carry = request  # it opens the next batch
                break
            batch.append(request)
            size += len(request[0])
        return batch

    async def _run(self, queue: asyncio.Queue[_Request[Item, Result]]) -> None:
        while True:
            batch = await self._next_batch(queue)
            items = [item for request, _ in batch for item in request]
            start = time.perf_counter()
            try:
                results: Any = await asyncio.to_thread(self.work, items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch function returned {len(results)} results "
                                       f"for {len(items)} items")
            except Exception as exc:  # every waiting request gets the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            finally:
                self.batches += 1
                if self.on_batch is not None:
                    self.on_batch(len(items), time.perf_counter() - start)
            at = 0
            for request, future in batch:
                if not future.done():  # the caller may have gone away
                    future.set_result(list(results[at:at + len(request)]))
                at += len(request)
