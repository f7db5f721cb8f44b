"""``python -m bench.extraction``: a bulk backfill's orders written by the job's two paths, the
Python normalisers and PostgreSQL reading the grouped orders' JSON (backfill.bulk_sql),
without the download, the simulator or the refunds' Admin API reads in the way.

The bench takes the orders' bulk result from the simulator once, cuts it into the job's
batches, and writes the same batches two ways into one fresh database, each as a store of its
own, both as the job streams (one batch prepared here while BULK_WRITERS others are written,
each in its own transaction and connection):

1. **python**: every order parsed and grouped (`BulkGrouper`), read (`read_with_children`)
   and written (`write_read_records`: COPY into staging tables, then the guarded merges), as
   on SQLite;
2. **postgresql**: as the job runs on PostgreSQL: the orders COPYed as grouped JSON (one
   order per row) into one `jsonb` staging column and read by PostgreSQL (`split_batch`,
   `write_orders`).

Refunds are left out of both: each order line's `refunds` is taken out before either way
reads it (their line items take Admin API reads, which need the simulator's Admin API). The
rates are the writing's alone, beside PostgreSQL's COPY ceiling for the same
tables (`bench.backfill.median_copy_ceiling`). For each way it reports the wall time, the CPU of
this process and of the PostgreSQL backends, and it checks that both wrote the same rows:
every column but the surrogate id, the store and the write time, `raw` included.

Prints one Markdown table and appends it, with the machine and the date, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backfill import bulk_sql
from backfill.bulk_sql import SqlOrders, split_batch, write_orders
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
from handlers.resources import ORDERS
from models import (
    OrderRefund,
    Tenant,
    create_engine,
    create_session_factory,
)
from models.driver import fetch_on
from models.tenancy import tenant_transaction
from receiver import runtime

# As the service's job, less the refunds (their line items come from Admin API reads).
CHILDREN = tuple(child for child in ORDERS.children if child.model is not OrderRefund)
TABLES = ("orders", "order_line_items", "order_transactions", "fulfillments")
# Not compared: the surrogate key, the store, and when and by whom the row was written.
UNCOMPARED = frozenset({"id", "tenant_id", "synced_at", "source"})


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


def _grouped(batch: Batch) -> list[BulkGroup]:
    """The batch's lines parsed and grouped as the job's reader does, less the refunds."""
    grouper = BulkGrouper(CHILDREN)
    groups: list[BulkGroup] = []
    for offset, line in enumerate(batch.lines):
        parsed = orjson.loads(line)
        parsed.pop("refunds", None)
        groups.extend(grouper.feed(parsed, batch.start + offset))
    groups.extend(grouper.finish())
    return groups


def service_batch(batch: Batch) -> ReadRecords:
    """The job's reading and finishing stages for one batch (no Admin API reads here)."""
    nodes = [group.node for group in _grouped(batch)]
    return read_with_children(CHILDREN, ORDERS.normalize_node, nodes, graphql=True)


async def service_write(session: AsyncSession, tenant: int, read: ReadRecords) -> None:
    await write_read_records(session, ORDERS.model, CHILDREN, tenant, read, source="backfill")


@dataclass(frozen=True)
class SplitBatch:
    python: ReadRecords
    sql: SqlOrders | None


def postgresql_batch(batch: Batch) -> SplitBatch:
    """The job's stages for one batch as it runs on PostgreSQL: the orders left to
    PostgreSQL (backfill.bulk_sql), but those it does not read (none in the simulator's)."""
    python, sql = split_batch(_grouped(batch))
    nodes = [group.node for group in python]
    return SplitBatch(read_with_children(CHILDREN, ORDERS.normalize_node, nodes, graphql=True), sql)


# The PostgreSQL path's statements, their time summed over batches (each on one backend; the
# two writers' overlap), and the rest of its writes (the staging COPY, the tombstones).
STEP_SECONDS: dict[str, float] = {}
WRITE_SECONDS: list[float] = []  # each batch's `write_orders`


async def _timed_statement(
    connection: AsyncConnection, statement: Any, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    started = time.perf_counter()
    try:
        return await fetch_on(connection, statement, parameters)
    finally:
        step = str(statement.table.name)
        STEP_SECONDS[step] = STEP_SECONDS.get(step, 0.0) + time.perf_counter() - started


async def postgresql_write(session: AsyncSession, tenant: int, split: SplitBatch) -> None:
    await service_write(session, tenant, split.python)
    if split.sql is not None:
        started = time.perf_counter()
        read = await write_orders(session, tenant, split.sql, source="backfill")
        assert read, "PostgreSQL could not read a batch of the simulator's orders"
        WRITE_SECONDS.append(time.perf_counter() - started)


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
    "python": WayCode(service_batch, service_write),
    "postgresql": WayCode(postgresql_batch, postgresql_write),
}


async def _open_connections(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    """The writers' connections, opened before the CPU readings (pooled, they stay)."""
    held = [sessions() for _ in range(count)]
    for session in held:
        await session.execute(text("SELECT 1"))
    for session in held:
        await session.close()


async def measure(database_url: str, cut: list[Batch]) -> tuple[list[Way], dict[str, int], float]:
    setattr(bulk_sql, "fetch_on", _timed_statement)  # noqa: B010 (a bench process of its own)
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
    sessions: async_sessionmaker[AsyncSession], one_tenant: int, other_tenant: int
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
                {"a": one_tenant, "b": other_tenant},
            )
            differences[table] = int(count.scalar_one())
    return differences


def report(
    args: argparse.Namespace, ways: list[Way], differences: dict[str, int], ceiling: float
) -> str:
    python_way, postgresql_way = ways
    lines = [
        f"## Bulk orders, two paths ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)",
        "",
        f"`python -m bench.extraction --orders {args.orders}`: the orders' bulk result"
        " (orders, line items, transactions, fulfillments) written by the Python normalisers"
        " and by the job's PostgreSQL path, which reads the columns out of the grouped orders'"
        " JSON (refunds left out of both).",
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
    both = (postgresql_way.python_cpu + postgresql_way.postgres_cpu) / (
        python_way.python_cpu + python_way.postgres_cpu
    )
    lines += [
        "",
        f"PostgreSQL's path / Python's: wall {postgresql_way.wall / python_way.wall:.2f}x,"
        f" this process's CPU {postgresql_way.python_cpu / python_way.python_cpu:.2f}x,"
        f" PostgreSQL's {postgresql_way.postgres_cpu / python_way.postgres_cpu:.2f}x, both"
        f" together {both:.2f}x. Rows that differ between the two"
        " (every column but id, store and write time, raw included): "
        + ", ".join(f"{table} {count}" for table, count in differences.items())
        + ". PostgreSQL's path, its statements' time summed over batches (two at once): "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in STEP_SECONDS.items())
        + f", the rest (the staging COPY, the tombstones)"
        f" {sum(WRITE_SECONDS) - sum(STEP_SECONDS.values()):.1f} s.",
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
