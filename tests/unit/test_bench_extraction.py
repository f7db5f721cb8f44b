"""bench.extraction cuts the bulk result where the job does: whole groups, every line once."""

from __future__ import annotations

import orjson
import pytest

from backfill import runner
from bench import extraction


def _lines(orders: int, items: int) -> list[bytes]:
    lines = []
    for order in range(1, orders + 1):
        gid = f"gid://shopify/Order/{order}"
        lines.append(orjson.dumps({"id": gid, "updatedAt": "2024-01-01T00:00:00Z"}))
        for item in range(items):
            line_item = {"id": f"gid://shopify/LineItem/{order * 100 + item}", "__parentId": gid}
            lines.append(orjson.dumps(line_item))
    return lines


@pytest.mark.parametrize(("records", "lines"), [(2, 1000), (1000, 7), (3, 5)])
def test_batches_hold_whole_groups_and_every_line_once(
    monkeypatch: pytest.MonkeyPatch, records: int, lines: int
) -> None:
    monkeypatch.setattr(runner, "BULK_BATCH", records)
    monkeypatch.setattr(runner, "BULK_BATCH_LINES", lines)
    given = _lines(orders=9, items=3)

    cut = extraction.batches(given)

    assert [line for batch in cut for line in batch.lines] == given
    assert len(cut) > 1
    for index, batch in enumerate(cut):
        assert b"__parentId" not in batch.lines[0]  # a batch starts with a parent
        assert given[batch.start - 1] == batch.lines[0]
        parents = sum(b"__parentId" not in line for line in batch.lines)
        assert parents <= records
        if index < len(cut) - 1:  # each batch but the last ends on one of the job's bounds
            assert parents == records or len(batch.lines) >= lines
