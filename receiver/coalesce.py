"""Group commit: concurrent requests for one key share one batch, and each waits for the batch
that holds it.

A key (a shop) has at most `concurrency` batches running at once. A request arriving while they
run waits in the key's queue; when a batch finishes, the next one takes everything queued (up
to `max_batch`). An idle service therefore runs each request alone, at once (no timer, no added
latency), and a busy one makes batches as large as the load: the cost of a transaction, its
commit and its statements is shared by every request in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Key, Item, Result]):
    """`run(key, items)` returns one result per item, in order; what it raises reaches every
    request of that batch."""

    def __init__(
        self,
        run: Callable[[Key, list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int,
        concurrency: int,
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queued: dict[Key, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._running: dict[Key, int] = {}
        # The loop keeps only weak references to tasks: these keep the drains alive.
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key, item: Item) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((item, future))
        if self._running.get(key, 0) < self.concurrency:
            self._start(key)
        # A request given up on (its client left, its deadline passed) leaves its item in the
        # batch: the batch's outcome no longer reaches it, and a redelivery is a duplicate.
        return await future

    async def _drain(self, key: Key) -> None:
        try:
            while queued := self._queued.get(key):
                batch = queued[: self.max_batch]
                del queued[: self.max_batch]
                try:
                    results = await self._run(key, [item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._running[key] -= 1
            if self._queued.get(key):
                # Only when this drain was cancelled mid-batch: the queue still needs one.
                self._start(key)
            elif not self._running[key]:
                del self._running[key]
                self._queued.pop(key, None)

    def _start(self, key: Key) -> None:
        self._running[key] = self._running.get(key, 0) + 1
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
