"""``python -m bench.extraction``: what a bulk backfill's orders would cost if PostgreSQL read the
columns out of Shopify's result lines itself. A measured prototype for issue #16's goal 4, not
the service's path.

The bulk ingest is bound by the job's one Python thread (bench/RESULTS.md, 2026-12-03): it
parses, normalises and encodes every row, and PostgreSQL merges what it sends. This bench takes
the orders' bulk result from the simulator once, cuts it into the job's batches, and writes the
same batches two ways into one fresh database, each as a store of its own, both as the job
streams (one batch prepared here while BULK_WRITERS others are written, each in its own
transaction and connection):

1. **service**: the job's own code: lines parsed and grouped (`BulkGrouper`), read
   (`read_with_children`) and written (`write_read_records`: COPY into staging tables, then the
   guarded merges);
2. **prototype**: the lines COPYed as they came into one `jsonb` staging column, then one
   INSERT ... SELECT per table that reads the columns with SQL, for orders, their line items,
   transactions and fulfillments, ending in the service's own guarded merge. Line items and
   transactions are read by `handlers.sql_fields` (each parse function's SQL twin, as strict
   as Python: a row it cannot vouch for is left out here, where the service would send its
   batch to Python, and shows as a difference); orders and fulfillments by SQL written here,
   which trusts the shapes (their normalisers are not all declarations yet).

Refunds are left out of both (their line items take Admin API reads), and so is the download:
the rates are the writing's alone, beside PostgreSQL's COPY ceiling for the same tables
(`bench.backfill.median_copy_ceiling`). For each way it reports the wall time, the CPU of this
process and of the PostgreSQL backends, and it checks that both wrote the same rows: every
column but the surrogate id, the store and the write time, `raw` included.

Prints one Markdown table and appends it, with the machine and the date, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
from sqlalchemy import Table, column, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.nested import BulkGroup, BulkGrouper
from backfill.queries import BULK_STATUS, bulk_run_document
from backfill.runner import BULK_WRITERS, bulk_batch_full
from bench.backfill import (
    API_VERSION,
    DEFAULT_ADMIN_URL,
    Store,
    append_results,
    create_database,
    drop_database,
    log,
    machine_info,
    median_copy_ceiling,
    postgres_backend_cpu,
    simulator,
)
from bench.children import stop_children
from bench.database import APP_ROLE, as_role
from handlers.children import ReadRecords, read_with_children, write_read_records
from handlers.normalize import parse_shopify_id
from handlers.normalize_children import LINE_ITEM_FIELDS, TRANSACTION_FIELDS
from handlers.records import RowModel, guarded_merge
from handlers.resources import ORDERS
from handlers.sql_fields import Reading, child_reading
from models import (
    Fulfillment,
    Order,
    OrderLineItem,
    OrderRefund,
    OrderTransaction,
    Tenant,
    create_engine,
    create_session_factory,
    utcnow,
)
from models.driver import driver_of, fetch_on, session_connection
from models.tenancy import tenant_transaction
from receiver import runtime

# As the service's job, less the refunds (their line items come from Admin API reads).
CHILDREN = tuple(child for child in ORDERS.children if child.model is not OrderRefund)
TABLES = ("orders", "order_line_items", "order_transactions", "fulfillments")
# Not compared: the surrogate key, the store, and when and by whom the row was written.
UNCOMPARED = frozenset({"id", "tenant_id", "synced_at", "source"})


def _gid(value: str) -> str:
    """A gid's number, trusting its shape (`sql_fields.sql_parse_shopify_id` does not)."""
    return f"split_part({value}, '/', 5)::bigint"


def _lower(value: str) -> str:
    return f"lower(nullif({value}, ''))"


# The staging table: one line of the bulk result per row, as it came. Its statistics are
# never gathered, so the planner takes every `jsonb_array_elements` call for 100 rows; that
# put the child statements past `jit_above_cost`, and compiling them took 300 ms a batch for
# 30 ms of work.
STAGE = """
SET LOCAL jit = off;
CREATE TEMPORARY TABLE IF NOT EXISTS bulk_lines (line bigint, doc jsonb) ON COMMIT DELETE ROWS
"""


@dataclass(frozen=True)
class Extraction:
    """One table's rows read out of the staging lines: a SQL expression per column, over
    `source` (a SELECT of the staging table as `s`)."""

    model: RowModel
    columns: dict[str, str]
    source: str
    skip_same: bool  # as the service writes this table: children skip unchanged rows

    def merge(self, tenant_id: int, synced_at: datetime) -> tuple[Any, dict[str, Any]]:
        """The service's own guarded merge (`guarded_merge`) from these columns."""
        table = cast(Table, self.model.__table__)
        names = tuple(self.columns)
        selected = ", ".join(f"{sql} AS {name}" for name, sql in self.columns.items())
        incoming = (
            text(f"SELECT {selected} FROM ({self.source}) s")
            .columns(*(column(name, table.c[name].type) for name in names))
            .subquery("incoming")
        )
        return guarded_merge(
            self.model,
            names,
            incoming,
            tenant_id=tenant_id,
            source="backfill",
            synced_at=synced_at,
            skip_same=self.skip_same,
        )


def _money(path: str) -> str:
    return f"(doc #>> '{{{path}}}')::numeric"


def _strict(reading: Reading, parent: str, source: str) -> tuple[dict[str, str], str]:
    """A child table's columns as `handlers.sql_fields` reads them (the parent's id from the
    `jsonb` expression `parent`), and its rows: those every twin reads as Python does (the
    service would send a batch with any other to Python; here such a row goes missing, which
    the comparison of both ways' rows reports)."""
    reading.parsed("order_shopify_id", parse_shopify_id, parent)
    columns = {name: name for name in reading.reads}  # computed by name in the SELECT
    return columns, f"SELECT * FROM ({reading.select(source)}) r WHERE ok"


LINE_ITEMS = Extraction(
    OrderLineItem,
    *_strict(
        child_reading("doc", LINE_ITEM_FIELDS, created=False),
        "doc -> '__parentId'",
        "SELECT doc FROM pg_temp.bulk_lines WHERE doc ? '__parentId'",
    ),
    skip_same=True,
)

# The order's raw holds its line items as a page query would (`BulkGrouper`).
ORDERS_SQL = Extraction(
    Order,
    {
        "shopify_id": _gid("doc->>'id'"),
        "shopify_created_at": "(doc->>'createdAt')::timestamptz",
        "shopify_updated_at": "(doc->>'updatedAt')::timestamptz",
        "name": "nullif(doc->>'name', '')",
        "email": "nullif(doc->>'email', '')",
        "customer_shopify_id": _gid("doc #>> '{customer,id}'"),
        "currency": "coalesce(nullif(doc->>'currencyCode', ''),"
        " nullif(doc #>> '{totalPriceSet,shopMoney,currencyCode}', ''))",
        "total_price": _money("totalPriceSet,shopMoney,amount"),
        "subtotal_price": _money("subtotalPriceSet,shopMoney,amount"),
        "financial_status": _lower("doc->>'displayFinancialStatus'"),
        "fulfillment_status": "CASE doc->>'displayFulfillmentStatus' WHEN 'FULFILLED' THEN"
        " 'fulfilled' WHEN 'PARTIALLY_FULFILLED' THEN 'partial' WHEN 'RESTOCKED' THEN"
        " 'restocked' END",
        "cancelled_at": "(doc->>'cancelledAt')::timestamptz",
        "processed_at": "(doc->>'processedAt')::timestamptz",
        "presentment_currency": "nullif(doc->>'presentmentCurrencyCode', '')",
        "total_price_presentment": _money("totalPriceSet,presentmentMoney,amount"),
        "current_total_price": _money("currentTotalPriceSet,shopMoney,amount"),
        "total_tax": _money("totalTaxSet,shopMoney,amount"),
        "total_discounts": _money("totalDiscountsSet,shopMoney,amount"),
        "tags": "(SELECT coalesce(string_agg(btrim(t), ', ' ORDER BY n), '')"
        " FROM jsonb_array_elements_text(doc->'tags') WITH ORDINALITY AS x(t, n)"
        " WHERE btrim(t) <> '')",
        "note": "nullif(doc->>'note', '')",
        "cancel_reason": _lower("doc->>'cancelReason'"),
        "closed_at": "(doc->>'closedAt')::timestamptz",
        "source_name": "nullif(doc->>'sourceName', '')",
        "test": "(doc->'test')::boolean",
        "shipping_country_code": "nullif(doc #>> '{shippingAddress,countryCodeV2}', '')",
        "shipping_province_code": "nullif(doc #>> '{shippingAddress,provinceCode}', '')",
        "raw": "doc || jsonb_build_object('lineItems', jsonb_build_object('nodes', items,"
        " 'pageInfo', jsonb_build_object('hasNextPage', false)))",
    },
    # Each order's line items gathered once (a subquery per order read the batch per order).
    "SELECT p.line, p.doc, coalesce(c.items, '[]') AS items FROM pg_temp.bulk_lines p"
    " LEFT JOIN (SELECT doc->>'__parentId' AS parent,"
    " jsonb_agg(doc - '__parentId' ORDER BY line) AS items FROM pg_temp.bulk_lines"
    " WHERE doc ? '__parentId' GROUP BY 1) c ON c.parent = p.doc->>'id'"
    " WHERE NOT p.doc ? '__parentId'",
    skip_same=False,
)

TRANSACTIONS = Extraction(
    OrderTransaction,
    *_strict(
        child_reading("t", TRANSACTION_FIELDS, created=True),
        "o -> 'id'",
        "SELECT doc AS o, t FROM pg_temp.bulk_lines, jsonb_array_elements(doc->'transactions') t"
        " WHERE NOT doc ? '__parentId'",
    ),
    skip_same=True,
)

SHIPMENT_STATUSES = (
    "label_printed label_purchased attempted_delivery ready_for_pickup picked_up confirmed"
    " in_transit out_for_delivery delivered failure"
)
FULFILLMENTS = Extraction(
    Fulfillment,
    {
        "shopify_id": _gid("f->>'id'"),
        "order_shopify_id": _gid("o->>'id'"),
        "shopify_created_at": "(f->>'createdAt')::timestamptz",
        "shopify_updated_at": "(f->>'updatedAt')::timestamptz",
        "name": "nullif(f->>'name', '')",
        "status": _lower("f->>'status'"),
        "location_shopify_id": _gid("f #>> '{location,id}'"),
        "shipment_status": f"CASE WHEN lower(f->>'displayStatus') = ANY(string_to_array("
        f"'{SHIPMENT_STATUSES}', ' ')) THEN lower(f->>'displayStatus') END",
        "tracking_company": "(SELECT i->>'company' FROM jsonb_array_elements(f->'trackingInfo')"
        " WITH ORDINALITY AS x(i, n) WHERE coalesce(i->>'company', '') <> '' ORDER BY n LIMIT 1)",
        "tracking_numbers": "(SELECT coalesce(jsonb_agg(i->'number' ORDER BY n), '[]')"
        " FROM jsonb_array_elements(f->'trackingInfo') WITH ORDINALITY AS x(i, n)"
        " WHERE coalesce(i->>'number', '') <> '')",
        "tracking_urls": "(SELECT coalesce(jsonb_agg(i->'url' ORDER BY n), '[]')"
        " FROM jsonb_array_elements(f->'trackingInfo') WITH ORDINALITY AS x(i, n)"
        " WHERE coalesce(i->>'url', '') <> '')",
        "raw": "f",
    },
    "SELECT line, doc AS o, f FROM pg_temp.bulk_lines,"
    " jsonb_array_elements(doc->'fulfillments') f WHERE NOT doc ? '__parentId'",
    skip_same=True,
)

STATEMENTS = (ORDERS_SQL, LINE_ITEMS, TRANSACTIONS, FULFILLMENTS)  # in TABLES' order
# The prototype's time per step, summed over batches (each one statement on one backend).
MERGES: dict[tuple[str, int], tuple[Any, dict[str, Any]]] = {}
STEP_SECONDS: dict[str, float] = dict.fromkeys(("staging COPY", *TABLES), 0.0)


@dataclass
class Batch:
    lines: list[bytes]  # as they came, the groups' parents and children
    start: int  # line number of the first


@dataclass
class Way:
    name: str
    python_cpu: float
    postgres_cpu: float
    wall: float
    rows: int


def download(info: dict[str, Any]) -> list[bytes]:
    """The orders' bulk result, run and fetched as the job does (grouped objects)."""
    headers = {"X-Shopify-Access-Token": info["access_token"]}
    with httpx.Client(timeout=600) as client:
        started = client.post(
            info["graphql_url"],
            headers=headers,
            json={
                "query": bulk_run_document(API_VERSION, grouped=True),
                "variables": {"query": ORDERS.bulk_query()},
            },
        ).json()
        operation = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        while True:
            node = client.post(
                info["graphql_url"],
                headers=headers,
                json={"query": BULK_STATUS, "variables": {"id": operation}},
            ).json()["data"]["node"]
            if node["status"] == "COMPLETED":
                break
            time.sleep(0.5)
        body = client.get(node["url"]).content
    return [line for line in body.split(b"\n") if line.strip()]


def batches(lines: list[bytes]) -> list[Batch]:
    """Cut where `backfill.runner` cuts: after whole groups, by `bulk_batch_full`."""
    grouper = BulkGrouper(CHILDREN)
    cut: list[Batch] = []
    groups = 0
    first = 1
    for number, line in enumerate(lines, start=1):
        finished = sum(1 for _ in grouper.feed(orjson.loads(line), number))
        groups += finished
        # A group finished when the next parent began: the batch ends before this line.
        if finished and bulk_batch_full(groups, number - first):
            cut.append(Batch(lines[first - 1 : number - 1], first))
            first, groups = number, 0
    cut.append(Batch(lines[first - 1 :], first))
    return cut


async def _backend_cpu(sessions: async_sessionmaker[AsyncSession]) -> float:
    return sum((await postgres_backend_cpu(sessions)).values())


def service_batch(batch: Batch) -> ReadRecords:
    """The job's reading and finishing stages for one batch (no Admin API reads here)."""
    grouper = BulkGrouper(CHILDREN)
    groups: list[BulkGroup] = []
    for offset, line in enumerate(batch.lines):
        groups.extend(grouper.feed(orjson.loads(line), batch.start + offset))
    groups.extend(grouper.finish())
    nodes = [group.node for group in groups]
    return read_with_children(CHILDREN, ORDERS.normalize_node, nodes, graphql=True)


async def service_write(session: AsyncSession, tenant: int, read: ReadRecords) -> None:
    await write_read_records(session, ORDERS.model, CHILDREN, tenant, read, source="backfill")


def prototype_batch(batch: Batch) -> bytes:
    """COPY's text format: a JSON line holds no tab or newline, only backslashes to escape."""
    return b"".join(
        b"%d\t%s\n" % (batch.start + offset, line.replace(b"\\", b"\\\\"))
        for offset, line in enumerate(batch.lines)
    )


async def prototype_write(session: AsyncSession, tenant: int, data: bytes) -> None:
    driver = await driver_of(await session_connection(session))
    started = time.perf_counter()
    await driver.execute(STAGE)
    await driver.copy_to_table(
        "bulk_lines", source=io.BytesIO(data), columns=["line", "doc"], format="text"
    )
    STEP_SECONDS["staging COPY"] += time.perf_counter() - started
    connection = await session_connection(session)
    for table, extraction in zip(TABLES, STATEMENTS, strict=True):
        # Built once a run, as the service builds its merges once (its write time is the
        # first batch's: a stamp, not a cost).
        merge = MERGES.get((table, tenant))
        if merge is None:
            merge = MERGES[(table, tenant)] = extraction.merge(tenant, utcnow())
        statement, parameters = merge
        started = time.perf_counter()
        await fetch_on(connection, statement, parameters)
        STEP_SECONDS[table] += time.perf_counter() - started


@dataclass(frozen=True)
class WayCode:
    prepare: Callable[[Batch], Any]  # this process's work for a batch
    write: Callable[[AsyncSession, int, Any], Awaitable[None]]  # in the batch's transaction


async def pipelined(
    sessions: async_sessionmaker[AsyncSession], tenant: int, cut: list[Batch], way: WayCode
) -> None:
    """As the job streams a bulk result: one batch prepared while BULK_WRITERS others are
    written, each in its own transaction and connection; a write's error is raised as soon
    as the next batch waits for room."""

    async def write(prepared: Any) -> None:
        async with tenant_transaction(sessions, tenant) as session:
            await way.write(session, tenant, prepared)

    writing: set[asyncio.Task[None]] = set()
    try:
        for batch in cut:
            prepared = way.prepare(batch)
            while len(writing) >= BULK_WRITERS:
                done, writing = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            writing.add(asyncio.create_task(write(prepared)))
        await asyncio.gather(*writing)
    finally:
        for task in writing:
            task.cancel()
        await asyncio.gather(*writing, return_exceptions=True)


WAYS = {
    "service": WayCode(service_batch, service_write),
    "prototype": WayCode(prototype_batch, prototype_write),
}


async def _open_connections(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    """The writers' connections, opened before the CPU readings (pooled, they stay)."""
    held = [sessions() for _ in range(count)]
    for session in held:
        await session.execute(text("SELECT 1"))
    for session in held:
        await session.close()


async def measure(database_url: str, cut: list[Batch]) -> tuple[list[Way], dict[str, int], float]:
    admin = create_engine(database_url)
    app = create_engine(as_role(database_url, APP_ROLE))
    admin_sessions, sessions = create_session_factory(admin), create_session_factory(app)
    stores = [Tenant(shop_domain=f"{name}.myshopify.com", status="active") for name in WAYS]
    async with admin_sessions() as session, session.begin():
        session.add_all(stores)
        await session.flush()
        tenants = [store.id for store in stores]
    ways: list[Way] = []
    try:
        for (name, way), tenant in zip(WAYS.items(), tenants, strict=True):
            await _open_connections(sessions, BULK_WRITERS)
            pg_before, cpu_before, started = (
                await _backend_cpu(admin_sessions),
                time.process_time(),
                time.perf_counter(),
            )
            await pipelined(sessions, tenant, cut, way)
            wall = time.perf_counter() - started
            cpu = time.process_time() - cpu_before
            pg = await _backend_cpu(admin_sessions) - pg_before
            async with admin_sessions() as session:
                written = 0
                for table in TABLES:
                    written += int(
                        (
                            await session.execute(
                                text(f"SELECT count(*) FROM {table} WHERE tenant_id = :t"),
                                {"t": tenant},
                            )
                        ).scalar_one()
                    )
            ways.append(Way(name, cpu, pg, wall, written))
            log(f"{name}: {written:,} rows in {wall:.1f} s")
        differences = await compare(admin_sessions, *tenants)
    finally:
        await admin.dispose()
        await app.dispose()
    # Both stores' rows: the ceiling is a rate, and reading them all costs it nothing.
    ceiling = await median_copy_ceiling(database_url, list(TABLES))
    return ways, differences, float(ceiling["rows"]) / float(ceiling["seconds"])


async def compare(
    sessions: async_sessionmaker[AsyncSession], service_tenant: int, prototype_tenant: int
) -> dict[str, int]:
    """Per table, the rows one way wrote and the other did not write alike (both directions)."""
    differences: dict[str, int] = {}
    async with sessions() as session:
        for table in TABLES:
            names = await session.scalars(
                text(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = :t ORDER BY ordinal_position"
                ),
                {"t": table},
            )
            columns = ", ".join(n for n in names if n not in UNCOMPARED)
            one = f"SELECT {columns} FROM {table} WHERE tenant_id = :a"
            other = f"SELECT {columns} FROM {table} WHERE tenant_id = :b"
            count = await session.execute(
                text(
                    f"SELECT (SELECT count(*) FROM ({one} EXCEPT ALL {other}) x)"
                    f" + (SELECT count(*) FROM ({other} EXCEPT ALL {one}) y)"
                ),
                {"a": service_tenant, "b": prototype_tenant},
            )
            differences[table] = int(count.scalar_one())
    return differences


def report(
    args: argparse.Namespace, ways: list[Way], differences: dict[str, int], ceiling: float
) -> str:
    service_way, prototype_way = ways
    lines = [
        f"## Extraction prototype ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)",
        "",
        f"`python -m bench.extraction --orders {args.orders}`: the orders' bulk result"
        " (orders, line items, transactions, fulfillments) written by the service's code and by"
        " PostgreSQL reading the columns from the raw lines (a prototype, not the service).",
        "",
        *machine_info(args.postgres_url),
        "",
        "| way | rows | wall | rows/s | / COPY ceiling | this process's CPU"
        " | PostgreSQL backends' CPU | both |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for way in ways:
        rate = way.rows / way.wall
        lines.append(
            f"| {way.name} | {way.rows:,} | {way.wall:.1f} s | {rate:,.0f} | {rate / ceiling:.2f}x"
            f" | {way.python_cpu:.1f} s | {way.postgres_cpu:.1f} s"
            f" | {way.python_cpu + way.postgres_cpu:.1f} s |"
        )
    lines.append(f"| COPY ceiling | | | {ceiling:,.0f} | 1.00x | | | |")
    both = (prototype_way.python_cpu + prototype_way.postgres_cpu) / (
        service_way.python_cpu + service_way.postgres_cpu
    )
    lines += [
        "",
        f"Prototype / service: this process's CPU"
        f" {prototype_way.python_cpu / service_way.python_cpu:.2f}x, PostgreSQL's"
        f" {prototype_way.postgres_cpu / service_way.postgres_cpu:.2f}x, both together"
        f" {both:.2f}x. Rows that differ between the two"
        " (every column but id, store and write time, raw included): "
        + ", ".join(f"{table} {count}" for table, count in differences.items())
        + ". The prototype's steps: "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in STEP_SECONDS.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--products", type=int, default=2_500)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL, help="an admin database URL")
    parser.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    store = Store(args.customers, args.products, args.orders)
    database_url = None
    with tempfile.TemporaryDirectory(prefix="bench-extraction-") as workdir:
        try:
            log(f"simulator: {store.describe()}")
            with simulator(store, Path(workdir), args.seed) as sim:
                lines = download(sim.info)
            log(f"{len(lines):,} lines; creating and migrating a database ...")
            cut = batches(lines)
            database_url = create_database(args.postgres_url)
            ways, differences, ceiling = runtime.run(measure(database_url, cut))
        finally:
            stop_children()
            if database_url is not None:
                drop_database(args.postgres_url, database_url)
    section = report(args, ways, differences, ceiling)
    print(section)
    if not args.no_append:
        append_results(section)
    return 0 if not any(differences.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
