"""Group commit: concurrent requests for one key share one batch, and each waits for the batch
that holds it.

A key (a shop) has at most `concurrency` batches running at once. A request arriving while they
run waits in the key's queue; a batch about to start first lets the requests the event loop
already holds join the queue (a few turns of the loop, no timer), then takes its share of it:
what is queued, spread over the batches that may start now, up to `max_batch`. An idle service
therefore runs each request alone and at once, and a busy one makes batches as large as the
load while keeping several of them in flight: one writes while another's requests are read,
where a single batch holding every request would leave the database and the loop taking
turns. The cost of a transaction, its commit and its statements is shared by every request in
a batch.

An item may name what it writes (`claims`: a record, a dedupe key). A batch never takes an item
whose claim a running batch of the same key holds: two transactions writing one row would
otherwise make the second wait for the first's commit, row lock by row lock, and a store's
batches would run one after the other. Such an item waits for a later batch, and so does every
item queued after it with a claim in common, so the items of one claim keep their order. It
waits at most `patience` seconds for the batch holding its claim (one stuck on a lock, say):
then its `submit` raises `Unclaimed`, and the caller handles it on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")

# Turns of the event loop a starting batch waits, at most, for requests the loop already holds
# (parsed or being verified) to join it: it stops at the first turn that added none.
GATHER_TURNS = 8


def _no_claims(item: object) -> Collection[Hashable]:
    return ()


class Unclaimed(Exception):
    """The item waited `patience` seconds for a running batch holding its claim; it was taken
    out of the queue unrun."""


@dataclass(eq=False, slots=True)
class _Entry(Generic[Item, Result]):
    """A queued item, the future its request awaits, and its claims (read once)."""

    item: Item
    future: asyncio.Future[Result]
    claims: Collection[Hashable]
    # Set once the item is left waiting on a claim: when it gives up, unless it runs first.
    patience: asyncio.TimerHandle | None = None


class Coalescer(Generic[Key, Item, Result]):
    """`run(key, items)` returns one result per item, in order; what it raises reaches every
    request of that batch."""

    def __init__(
        self,
        run: Callable[[Key, list[Item]], Awaitable[Sequence[Result]]],
        *,
        max_batch: int,
        concurrency: int,
        claims: Callable[[Item], Collection[Hashable]] = _no_claims,
        patience: float = 0.5,
    ) -> None:
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self._run = run
        self._claims = claims
        self.patience = patience
        self.max_batch = max_batch
        self.concurrency = concurrency
        self._queued: dict[Key, list[_Entry[Item, Result]]] = {}
        self._running: dict[Key, int] = {}  # drains, each running a batch or about to
        self._busy: dict[Key, int] = {}  # drains running a batch
        # Claims of the key's running batches, each with how many of them hold it.
        self._held: dict[Key, dict[Hashable, int]] = {}
        # The loop keeps only weak references to tasks: these keep the drains alive.
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, key: Key, item: Item) -> Result:
        """The item's result once its batch ran; `Unclaimed` if it gave up waiting for one."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append(_Entry(item, future, self._claims(item)))
        if self._running.get(key, 0) < self.concurrency:
            self._start(key)
        # A request given up on (its client left, its deadline passed) leaves its item in the
        # batch: the batch's outcome no longer reaches it, and a redelivery is a duplicate.
        return await future

    async def _gather(self, key: Key) -> None:
        for _ in range(GATHER_TURNS):
            queued = len(self._queued.get(key, ()))
            await asyncio.sleep(0)
            if len(self._queued.get(key, ())) == queued:
                return

    def _take(self, key: Key) -> list[_Entry[Item, Result]]:
        """The next batch: its share of the queued items, in order, leaving those whose claims
        a running batch holds or an item left waiting before them shares."""
        queued = self._queued.get(key)
        if not queued:
            return []
        startable = self.concurrency - self._busy.get(key, 0)
        size = min(self.max_batch, -(-len(queued) // startable))
        held = self._held.get(key)
        if not held:
            batch = queued[:size]
            del queued[:size]
            return batch
        batch, waiting = [], []
        blocked: set[Hashable] = set()
        for position, entry in enumerate(queued):
            if len(batch) == size:
                waiting.extend(queued[position:])
                break
            if any(claim in held or claim in blocked for claim in entry.claims):
                blocked.update(entry.claims)
                waiting.append(entry)
                if entry.patience is None:
                    entry.patience = asyncio.get_running_loop().call_later(
                        self.patience, self._give_up, key, entry
                    )
            else:
                batch.append(entry)
        queued[:] = waiting
        return batch

    def _give_up(self, key: Key, entry: _Entry[Item, Result]) -> None:
        """Past its patience, an item still queued behind a running batch's claim leaves the
        queue unrun (one free to go at the next take stays)."""
        held = self._held.get(key, {})
        if entry.future.done() or not any(claim in held for claim in entry.claims):
            entry.patience = None  # a later wait on a claim is timed afresh
            return
        self._queued[key].remove(entry)  # by identity (eq=False): equal items may be queued
        entry.future.set_exception(Unclaimed())

    def _hold(self, key: Key, claims: list[Hashable], by: int) -> None:
        self._busy[key] = self._busy.get(key, 0) + (1 if by > 0 else -1)
        if not self._busy[key]:
            del self._busy[key]
        held = self._held.setdefault(key, {})
        for claim in claims:
            count = held.get(claim, 0) + by
            if count:
                held[claim] = count
            else:
                del held[claim]
        if not held:
            del self._held[key]

    async def _drain(self, key: Key) -> None:
        try:
            while True:
                await self._gather(key)
                batch = self._take(key)
                if not batch:
                    break
                if self._queued.get(key) and self._running[key] < self.concurrency:
                    self._start(key)  # the rest of the queue is another batch's share
                for entry in batch:
                    if entry.patience is not None:
                        entry.patience.cancel()
                claims = [claim for entry in batch for claim in entry.claims]
                self._hold(key, claims, 1)
                try:
                    results = await self._run(key, [entry.item for entry in batch])
                except BaseException as exc:
                    for entry in batch:
                        if not entry.future.done():
                            entry.future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                finally:
                    self._hold(key, claims, -1)
                for entry, result in zip(batch, results, strict=True):
                    if not entry.future.done():
                        entry.future.set_result(result)
        finally:
            self._running[key] -= 1
            if not self._running[key]:
                del self._running[key]
                if self._queued.get(key):
                    # Only when this drain was cancelled: the queue still needs one.
                    self._start(key)
                else:
                    self._queued.pop(key, None)

    def _start(self, key: Key) -> None:
        self._running[key] = self._running.get(key, 0) + 1
        task = asyncio.create_task(self._drain(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
