"""Which orders of a bulk batch PostgreSQL reads out of their JSON (backfill.bulk_sql), and
what it is given of them: each order as grouped, in COPY's text format, and the ids and list
completeness the write's rules need."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from backfill.bulk_sql import split_batch
from backfill.nested import BulkGroup, BulkGrouper
from handlers.resources import ORDERS
from models.engine import dumps_json


def _order(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/Order/{number}",
        "updatedAt": "2025-01-02T03:04:05Z",
        "refunds": [],
        "transactions": [{"id": f"gid://shopify/OrderTransaction/{number}"}],
        "fulfillments": [],
        **fields,
    }


def _item(order: int, number: int, title: str = "") -> dict[str, Any]:
    return {
        "id": f"gid://shopify/LineItem/{number}",
        "title": title,
        "__parentId": f"gid://shopify/Order/{order}",
    }


def _grouped(lines: list[bytes], first: int = 1) -> list[BulkGroup]:
    grouper = BulkGrouper(ORDERS.children)
    groups = [
        group
        for number, line in enumerate(lines, start=first)
        for group in grouper.feed(orjson.loads(line), number)
    ]
    return groups + list(grouper.finish())


def _copied(data: bytes) -> list[bytes]:
    """COPY's text format read back: each row's one column, its escapes undone."""
    rows = []
    for row in data.split(b"\n")[:-1]:
        assert b"\t" not in row  # one column
        rows.append(row.replace(b"\\\\", b"\\"))
    return rows


def test_orders_with_unreadable_lists_or_twice_in_a_batch_are_pythons() -> None:
    objects = [
        _order(1),
        _item(1, 11, title='a 1/2\\" \\ bit, "tab"\t'),
        _order(2, refunds=[{"id": "gid://shopify/Refund/5", "note": "damaged"}]),
        _item(2, 21),
        _order(3, transactions="not a list"),
        _order(4),
        _order(4, updatedAt="2025-02-01T00:00:00Z"),
        _order(5, fulfillments=[7]),
        _order(6, transactions=None),
        _order(8, refunds=[{"id": "gid://shopify/Refund/9", "createdAt": "yesterday"}]),
        _order(9, refunds=[{"id": "gid://shopify/Refund/10", "refundLineItems": {"edges": []}}]),
        _order(12, transactions={"nodes": [], "pageInfo": {"hasNextPage": False}}),
        _order(
            13,
            refunds=[
                {
                    "id": "gid://shopify/Refund/14",
                    "updatedAt": "2025-01-01T00:00:00Z",
                    "refundLineItems": {
                        "nodes": [{"id": "gid://shopify/RefundLineItem/15"}],
                        "pageInfo": {"hasNextPage": False},
                    },
                },
                {
                    "id": "gid://shopify/Refund/16",
                    "refundLineItems": {"nodes": [], "pageInfo": {"hasNextPage": True}},
                },
            ],
        ),
    ]
    lines = [orjson.dumps(value) for value in objects]

    groups = _grouped(lines)
    python, sql = split_batch(groups)

    # Lists in shapes the statements do not read (a connection's edges, a plain list shaped
    # as a connection) are Python's; a value PostgreSQL cannot cast (order 8's refund's time)
    # fails its batch's statements, which sends the batch to Python then.
    assert sorted(int(group.node["id"].rsplit("/", 1)[1]) for group in python) == [
        3,
        4,
        4,
        5,
        9,
        12,
    ]
    assert sql is not None
    assert sorted(sql.orders) == [1, 2, 6, 8, 13]
    # The Python path's input, should PostgreSQL refuse the batch: read again from the JSON.
    kept = [groups[index].node for index in (0, 1, 6, 7, 10)]
    assert sql.nodes() == kept
    assert [node["id"] for node in sql.nodes()] == [
        "gid://shopify/Order/1",
        "gid://shopify/Order/2",
        "gid://shopify/Order/6",
        "gid://shopify/Order/8",
        "gid://shopify/Order/13",
    ]
    assert [orjson.loads(row) for row in _copied(sql.data)] == kept
    # Refunds as any list: their ids, as of the order's time; their line items' lists by
    # refund, each as of its refund's time, as `write_children` reads them.
    positions = {child.node_key: position for position, child in enumerate(ORDERS.children)}
    refunds = sql.orders[2].lists[positions["refunds"]]
    assert refunds is not None
    assert refunds.given("shopify_id") == {5}
    assert refunds.as_of == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert sql.orders[2].nested[positions["refunds"]] == {}
    nested = sql.orders[13].nested[positions["refunds"]]
    assert sorted(nested) == [14, 16]
    assert nested[14].given("shopify_id") == {15}
    assert nested[14].complete
    assert nested[14].as_of == datetime(2025, 1, 1, tzinfo=UTC)
    assert not nested[16].complete
    assert nested[16].as_of is None
    as_of, lists, _ = sql.orders[1]
    assert as_of == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    by_key = dict(zip((child.node_key for child in ORDERS.children), lists, strict=True))
    line_items = by_key["lineItems"]
    assert line_items is not None
    assert line_items.complete
    assert line_items.given("shopify_id") == {11}
    assert by_key["transactions"] is not None
    assert by_key["transactions"].given("shopify_id") == {1}
    # A null list is an empty, whole one (`ChildSet.read`).
    nulled = dict(zip((c.node_key for c in ORDERS.children), sql.orders[6].lists, strict=True))
    assert nulled["transactions"] is not None
    assert nulled["transactions"].complete
    assert nulled["transactions"].records == []


@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.lists(st.text(max_size=12), max_size=3)),
        min_size=1,
        max_size=6,
    )
)
def test_every_order_read_in_sql_reaches_copy_as_grouped_in_the_python_paths_json(
    orders: list[tuple[str, list[str]]],
) -> None:
    """Whatever the text (backslashes, quotes, tabs and newlines escaped by JSON), each order
    reaches COPY once, in the result's order, with its line items as the reader grouped them,
    written as the Python path writes `raw`."""
    lines: list[bytes] = []
    item = 100
    for number, (note, titles) in enumerate(orders, start=1):
        lines.append(orjson.dumps(_order(number, note=note)))
        for title in titles:
            item += 1
            lines.append(orjson.dumps(_item(number, item, title)))
    groups = _grouped(lines, 41)  # the batch's first line is line 41 of the result

    python, sql = split_batch(groups)

    assert python == []
    assert sql is not None
    copied = _copied(sql.data)
    assert copied == [dumps_json(group.node).encode() for group in groups]
    assert [orjson.loads(row) for row in copied] == [group.node for group in groups]
    assert [len(orjson.loads(row)["lineItems"]["nodes"]) for row in copied] == [
        len(titles) for _, titles in orders
    ]
    assert all(b"\t" not in row and b"\n" not in row for row in copied)
