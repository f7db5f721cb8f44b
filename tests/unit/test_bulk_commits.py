"""Bulk batches commit in any order (two are written at once); the progress any of them
claims counts only batches that committed, without a gap from the start, so a resumed job
never skips a line."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backfill.runner import ResourceProgress, _BulkBatch, _BulkCommits, _reap
from handlers.children import ReadRecords


def _batches(sizes: list[int], start_line: int = 0) -> list[_BulkBatch]:
    """Batches of `sizes` records, each record one line, in the result's order."""
    batches = []
    line = start_line
    for size in sizes:
        line += size
        nodes = [{"id": f"gid://shopify/Order/{line - n}"} for n in range(size)]
        batches.append(_BulkBatch(nodes, ReadRecords({}, ()), line))
    return batches


def test_a_batch_committing_past_an_open_one_is_not_claimed_until_the_gap_closes() -> None:
    batches = _batches([3, 4, 5])
    commits = _BulkCommits(ResourceProgress(lines=0, count=0, bulk_operation_id="op"))
    first, second, third = (commits.start(batch) for batch in batches)
    # The second commits first: it may not claim the first's lines, nor its own.
    assert (commits.claim(second)["lines"], commits.claim(second)["count"]) == (0, 0)
    commits.committed(second)
    assert commits.settled() == ResourceProgress(lines=0, count=0)
    # The first closes the gap: its claim counts itself and the second, which committed.
    claimed = commits.claim(first)
    assert (claimed["lines"], claimed["count"]) == (batches[1].last_line, 7)
    assert claimed["bulk_operation_id"] == "op"
    commits.committed(first)
    assert commits.settled() == ResourceProgress(lines=batches[1].last_line, count=7)
    commits.committed(third)
    assert commits.settled() == ResourceProgress(lines=batches[2].last_line, count=12)


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=8),
    data=st.data(),
)
def test_every_claim_counts_exactly_an_unbroken_run_of_committed_batches(
    sizes: list[int], data: st.DataObject
) -> None:
    """Whatever the order of commits (a resumed job starting past line 10), each claim is
    the lines and count of a prefix of batches that are committed once the claimant is,
    and what is settled at the end is every batch."""
    batches = _batches(sizes, start_line=10)
    commits = _BulkCommits(ResourceProgress(lines=10, count=10))
    tickets = [commits.start(batch) for batch in batches]
    order = data.draw(st.permutations(range(len(batches))))
    done: set[int] = set()
    for index in order:
        claimed = commits.claim(tickets[index])
        done.add(index)
        prefix = 0
        while prefix < len(batches) and prefix in done:
            prefix += 1
        expected_lines = batches[prefix - 1].last_line if prefix else 10
        expected_count = 10 + sum(sizes[:prefix])
        assert (claimed["lines"], claimed["count"]) == (expected_lines, expected_count)
        commits.committed(tickets[index])
        assert commits.settled() == ResourceProgress(lines=expected_lines, count=expected_count)
    assert commits.settled() == ResourceProgress(lines=batches[-1].last_line, count=10 + sum(sizes))


async def test_a_cancelled_write_is_a_failure_and_the_earliest_failure_is_raised() -> None:
    """A write that ended cancelled did not put its batch in: the stream must not go on as
    if it had. Of two failed writes, the one that began first is raised."""

    async def fails(message: str) -> None:
        raise RuntimeError(message)

    cancelled = asyncio.create_task(asyncio.sleep(60))
    cancelled.cancel()
    earlier, later = asyncio.create_task(fails("earlier")), asyncio.create_task(fails("later"))
    await asyncio.gather(cancelled, earlier, later, return_exceptions=True)
    writing = [cancelled]
    with pytest.raises(asyncio.CancelledError):
        _reap(writing)
    assert writing == []
    writing = [earlier, later]
    with pytest.raises(RuntimeError, match="earlier"):
        _reap(writing)
    assert writing == []
