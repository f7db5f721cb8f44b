"""receiver.coalesce: requests for one key share batches, at most `concurrency` at once, each
batch taking what queued meanwhile (up to `max_batch`); results and errors reach exactly the
requests of their batch; keys do not wait on each other; a starting batch takes in what the
loop already holds and its share of the queue; items with a claim in common are never in two
running batches."""

from __future__ import annotations

import asyncio

import pytest

from receiver.coalesce import Coalescer, Unclaimed


class Gated:
    """A batch runner that records its batches and holds each until the test lets it go."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = asyncio.Condition()

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    async def run(self, key: str, items: list[int]) -> list[str]:
        self.batches.append((key, list(items)))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        async with self.started:
            self.started.notify_all()
        try:
            await self.gate(key).wait()
            if -1 in items:
                raise ValueError("a batch with a bad item")
            return [f"{key}:{item}" for item in items]
        finally:
            self.in_flight -= 1

    async def wait_for_batches(self, count: int) -> None:
        # Bounded: a coalescer that never starts the batch fails the test instead of hanging.
        async with asyncio.timeout(5), self.started:
            await self.started.wait_for(lambda: len(self.batches) >= count)


async def test_an_idle_key_runs_a_request_alone_and_at_once() -> None:
    runner = Gated()
    runner.gate("a").set()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=1)
    assert await coalescer.submit("a", 1) == "a:1"
    assert runner.batches == [("a", [1])]


async def test_requests_arriving_during_a_batch_share_the_next_up_to_max_batch() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=4, concurrency=1)
    first = asyncio.create_task(coalescer.submit("a", 0))
    await runner.wait_for_batches(1)
    rest = [asyncio.create_task(coalescer.submit("a", item)) for item in range(1, 10)]
    await asyncio.sleep(0)  # let them queue (no batch can start: the only one is held)
    runner.gate("a").set()
    results = await asyncio.gather(first, *rest)
    assert results == [f"a:{item}" for item in range(10)]
    assert [items for _, items in runner.batches] == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert runner.most_in_flight == 1


async def test_at_most_concurrency_batches_run_for_one_key() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=2)
    tasks = [asyncio.create_task(coalescer.submit("a", 0))]
    await runner.wait_for_batches(1)
    tasks.append(asyncio.create_task(coalescer.submit("a", 1)))
    await runner.wait_for_batches(2)
    assert runner.in_flight == 2
    tasks += [asyncio.create_task(coalescer.submit("a", item)) for item in range(2, 6)]
    await asyncio.sleep(0)
    runner.gate("a").set()
    assert await asyncio.gather(*tasks) == [f"a:{item}" for item in range(6)]
    assert runner.most_in_flight == 2
    # Two batches of one started at once; the other four waited for them, in order.
    assert runner.batches[:2] == [("a", [0]), ("a", [1])]
    assert [item for _, items in runner.batches[2:] for item in items] == [2, 3, 4, 5]


async def test_an_error_reaches_the_requests_of_its_batch_only() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=2, concurrency=1)
    first = asyncio.create_task(coalescer.submit("a", 0))
    await runner.wait_for_batches(1)
    doomed = [asyncio.create_task(coalescer.submit("a", item)) for item in (1, -1)]
    spared = [asyncio.create_task(coalescer.submit("a", item)) for item in (2, 3)]
    await asyncio.sleep(0)
    runner.gate("a").set()
    assert await first == "a:0"
    for task in doomed:
        with pytest.raises(ValueError, match="bad item"):
            await task
    assert await asyncio.gather(*spared) == ["a:2", "a:3"]
    assert [items for _, items in runner.batches] == [[0], [1, -1], [2, 3]]


async def test_a_held_key_does_not_hold_another() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=1)
    held = asyncio.create_task(coalescer.submit("a", 1))
    await runner.wait_for_batches(1)
    runner.gate("b").set()
    assert await coalescer.submit("b", 2) == "b:2"
    assert not held.done()
    runner.gate("a").set()
    assert await held == "a:1"


async def test_a_request_given_up_on_leaves_the_others_their_results() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=1)
    first = asyncio.create_task(coalescer.submit("a", 0))
    await runner.wait_for_batches(1)
    abandoned = asyncio.create_task(coalescer.submit("a", 1))
    kept = asyncio.create_task(coalescer.submit("a", 2))
    await asyncio.sleep(0)
    abandoned.cancel()
    runner.gate("a").set()
    assert await first == "a:0"
    assert await kept == "a:2"
    assert abandoned.cancelled()
    assert [items for _, items in runner.batches] == [[0], [1, 2]]


async def submit_after(coalescer: Coalescer[str, int, str], turns: int, item: int) -> str:
    """A request that needs `turns` turns of the loop (reading its body, say) to be ready."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return await coalescer.submit("a", item)


async def test_a_starting_batch_takes_in_the_requests_the_loop_already_holds() -> None:
    runner = Gated()
    runner.gate("a").set()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=1)
    results = await asyncio.gather(*(submit_after(coalescer, turns, turns) for turns in range(4)))
    assert results == ["a:0", "a:1", "a:2", "a:3"]
    assert runner.batches == [("a", [0, 1, 2, 3])]


async def test_the_queue_is_spread_over_the_batches_that_may_start() -> None:
    runner = Gated()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=3)
    tasks = [asyncio.create_task(coalescer.submit("a", item)) for item in range(9)]
    await runner.wait_for_batches(3)
    assert runner.in_flight == 3
    assert [items for _, items in runner.batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    runner.gate("a").set()
    assert await asyncio.gather(*tasks) == [f"a:{item}" for item in range(9)]


class Claimed(Gated):
    """Gated batches of (record, version) items, failing the test if two running batches
    hold one record."""

    def __init__(self) -> None:
        super().__init__()
        self.holding: list[set[str]] = []

    async def run(self, key: str, items: list[int]) -> list[str]:  # type: ignore[override]
        records = {str(item)[0] for item in items}
        assert all(not records & other for other in self.holding)
        self.holding.append(records)
        try:
            return await super().run(key, items)
        finally:
            self.holding.remove(records)


def record_of(item: int) -> set[str]:
    return {str(item)[0]}  # 11 and 12 are versions of record "1"


async def test_an_item_whose_record_a_running_batch_holds_waits_for_a_later_one() -> None:
    runner = Claimed()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=2, claims=record_of)
    first = asyncio.create_task(coalescer.submit("a", 11))
    await runner.wait_for_batches(1)
    rest = [asyncio.create_task(coalescer.submit("a", item)) for item in (12, 21, 13, 22)]
    await runner.wait_for_batches(2)
    # Record 1's versions wait for the batch holding it; record 2's go at once.
    assert runner.batches[1] == ("a", [21, 22])
    runner.gate("a").set()
    assert await asyncio.gather(first, *rest) == ["a:11", "a:12", "a:21", "a:13", "a:22"]
    assert [item for _, items in runner.batches[2:] for item in items] == [12, 13]


async def test_an_item_queued_behind_a_waiting_one_with_a_claim_in_common_waits_too() -> None:
    runner = Claimed()

    def claims(item: int) -> set[str]:
        return set(str(item))  # 12 holds records 1 and 2, 23 holds 2 and 3

    coalescer = Coalescer(runner.run, max_batch=64, concurrency=2, claims=claims)
    first = asyncio.create_task(coalescer.submit("a", 1))
    await runner.wait_for_batches(1)
    rest = [asyncio.create_task(coalescer.submit("a", item)) for item in (12, 23, 4)]
    await runner.wait_for_batches(2)
    # 12 waits for record 1; 23 shares record 2 with it, so it may not overtake it.
    assert runner.batches[1] == ("a", [4])
    runner.gate("a").set()
    assert await asyncio.gather(first, *rest) == ["a:1", "a:12", "a:23", "a:4"]
    assert [item for _, items in runner.batches[2:] for item in items] == [12, 23]


async def test_an_item_gives_up_on_a_batch_holding_its_record_past_its_patience() -> None:
    runner = Claimed()
    coalescer = Coalescer(runner.run, max_batch=64, concurrency=2, claims=record_of, patience=0.01)
    stuck = asyncio.create_task(coalescer.submit("a", 11))
    await runner.wait_for_batches(1)
    # The batch holding record 1 never finishes within the patience: 12 leaves the queue
    # unrun (its caller goes on alone), while 21 runs beside the stuck batch.
    other = asyncio.create_task(coalescer.submit("a", 21))
    with pytest.raises(Unclaimed):
        async with asyncio.timeout(5):
            await coalescer.submit("a", 12)
    runner.gate("a").set()
    assert await asyncio.gather(stuck, other) == ["a:11", "a:21"]
    assert sorted(item for _, items in runner.batches for item in items) == [11, 21]
