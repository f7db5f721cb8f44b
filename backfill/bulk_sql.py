"""A bulk backfill's orders read by PostgreSQL out of their JSON (issue #16, goal 4).

On PostgreSQL, the orders of a bulk result are not normalised in Python: each goes as the
job's reader grouped it (its line items under `lineItems`, as a page query has them,
`BulkGrouper`; its refunds' line items as Admin API reads gave them, `fill_bulk_gaps`),
written as JSON by the encoder the Python path writes `raw` with (COPY, text format), into
one `jsonb` staging column, and one INSERT ... SELECT per table reads the columns with SQL and
ends in the service's own guarded merge (`guarded_merge`): orders, then their line items,
refunds and the refunds' line items, transactions and fulfillments. Python only reads what the
write's rules need: each order's id and `updatedAt`, and the ids in each child list (a
refund's line items too) with whether the list is whole (`ChildSet.listed`). With those the
write keeps the Python path's rules (`lists_to_write`, `write_children`): children only of
orders whose write applied (refunds and transactions, facts once made, of every order not
deleted, with their line items), and the tombstones of whole lists, by the same `Tombstones`
statement.

Trust. The columns are read by the parse functions' SQL twins (`handlers.sql_fields`) for
the declared fields, and by SQL written here for the rest, but without the twins' `ok`
checks, which cost PostgreSQL more than Python's normalising (bench/RESULTS.md, 2026-12-03):
the bulk result is Shopify's answer to our own query, downloaded over TLS from the address
the authenticated Admin API gave, and the Admin API's answers that complete it (a refund's
line items) are its answers to our own queries, so their shapes are the schema's. Values are
still cast: anything PostgreSQL cannot read as its column's type (an amount that is not a
number, a malformed time or gid, a duplicate record, text jsonb refuses) fails the statement,
and the batch's orders are then written by the Python normalisers under a savepoint's
rollback, which accept them the same way or refuse them with their own message. What the
checks alone would have refused is a spelling both read alike (`+5`, ` 5.00`, a number where
a string belongs): such a value is stored as PostgreSQL reads it.

Resources other than orders, SQLite, and orders when metafield namespaces are configured
stay on the Python path (their sets are not read here).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple, cast

import asyncpg
from sqlalchemy import BigInteger, Table, bindparam, column, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from backfill.nested import BulkGroup
from handlers.children import ChildList, ChildSet, Tombstones, deleted_among, lists_to_write
from handlers.json_text import loads_json
from handlers.normalize import (
    FULFILLMENT_FROM_GRAPHQL,
    ORDER_FIELDS,
    PayloadError,
    lower_enum,
    optional_shopify_id,
    optional_text,
    parse_money,
    parse_shopify_id,
    parse_timestamp,
)
from handlers.normalize_children import (
    FULFILLMENT_FIELDS,
    LINE_ITEM_FIELDS,
    REFUND_FIELDS,
    REFUND_LINE_ITEM_FIELDS,
    SHIPMENT_STATUSES,
    TRANSACTION_FIELDS,
)
from handlers.records import RowModel, guarded_merge, merge_parameters
from handlers.resources import ORDER_CHILDREN, ORDERS, Resource
from handlers.sql_fields import Reading, SqlRead, child_reading, sql_lower_enum, sql_optional_text
from models import (
    Fulfillment,
    Order,
    OrderLineItem,
    OrderRefund,
    OrderRefundLineItem,
    OrderTransaction,
    utcnow,
)
from models.driver import driver_of, fetch_on, session_connection
from models.engine import dumps_json

log = logging.getLogger("shopify_receiver.backfill")

# The staging table: one order per row, its lists inlined. Its statistics are never
# gathered, so the planner takes every `jsonb_array_elements` call for 100 rows; that put the
# child statements past `jit_above_cost`, and compiling them took 300 ms a batch for 30 ms of
# work. A row is kept whole up to a page (`toast_tuple_target`): an order past 2 kB was
# compressed by default, and each of the fifty-odd reads of its columns decompressed it again
# (the orders' statement took 1.5x the time, their lists' 1.6x). The orders' merge sorts a
# batch's rows, `raw` included, by id: about 4 MB, which the default `work_mem` sent to a
# temporary file.
#
# Whole orders rather than the result's lines: PostgreSQL then takes `raw` as staged, where
# gathering each order's line items back into it (`jsonb_agg`, `||`) made the orders'
# reading take 55-60 ms a batch of 829 orders against 10 (bench/RESULTS.md, note on 21:20
# UTC); the line items are read out of their order, parsed once as before.
_STAGE = """
SET LOCAL jit = off;
SET LOCAL work_mem = '32MB';
CREATE TEMPORARY TABLE IF NOT EXISTS bulk_orders (doc jsonb)
WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS
"""
_ORDERS = "pg_temp.bulk_orders"

# Errors of the data, not of the database (SQLSTATE classes): cardinality (a record twice in
# one merge), data exceptions (a cast that failed, JSON that is not), integrity (a column
# left null). Anything else (a lost connection, a deadlock) is the transaction's to raise.
_DATA_ERRORS = ("21", "22", "23")


@dataclass(frozen=True)
class Extraction:
    """One table's rows read out of the staged orders: a SQL expression per column (`reading`
    over `source`, a SELECT of the staged orders), kept to the parents `gate` names, if any."""

    model: RowModel
    reading: Reading
    source: str
    # The column naming the parent, compared with the `:parents` array (null: every staged
    # order is a parent). A prepared statement's plan is generic, and PostgreSQL compares a
    # parameter array element by element: a batch's line items against all its orders took
    # a tenth of their statement.
    gate: str | None
    skip_same: bool  # as the service writes this table: children skip unchanged rows

    def statement(self) -> Any:
        table = cast(Table, self.model.__table__)
        names = tuple(self.reading.reads)
        rows = self.reading.select(self.source, checked=False)
        if self.gate is None:
            kept = text(f"SELECT * FROM ({rows}) r")
        else:
            kept = text(
                f"SELECT * FROM ({rows}) r WHERE :parents IS NULL OR {self.gate} = ANY(:parents)"
            ).bindparams(bindparam("parents", type_=ARRAY(BigInteger())))
        incoming = kept.columns(*(column(name, table.c[name].type) for name in names)).subquery(
            "incoming"
        )
        # The store, source and time are parameters (`guarded_merge`), bound per batch.
        statement, _ = guarded_merge(
            self.model,
            names,
            incoming,
            tenant_id=0,
            source="",
            synced_at=utcnow(),
            skip_same=self.skip_same,
        )
        return statement


def _orders() -> Reading:
    """`normalize_order`'s columns of a GraphQL order node; `raw` the node as staged, its line
    items as a page query has them (`BulkGrouper`)."""
    reading = Reading("doc")
    reading.parsed("shopify_id", parse_shopify_id, "doc -> 'id'")
    reading.parsed("shopify_updated_at", parse_timestamp, "doc -> 'updatedAt'")
    reading.parsed("shopify_created_at", parse_timestamp, "doc -> 'createdAt'")
    reading.parsed("name", optional_text, "doc -> 'name'")
    reading.parsed("email", optional_text, "doc -> 'email'")
    reading.parsed("customer_shopify_id", optional_shopify_id, "doc #> '{customer,id}'")
    reading.parsed("total_price", parse_money, "doc #> '{totalPriceSet,shopMoney,amount}'")
    reading.parsed("subtotal_price", parse_money, "doc #> '{subtotalPriceSet,shopMoney,amount}'")
    reading.parsed("financial_status", lower_enum, "doc -> 'displayFinancialStatus'")
    reading.parsed("cancelled_at", parse_timestamp, "doc -> 'cancelledAt'")
    reading.parsed("processed_at", parse_timestamp, "doc -> 'processedAt'")
    own = reading.let("doc -> 'currencyCode'")
    total = reading.let("doc #> '{totalPriceSet,shopMoney,currencyCode}'")
    reading.reads["currency"] = SqlRead(
        f"coalesce({sql_optional_text(own, reading.let).value},"
        f" {sql_optional_text(total, reading.let).value})",
        "true",
    )
    status = sql_optional_text(reading.let("doc -> 'displayFulfillmentStatus'"), reading.let)
    cases = " ".join(
        f"WHEN '{shopify}' THEN '{ours}'" for shopify, ours in FULFILLMENT_FROM_GRAPHQL.items()
    )
    reading.reads["fulfillment_status"] = SqlRead(f"CASE {status.value} {cases} END", "true")
    reading.fields(tuple(field for field in ORDER_FIELDS if field.column != "tags"))
    # normalize_tags: a list's tags stripped, the empty ones left out, joined by ", ".
    tags = reading.let("doc -> 'tags'")
    reading.reads["tags"] = SqlRead(
        f"CASE jsonb_typeof({tags}) WHEN 'array' THEN (SELECT coalesce(string_agg(btrim(t),"
        f" ', ' ORDER BY n), '') FROM jsonb_array_elements_text({tags}) WITH ORDINALITY AS"
        " x(t, n) WHERE btrim(t) <> '') END",
        "true",
    )
    reading.reads["raw"] = SqlRead("doc", "true")
    return reading


def _fulfillments() -> Reading:
    """`normalize_fulfillment`'s columns of a GraphQL fulfillment (`f`) in its order (`o`)."""
    reading = child_reading("f", FULFILLMENT_FIELDS, created=True)
    reading.parsed("order_shopify_id", parse_shopify_id, "order_id")
    display = sql_lower_enum(reading.let("f -> 'displayStatus'"), reading.let)
    known = ", ".join(f"'{status}'" for status in sorted(SHIPMENT_STATUSES))
    reading.reads["shipment_status"] = SqlRead(
        f"CASE WHEN {display.value} IN ({known}) THEN {display.value} END", "true"
    )
    infos = "jsonb_array_elements(CASE jsonb_typeof(f -> 'trackingInfo') WHEN 'array' THEN"
    infos += " f -> 'trackingInfo' END) WITH ORDINALITY AS x(i, n)"
    reading.reads["tracking_company"] = SqlRead(
        f"(SELECT i->>'company' FROM {infos} WHERE coalesce(i->>'company', '') <> ''"
        " ORDER BY n LIMIT 1)",
        "true",
    )
    for name, key in (("tracking_numbers", "number"), ("tracking_urls", "url")):
        reading.reads[name] = SqlRead(
            f"(SELECT coalesce(jsonb_agg(i->'{key}' ORDER BY n), '[]') FROM {infos}"
            f" WHERE coalesce(i->>'{key}', '') <> '')",
            "true",
        )
    return reading


def _line_items() -> Reading:
    reading = child_reading("i", LINE_ITEM_FIELDS, created=False)
    reading.parsed("order_shopify_id", parse_shopify_id, "order_id")
    return reading


def _transactions() -> Reading:
    reading = child_reading("t", TRANSACTION_FIELDS, created=True)
    reading.parsed("order_shopify_id", parse_shopify_id, "order_id")
    return reading


def _refunds() -> Reading:
    reading = child_reading("r", REFUND_FIELDS, created=True)
    reading.parsed("order_shopify_id", parse_shopify_id, "order_id")
    return reading


def _refund_line_items() -> Reading:
    """A refund's line items (`i`, Admin API reads, `fill_bulk_gaps`) beside their refund's id
    and their order's (`write_children`'s `extra`)."""
    reading = child_reading("i", REFUND_LINE_ITEM_FIELDS, created=False)
    reading.parsed("refund_shopify_id", parse_shopify_id, "parent_id")
    reading.parsed("order_shopify_id", parse_shopify_id, "order_id")
    return reading


def _list_items(path: str, name: str) -> str:
    """The objects of each staged order's list at `path` (`BulkGrouper` puts the line items'
    under `{lineItems,nodes}`; transactions and fulfillments come inlined), each as `name`
    beside its order's `order_id`. A null or absent list has none; `split_batch` left any
    other kind of value to Python. The order's id and list are taken in a subquery of their
    own (OFFSET 0 keeps it apart): read beside each item from the order's document, the line
    items' statement took 3.5 times as long."""
    return (
        f"SELECT order_id, {name} FROM (SELECT doc -> 'id' AS order_id, doc #> '{{{path}}}' AS"
        f" list FROM {_ORDERS} OFFSET 0) o, jsonb_array_elements(CASE jsonb_typeof(list) WHEN"
        f" 'array' THEN list END) {name}"
    )


def _nested_items(path: str, inner: str, name: str) -> str:
    """The objects of the list at `inner` in each object of each staged order's list at
    `path` (a refund's line items, `{refundLineItems,nodes}` as `fill_bulk_gaps` set them),
    each as `name` beside its order's `order_id` and its parent's `parent_id`."""
    return (
        f"SELECT order_id, p -> 'id' AS parent_id, {name} FROM (SELECT doc -> 'id' AS order_id,"
        f" doc #> '{{{path}}}' AS list FROM {_ORDERS} OFFSET 0) o, jsonb_array_elements(CASE"
        f" jsonb_typeof(list) WHEN 'array' THEN list END) p, jsonb_array_elements(CASE"
        f" jsonb_typeof(p #> '{{{inner}}}') WHEN 'array' THEN p #> '{{{inner}}}' END) {name}"
    )


def _grandchild(child: ChildSet) -> ChildSet | None:
    """The one child set of `child` that GraphQL carries (a refund's line items), if any."""
    nested = child.queried_children
    if len(nested) > 1:
        raise ValueError(f"{child.table}: more than one child set under one list")
    return nested[0] if nested else None


@dataclass(frozen=True)
class _Statements:
    orders: Any
    # ORDER_CHILDREN's, in its order, and the statement of each one's `_grandchild` (None
    # for a set without).
    children: tuple[Any, ...]
    grandchildren: tuple[Any | None, ...]


@cache
def _statements() -> _Statements:
    """Built once a process: SQLAlchemy compiles each once, asyncpg prepares each once a
    connection."""
    # Every staged order is one of the batch's.
    orders = Extraction(Order, _orders(), f"SELECT doc FROM {_ORDERS}", None, skip_same=False)
    table = cast(Table, Order.__table__)
    by_model: dict[type[Any], Extraction] = {
        OrderLineItem: Extraction(
            OrderLineItem,
            _line_items(),
            _list_items("lineItems,nodes", "i"),
            "order_shopify_id",
            skip_same=True,
        ),
        OrderTransaction: Extraction(
            OrderTransaction,
            _transactions(),
            _list_items("transactions", "t"),
            "order_shopify_id",
            skip_same=True,
        ),
        Fulfillment: Extraction(
            Fulfillment,
            _fulfillments(),
            _list_items("fulfillments", "f"),
            "order_shopify_id",
            skip_same=True,
        ),
        OrderRefund: Extraction(
            OrderRefund, _refunds(), _list_items("refunds", "r"), "order_shopify_id", skip_same=True
        ),
        # Gated by their order: a refund's line items are written with its refunds.
        OrderRefundLineItem: Extraction(
            OrderRefundLineItem,
            _refund_line_items(),
            _nested_items("refunds", "refundLineItems,nodes", "i"),
            "order_shopify_id",
            skip_same=True,
        ),
    }
    return _Statements(
        orders.statement().returning(table.c.shopify_id),
        tuple(by_model[child.model].statement() for child in ORDER_CHILDREN),
        tuple(None if g is None else by_model[g.model].statement() for g in _GRANDCHILDREN),
    )


class OrderLists(NamedTuple):
    """What the write's rules need of one order read in SQL (`_read_lists`)."""

    as_of: datetime | None  # its `updatedAt`
    # By child set (ORDER_CHILDREN's order): the ids its list names, None when absent.
    lists: tuple[ChildList | None, ...]
    # By child set: its items' lists of their `_grandchild` (a refund's line items), by item.
    nested: tuple[dict[int, ChildList], ...]


@dataclass(frozen=True)
class SqlOrders:
    """A batch's orders for PostgreSQL to read: one JSON text per order, in COPY's text format,
    and what the write's rules need of each. The parsed orders are not kept: a batch waiting
    for a writer holds their text alone, a fraction of their objects' memory."""

    data: bytes
    orders: dict[int, OrderLists]

    def lists_of(self, position: int) -> Callable[[int], ChildList | None]:
        """Each order's list of ORDER_CHILDREN[position], by the order's id."""
        return lambda shopify_id: self.orders[shopify_id].lists[position]

    def nodes(self) -> list[dict[str, Any]]:
        """The orders as the job's reader grouped them, read again out of `data`: the Python
        path's input when PostgreSQL refuses the batch."""
        return [loads_json(row.replace(b"\\\\", b"\\")) for row in self.data.split(b"\n")[:-1]]


def reads_in_sql(resource: Resource, dialect: str) -> bool:
    """Whether this resource's bulk batches go to PostgreSQL as JSON (see the module)."""
    return dialect == "postgresql" and resource is ORDERS and resource.children == ORDER_CHILDREN


_GRANDCHILDREN = tuple(_grandchild(child) for child in ORDER_CHILDREN)


def _listed(child: ChildSet, payload: Mapping[str, Any]) -> tuple[list[Any], bool] | None:
    """`ChildSet.listed` of a list in a shape the statements read (`_list_items`): a plain
    list as an array, a connection by its `nodes`. Any other shape is Python's."""
    found = child.listed(payload, graphql=True)
    value = payload.get(child.node_key)
    if isinstance(value, Mapping) and not (
        child.connection and isinstance(value.get("nodes"), list)
    ):
        raise PayloadError(f"{child.node_key}: a shape PostgreSQL does not read")
    return found


def _ids(child: ChildSet, found: tuple[list[Any], bool], as_of: datetime | None) -> ChildList:
    items, complete = found
    records = []
    for item in items:
        if not isinstance(item, Mapping):
            raise PayloadError(f"{child.node_key}: expected an object")
        records.append({"shopify_id": parse_shopify_id(item.get("id"), child.typename)})
    return ChildList(records, complete, None, as_of)


def _read_lists(node: Mapping[str, Any]) -> tuple[int, OrderLists]:
    """An order node's id, and its time and the ids of its lists (PayloadError: Python reads
    it), those of its items' own lists too (a refund's line items, which Admin API reads gave
    it, `fill_bulk_gaps`), each as of its item's time, as `write_children` reads them."""
    shopify_id = parse_shopify_id(node.get("id"), "order.id")
    as_of = parse_timestamp(node.get("updatedAt"), "order.updatedAt")
    lists: list[ChildList | None] = []
    nested: list[dict[int, ChildList]] = []
    for child, grandchild in zip(ORDER_CHILDREN, _GRANDCHILDREN, strict=True):
        below: dict[int, ChildList] = {}
        nested.append(below)
        found = _listed(child, node)
        if found is None:
            lists.append(None)
            continue
        listed = _ids(child, found, as_of)
        lists.append(listed)
        if grandchild is None:
            continue
        for item, record in zip(found[0], listed.records, strict=True):
            under = _listed(grandchild, item)
            if under is not None:
                at = parse_timestamp(item.get("updatedAt"), f"{child.typename}.updatedAt")
                below[record["shopify_id"]] = _ids(grandchild, under, at)
    return shopify_id, OrderLists(as_of, tuple(lists), tuple(nested))


def split_batch(groups: Sequence[BulkGroup]) -> tuple[list[BulkGroup], SqlOrders | None]:
    """The groups the Python path writes (records twice in the batch, lists the rules'
    reading refused), and the rest for PostgreSQL."""
    python: list[BulkGroup] = []
    read: list[tuple[BulkGroup, int, OrderLists]] = []
    for group in groups:
        try:
            read.append((group, *_read_lists(group.node)))
        except PayloadError:
            python.append(group)
    # One merge takes a record once; the Python path keeps the newest of several.
    counts = Counter(shopify_id for _, shopify_id, _ in read)
    orders: dict[int, OrderLists] = {}
    rows: list[bytes] = []
    for group, shopify_id, lists in read:
        if counts[shopify_id] > 1:
            python.append(group)
            continue
        orders[shopify_id] = lists
        # The Python path's encoder, so that both paths store one `raw`. COPY's text format:
        # JSON text holds no tab or newline, only backslashes to double.
        rows.append(dumps_json(group.node).encode().replace(b"\\", b"\\\\"))
    if not orders:
        return python, None
    rows.append(b"")
    return python, SqlOrders(b"\n".join(rows), orders)


async def write_orders(
    session: AsyncSession, tenant_id: int, batch: SqlOrders, *, source: str
) -> bool:
    """Write these orders from their lines (see the module), in the session's transaction.
    False when PostgreSQL could not read them: nothing of them is then written (the savepoint
    is rolled back) and the caller writes `batch.nodes()` by the Python path."""
    connection = await session_connection(session)
    driver = await driver_of(connection)
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")  # SQLAlchemy's transaction first
    try:
        async with driver.transaction():  # a savepoint inside the session's transaction
            await _write(session, tenant_id, batch, source=source)
    except (asyncpg.PostgresError, sa_exc.DBAPIError) as exc:
        error = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
        state = str(getattr(error, "sqlstate", "") or "")
        if not state.startswith(_DATA_ERRORS) or driver.is_closed():
            raise
        log.info(
            "bulk.sql_refused tenant=%s orders=%s sqlstate=%s: %s",
            tenant_id,
            len(batch.orders),
            state,
            error,
            extra={"tenant_id": tenant_id, "sqlstate": state},
        )
        return False
    return True


async def _write(session: AsyncSession, tenant_id: int, batch: SqlOrders, *, source: str) -> None:
    connection = await session_connection(session)
    driver = await driver_of(connection)
    statements = _statements()
    await driver.execute(_STAGE)
    # A buffer, sent as it is: a file object makes asyncpg read it through a class of its own
    # per call, garbage in a cycle that held each batch's lines until the collector's rare
    # full pass (the job's peak memory rose from 244 to 401 MiB).
    await driver.copy_to_table(
        "bulk_orders", source=memoryview(batch.data), columns=["doc"], format="text"
    )
    common = merge_parameters(tenant_id=tenant_id, source=source, synced_at=utcnow())
    ids = sorted(batch.orders)
    applied = {int(row[0]) for row in await fetch_on(connection, statements.orders, common)}
    refused = [shopify_id for shopify_id in ids if shopify_id not in applied]
    deleted: set[int] = set()
    if refused:
        deleted = await deleted_among(session, Order, tenant_id, refused)
    living = [shopify_id for shopify_id in ids if shopify_id not in deleted]

    def as_of(shopify_id: int) -> datetime | None:
        return batch.orders[shopify_id].as_of

    tombstones = Tombstones()
    for position, (child, grandchild, statement, nested) in enumerate(
        zip(
            ORDER_CHILDREN,
            _GRANDCHILDREN,
            statements.children,
            statements.grandchildren,
            strict=True,
        )
    ):
        # The Python path's rule for which orders' lists a write takes.
        lists = lists_to_write(child, living, applied, batch.lists_of(position), as_of)
        if lists:
            every = len(lists) == len(ids)
            given = {**common, "parents": None if every else list(lists)}
            await fetch_on(connection, statement, given)
            if nested is not None:
                await fetch_on(connection, nested, given)
        whole = {shopify_id: listed for shopify_id, listed in lists.items() if listed.complete}
        if whole:
            tombstones.add(child, tenant_id, whole, source=source)
        if grandchild is not None:
            # As `write_children` tombstones them: each whole list of every item it wrote,
            # whether or not its parent's list was whole.
            below = {
                item: listed
                for shopify_id in lists
                for item, listed in batch.orders[shopify_id].nested[position].items()
                if listed.complete
            }
            if below:
                tombstones.add(grandchild, tenant_id, below, source=source)
    await tombstones.write(session)
