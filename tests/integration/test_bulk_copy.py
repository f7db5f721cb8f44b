"""Large batches reach PostgreSQL by COPY into a staging table and one guarded merge
(`handlers.records.uses_copy`): the rows they leave are exactly those of the executemany
upsert, with every guarantee it gives (order-safe, absent is not null, tombstones, money,
row-level security), written as the service's own role."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill import runner
from backfill.bulk_sql import split_batch, write_orders
from backfill.nested import BulkGrouper
from backfill.runner import BackfillEnvironment, create_sync_job, run_sync_job
from handlers import records
from handlers.children import write_with_children
from handlers.normalize import parse_money
from handlers.records import upsert_applied, upsert_records
from handlers.resources import RESOURCES
from models import (
    Base,
    Customer,
    InventoryLevel,
    Order,
    OrderTransaction,
    SyncJob,
    Tenant,
)
from models.tenancy import tenant_transaction
from tests.conftest import Backend
from tests.factories import OTHER_SHOP, SHOP, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.bulk import CHUNK_BYTES
from tests.store_children import assert_children_equal_store, store_nodes

ORDERS = RESOURCES["orders"]
FULFILLMENTS = next(child for child in ORDERS.children if child.node_key == "fulfillments")
# Large enough that every batch of parents and most of children take the COPY path.
STORE = {
    "customers": 120,
    "products": 60,
    "orders": 240,
    "many_line_items_every": 60,
    "many_line_items": 120,
    "many_variants_every": 20,
    "many_variants": 80,
}
T0 = datetime(2025, 1, 1, tzinfo=UTC)
# Written every time, so never compared between two runs.
CHANGING = frozenset({"id", "synced_at"})


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tables written through COPY, in order (the path is observed, not replaced)."""
    seen: list[str] = []
    original = records._copy_merge

    async def observed(connection: Any, model: Any, *args: Any) -> Any:
        seen.append(str(model.__tablename__))
        return await original(connection, model, *args)

    monkeypatch.setattr(records, "_copy_merge", observed)
    return seen


@pytest.fixture
def python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bulk record normalised in Python: what PostgreSQL reads out of the result's
    lines (backfill.bulk_sql) takes the Python path, as on SQLite."""
    monkeypatch.setattr(runner, "reads_in_sql", lambda resource, dialect: False)


@pytest.fixture
def read_in_sql(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each batch PostgreSQL was given to read out of its JSON: (orders, whether it read
    them) (the path is observed, not replaced)."""
    seen: list[tuple[int, bool]] = []
    original = runner.write_orders

    async def observed(session: AsyncSession, tenant_id: int, batch: Any, **options: Any) -> bool:
        done = await original(session, tenant_id, batch, **options)
        seen.append((len(batch.orders), done))
        return done

    monkeypatch.setattr(runner, "write_orders", observed)
    return seen


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP, seed=7, clock=clock, **STORE)
    with FakeShopServer(store) as server:
        yield store, clock, server


async def _snapshot(pg: Backend) -> dict[str, list[dict[str, Any]]]:
    """Every store table's rows by key, all columns but the surrogate id and write time."""
    tables = {RESOURCES[name].table for name in RESOURCES} | {
        str(child.model.__tablename__)
        for resource in RESOURCES.values()
        for child in resource.child_sets
    }
    snapshot: dict[str, list[dict[str, Any]]] = {}
    async with pg.sessions() as session:
        for name in sorted(tables):
            table = Base.metadata.tables[name]
            rows = (await session.execute(select(table))).mappings().all()
            snapshot[name] = sorted(
                ({key: value for key, value in row.items() if key not in CHANGING} for row in rows),
                key=lambda row: repr(sorted(row.items())),
            )
    return snapshot


async def _bulk_job(
    pg: Backend,
    sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    http: httpx.AsyncClient,
    resources: list[str] | None = None,
) -> tuple[BackfillEnvironment, int, int]:
    """A store for the simulator's shop, a backfill environment writing through `sessions`,
    and a queued `bulk` job: (environment, tenant id, job id)."""
    store, clock, server = simulator
    tenant_id = await create_tenant(pg.sessions, SHOP, access_token=store.access_token)
    env = simulator_environment(
        sessions, http, server.admin_base_url_template, store, clock, bulk_poll_interval=0.01
    )
    async with pg.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        job = await create_sync_job(session, tenant, "bulk", resources)
    return env, tenant_id, job.id


async def _bulk(
    pg: Backend,
    sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
) -> int:
    await pg.truncate()
    async with httpx.AsyncClient(timeout=30) as http:
        env, tenant_id, job_id = await _bulk_job(pg, sessions, simulator, http)
        await run_sync_job(env, job_id)
    async with pg.sessions() as session:
        done = await session.get_one(SyncJob, job_id)
    assert (done.status, done.error) == ("succeeded", None)
    return tenant_id


async def test_copy_writes_exactly_what_the_executemany_wrote(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    copies: list[str],
    monkeypatch: pytest.MonkeyPatch,
    python_path: None,
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(records, "COPY_MIN_ROWS", 10**9)
        await _bulk(pg, app_sessions, simulator)
    assert copies == []
    before = await _snapshot(pg)

    tenant_id = await _bulk(pg, app_sessions, simulator)
    # Parents and children alike went through COPY.
    assert {"customers", "products", "orders", "order_line_items", "product_variants"} <= set(
        copies
    )
    after = await _snapshot(pg)
    assert sum(len(rows) for rows in after.values()) > 2000
    for table in before:
        assert after[table] == before[table], table
    async with pg.sessions() as session:
        await assert_children_equal_store(session, simulator[0], tenant_id)


async def test_a_file_served_whole_gives_the_rows_the_streamed_file_gave(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
) -> None:
    """As Shopify serves it: a file written while the operation ran, read back in fixed-size
    chunks that end mid-line (the benchmarks' simulator mode)."""
    await _bulk(pg, app_sessions, simulator)
    streamed = await _snapshot(pg)
    clock = ManualClock()
    store = FakeStore(SHOP, seed=7, clock=clock, bulk_prepare_files=True, **STORE)
    with FakeShopServer(store) as server:
        tenant_id = await _bulk(pg, app_sessions, (store, clock, server))
        served = [operation.file for operation in store.bulk.all()]
    sizes = [file.stat().st_size for file in served if file is not None]
    assert len(sizes) == len(served) > 0
    assert max(sizes) > CHUNK_BYTES  # read in several chunks, most ending mid-line
    assert await _snapshot(pg) == streamed
    async with pg.sessions() as session:
        await assert_children_equal_store(session, store, tenant_id)


def _customer(shopify_id: int, updated: datetime, **columns: Any) -> dict[str, Any]:
    return {
        "shopify_id": shopify_id,
        "shopify_created_at": T0,
        "shopify_updated_at": updated,
        "raw": {
            "id": f"gid://shopify/Customer/{shopify_id}",
            **{k: str(v) for k, v in columns.items()},
        },
        **columns,
    }


async def _customers(pg: Backend, tenant_id: int) -> dict[int, Customer]:
    async with pg.sessions() as session:
        return {
            row.shopify_id: row
            for row in await session.scalars(
                select(Customer).where(Customer.tenant_id == tenant_id)
            )
        }


async def test_an_older_record_in_a_batch_leaves_the_newer_row_and_absent_columns_stay(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession], copies: list[str]
) -> None:
    tenant_id = await create_tenant(pg.sessions, SHOP)
    newer = T0 + timedelta(days=2)
    # Stored first, one by one as webhooks write them (not through COPY).
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(
            session,
            Customer,
            tenant_id,
            [
                _customer(1, newer, email="new@example.com", amount_spent=Decimal("10.50")),
                _customer(2, T0, email="two@example.com", phone="+4912345"),
            ],
            source="webhook",
        )
    assert copies == []
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(
            session,
            Customer,
            tenant_id,
            [_customer(3, T0, email="three@example.com")],
            source="webhook",
        )
        await session.execute(
            text("UPDATE customers SET deleted_at = :at WHERE shopify_id = 3"), {"at": T0}
        )
    batch = [
        # older than the stored row: refused, whole
        _customer(1, T0 + timedelta(days=1), email="old@example.com", amount_spent=Decimal("1")),
        # newer, without `phone` or `email`: the stored ones stay (absent is not null)
        _customer(2, T0 + timedelta(days=3), first_name="Two", amount_spent=Decimal("0.10")),
        # a final tombstone: refused, however new
        _customer(3, T0 + timedelta(days=9), email="revived@example.com"),
        *(
            _customer(100 + n, T0, email=f"c{n}@example.com", amount_spent=Decimal("12.3400"))
            for n in range(records.COPY_MIN_ROWS)
        ),
    ]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        applied = await upsert_applied(session, Customer, tenant_id, batch, source="backfill")
    # Three column sets, one COPY and merge each, through the one staging table.
    assert copies == ["customers"] * 3
    assert applied == {2} | {100 + n for n in range(records.COPY_MIN_ROWS)}

    stored = await _customers(pg, tenant_id)
    assert (stored[1].email, stored[1].amount_spent, stored[1].shopify_updated_at) == (
        "new@example.com",
        Decimal("10.50"),
        newer,
    )
    assert stored[1].source == "webhook"
    two = stored[2]
    assert (two.email, two.phone, two.first_name) == ("two@example.com", "+4912345", "Two")
    assert str(two.amount_spent) == "0.10"
    assert (stored[3].email, stored[3].deleted_at) == ("three@example.com", T0)
    # Money exactly as sent, trailing zeros included.
    assert str(stored[100].amount_spent) == "12.3400"
    assert len(stored) == 3 + records.COPY_MIN_ROWS


# Amounts as parse_money gives them: an exponent, twenty decimals, the largest, zeros with and
# without places, a whole number.
ODD_AMOUNTS = ["1e-7", "0.00000000000000000001", "9999999999999999.9999", "-5.00", "0.10",
               "1E+2", "-0.00", "0", "12.3400"]  # fmt: skip


async def test_amounts_through_copy_read_back_as_through_the_json_merge(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession], copies: list[str]
) -> None:
    """COPY stages amounts as text (cast back in the merge); a webhook's batch sends them in
    JSON: both leave the same NUMERIC, scale included."""
    tenant_id = await create_tenant(pg.sessions, SHOP)
    amounts = [parse_money(text) for text in ODD_AMOUNTS]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        for n, amount in enumerate(amounts):
            await upsert_records(
                session, Customer, tenant_id, [_customer(1 + n, T0, amount_spent=amount)],
                source="webhook",
            )  # fmt: skip
    assert copies == []
    batch = [
        _customer(100 + n, T0, amount_spent=amounts[n % len(amounts)])
        for n in range(max(records.COPY_MIN_ROWS, len(amounts)))
    ]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(session, Customer, tenant_id, batch, source="backfill")
    assert copies == ["customers"]
    stored = await _customers(pg, tenant_id)
    for n, amount in enumerate(amounts):
        by_json, by_copy = stored[1 + n].amount_spent, stored[100 + n].amount_spent
        assert (str(by_copy), by_copy) == (str(by_json), amount), ODD_AMOUNTS[n]


async def test_a_copy_batch_revives_a_level_only_when_newer_than_its_tombstone(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession], copies: list[str]
) -> None:
    tenant_id = await create_tenant(pg.sessions, SHOP)
    removed = T0 + timedelta(days=1)
    levels = [
        {
            "inventory_item_shopify_id": 7,
            "location_shopify_id": location,
            "available": 5,
            "shopify_updated_at": T0,
            "raw": {"location": location},
        }
        for location in (1, 2)
    ]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(session, InventoryLevel, tenant_id, levels, source="webhook")
        await session.execute(text("UPDATE inventory_levels SET deleted_at = :at"), {"at": removed})
    batch = [
        # from the moment it was removed: stays removed
        {**levels[0], "available": 9, "shopify_updated_at": removed},
        # newer than the removal: connected again
        {**levels[1], "available": 8, "shopify_updated_at": removed + timedelta(hours=1)},
        *(
            {**levels[0], "location_shopify_id": 100 + n, "available": n}
            for n in range(records.COPY_MIN_ROWS)
        ),
    ]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(session, InventoryLevel, tenant_id, batch, source="backfill")
    assert copies == ["inventory_levels"]
    async with pg.sessions() as session:
        stored = {
            row.location_shopify_id: row
            for row in await session.scalars(
                select(InventoryLevel).where(InventoryLevel.tenant_id == tenant_id)
            )
        }
    assert (stored[1].available, stored[1].deleted_at) == (5, removed)
    assert (stored[2].available, stored[2].deleted_at) == (8, None)
    assert len(stored) == 2 + records.COPY_MIN_ROWS


async def test_the_merge_is_bound_by_row_level_security(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession], copies: list[str]
) -> None:
    own = await create_tenant(pg.sessions, SHOP)
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    batch = [_customer(n, T0, email=f"c{n}@example.com") for n in range(records.COPY_MIN_ROWS)]
    with pytest.raises(DBAPIError, match="row-level security"):
        async with tenant_transaction(app_sessions, own) as session:
            await upsert_records(session, Customer, other, batch, source="backfill")
    assert copies == ["customers"]
    assert await _customers(pg, other) == {}
    # The scope's own store takes the same batch.
    async with tenant_transaction(app_sessions, own) as session:
        await upsert_records(session, Customer, own, batch, source="backfill")
    assert len(await _customers(pg, own)) == records.COPY_MIN_ROWS


async def test_copied_rows_keep_the_target_columns_compression(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession], copies: list[str]
) -> None:
    """The staging table compresses as the target does (lz4 for jsonb, migration 0017), and
    the merge moves compressed values as they are: a staging table on the server's default
    left the backfill's rows in pglz, at a tenth of PostgreSQL's CPU."""
    tenant_id = await create_tenant(pg.sessions, SHOP)
    # Over PostgreSQL's 2 kB threshold, so each raw value is compressed as it is written.
    batch = [
        _customer(n, T0, note=f"customer {n} " + "lorem ipsum dolor " * 300)
        for n in range(records.COPY_MIN_ROWS)
    ]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await upsert_records(session, Customer, tenant_id, batch, source="backfill")
    assert copies == ["customers"]
    async with pg.sessions() as session:
        target = await session.scalar(
            text(
                "SELECT attcompression FROM pg_attribute "
                "WHERE attrelid = 'customers'::regclass AND attname = 'raw'"
            )
        )
        stored = set(
            await session.scalars(text("SELECT DISTINCT pg_column_compression(raw) FROM customers"))
        )
    # lz4 where this PostgreSQL has it (migration 0017 set it), else the default, pglz.
    assert stored == {"lz4" if target == b"l" else "pglz"}


def test_only_large_postgresql_batches_take_copy() -> None:
    assert records.uses_copy("postgresql", records.COPY_MIN_ROWS)
    assert not records.uses_copy("postgresql", 1)
    assert not records.uses_copy("sqlite", 100_000)


async def test_a_bulk_job_cancelled_between_batches_resumes_without_duplicates(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    read_in_sql: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reader runs a batch ahead of the writer; what a cancel leaves is still exactly the
    committed batches and the progress that counts them, and the rerun adds the rest."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    async with httpx.AsyncClient(timeout=30) as http:
        env, _, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        task: asyncio.Task[str] | None = None

        def stop_after_two_batches(resource: str, state: dict[str, Any]) -> None:
            if state.get("count", 0) >= 120 and task is not None:
                task.cancel()

        task = asyncio.create_task(run_sync_job(env, job_id, on_progress=stop_after_two_batches))
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pg.sessions() as session:
            interrupted = await session.get_one(SyncJob, job_id)
            stored = await session.scalar(select(func.count()).select_from(Order))
        assert interrupted.status == "queued"
        progress = interrupted.progress["orders"]
        assert 120 <= progress["count"] < STORE["orders"]
        assert progress["lines"] > 0
        # Exactly the committed batches: the batch read ahead was not written.
        assert stored == progress["count"]
        assert await run_sync_job(env, job_id) == "succeeded"
    async with pg.sessions() as session:
        finished = await session.get_one(SyncJob, job_id)
        assert finished.progress["orders"]["count"] == STORE["orders"]
        assert await session.scalar(select(func.count()).select_from(Order)) == STORE["orders"]
    # Read by PostgreSQL out of the result's lines, every batch of them.
    assert read_in_sql
    assert all(done for _, done in read_in_sql)


async def _assert_every_order_in(
    pg: Backend, store: FakeStore, tenant_id: int, job_id: int
) -> None:
    """The job counted every order, each is stored once, and their children equal the
    store's."""
    async with pg.sessions() as session:
        finished = await session.get_one(SyncJob, job_id)
        assert finished.progress["orders"]["count"] == STORE["orders"]
        assert await session.scalar(select(func.count()).select_from(Order)) == STORE["orders"]
        await assert_children_equal_store(session, store, tenant_id, [ORDERS])


async def test_two_bulk_batches_are_written_at_once_and_the_rows_are_exact(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On PostgreSQL a batch's rows are merged while the next one's are written, each in its
    own transaction: the first batch's write waits until a second has begun (it would wait
    in vain with one writer), never more than `BULK_WRITERS` run, and the store's rows come
    out exactly as the simulator holds them."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    original = runner.JobRun._bulk_write
    running: list[int] = []
    most = 0
    two_at_once = asyncio.Event()

    async def observed(self: runner.JobRun, resource: Any, batch: Any, *rest: Any) -> None:
        nonlocal most
        running.append(batch.records)
        most = max(most, len(running))
        if len(running) == 2:
            two_at_once.set()
        try:
            await asyncio.wait_for(two_at_once.wait(), timeout=10)
            await original(self, resource, batch, *rest)
        finally:
            running.pop()

    monkeypatch.setattr(runner.JobRun, "_bulk_write", observed)
    async with httpx.AsyncClient(timeout=30) as http:
        env, tenant_id, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        assert await run_sync_job(env, job_id) == "succeeded"
    assert most == runner.BULK_WRITERS == 2
    await _assert_every_order_in(pg, simulator[0], tenant_id, job_id)


async def test_two_bulk_batches_are_finished_at_once_and_written_in_order(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's refunds' Admin API reads overlap the next batch's: the first batch's reads
    wait here until the second batch's have come back (they would wait in vain one batch at
    a time), yet the writers still take the batches in the order of the result's lines, and
    the rows come out exactly as the simulator holds them."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    original_gaps = runner.fill_bulk_gaps
    calls = 0
    running = 0
    most = 0
    second_back = asyncio.Event()

    async def observed_gaps(client: Any, children: Any, nodes: Any) -> int:
        nonlocal calls, running, most
        calls += 1
        mine = calls
        running += 1
        most = max(most, running)
        try:
            if mine == 1:
                await asyncio.wait_for(second_back.wait(), timeout=10)
            answered = await original_gaps(client, children, nodes)
            if mine == 2:
                second_back.set()
            return answered
        finally:
            running -= 1

    original_write = runner.JobRun._bulk_write
    written: list[int] = []

    async def observed_write(self: runner.JobRun, resource: Any, batch: Any, *args: Any) -> None:
        written.append(batch.last_line)
        await original_write(self, resource, batch, *args)

    monkeypatch.setattr(runner, "fill_bulk_gaps", observed_gaps)
    monkeypatch.setattr(runner.JobRun, "_bulk_write", observed_write)
    async with httpx.AsyncClient(timeout=30) as http:
        env, tenant_id, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        assert await run_sync_job(env, job_id) == "succeeded"
    assert most == runner.BULK_FINISHING == 2
    assert len(written) > 2
    assert written == sorted(written)
    await _assert_every_order_in(pg, simulator[0], tenant_id, job_id)


async def test_a_batch_committed_past_an_unwritten_one_is_not_counted_and_is_rewritten(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    monkeypatch: pytest.MonkeyPatch,
    python_path: None,
) -> None:
    """The second batch is still being written when the third commits, then the job stops:
    the progress counts the first batch only (resuming from the third's lines would skip
    the second's), the third's rows are there all the same, and the rerun writes the rest
    with no row twice."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    original_write = runner.JobRun._write_records
    original_committed = runner._BulkCommits.committed
    commits = 0
    third_committed = asyncio.Event()
    task: asyncio.Task[str] | None = None

    def counted(self: runner._BulkCommits, ticket: int) -> None:
        nonlocal commits
        original_committed(self, ticket)
        commits += 1
        if commits == 2:  # the first batch, then the third
            third_committed.set()

    second_batch_starts = list(store_nodes(simulator[0], ORDERS))[60]["id"]

    async def second_waits(
        self: runner.JobRun, session: AsyncSession, resource: Any, nodes: Any, read: Any
    ) -> None:
        if nodes and nodes[0]["id"] == second_batch_starts:
            await asyncio.wait_for(third_committed.wait(), timeout=10)
            assert task is not None
            task.cancel()
            await asyncio.Event().wait()  # until the job's cancel reaches this write
        await original_write(self, session, resource, nodes, read)

    monkeypatch.setattr(runner._BulkCommits, "committed", counted)
    monkeypatch.setattr(runner.JobRun, "_write_records", second_waits)
    async with httpx.AsyncClient(timeout=30) as http:
        env, tenant_id, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        task = asyncio.create_task(run_sync_job(env, job_id))
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pg.sessions() as session:
            interrupted = await session.get_one(SyncJob, job_id)
            stored = await session.scalar(select(func.count()).select_from(Order))
        assert interrupted.status == "queued"
        assert interrupted.progress["orders"]["count"] == 60
        assert stored == 120  # the first batch and the third
        monkeypatch.setattr(runner.JobRun, "_write_records", original_write)
        assert await run_sync_job(env, job_id) == "succeeded"
    await _assert_every_order_in(pg, simulator[0], tenant_id, job_id)


async def test_a_failed_bulk_write_ends_the_job_without_waiting_for_the_next_batch(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first batch's write fails while the next batch's Admin API reads never end: the
    job fails at once with the write's error, not when (if ever) the next batch is ready."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    original_gaps = runner.fill_bulk_gaps
    gap_reads = 0

    async def second_never_ends(*args: Any) -> int:
        nonlocal gap_reads
        gap_reads += 1
        if gap_reads == 2:
            await asyncio.Event().wait()
        return await original_gaps(*args)

    async def first_fails(self: runner.JobRun, *args: Any) -> None:
        raise runner.BackfillError("the first batch could not be written")

    monkeypatch.setattr(runner, "fill_bulk_gaps", second_never_ends)
    monkeypatch.setattr(runner.JobRun, "_bulk_write", first_fails)
    async with httpx.AsyncClient(timeout=30) as http:
        env, _, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        assert await asyncio.wait_for(run_sync_job(env, job_id), timeout=20) == "failed"
    async with pg.sessions() as session:
        failed = await session.get_one(SyncJob, job_id)
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
    assert "the first batch could not be written" in (failed.error or "")


async def test_orders_postgresql_reads_are_the_rows_python_writes(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    read_in_sql: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The orders a bulk job gives PostgreSQL to read out of their JSON leave every column of
    every table (`raw` included) as the Python normalisers leave it, refunds and their line
    items (Admin API reads, `fill_bulk_gaps`) too."""
    with monkeypatch.context() as patch:
        patch.setattr(runner, "reads_in_sql", lambda resource, dialect: False)
        await _bulk(pg, app_sessions, simulator)
    assert read_in_sql == []
    by_python = await _snapshot(pg)

    tenant_id = await _bulk(pg, app_sessions, simulator)
    by_postgresql = await _snapshot(pg)
    refunded = sum(1 for row in by_python["orders"] if row["raw"].get("refunds"))
    assert 0 < refunded < STORE["orders"]
    assert all(done for _, done in read_in_sql)
    assert sum(orders for orders, _ in read_in_sql) == STORE["orders"]
    assert len(by_postgresql["order_refund_line_items"]) > refunded
    assert len(by_postgresql["order_line_items"]) > STORE["orders"]
    for table in by_python:
        assert by_postgresql[table] == by_python[table], table
    async with pg.sessions() as session:
        await assert_children_equal_store(session, simulator[0], tenant_id, [ORDERS])


async def _bulk_again(
    pg: Backend,
    sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    tenant_id: int,
) -> None:
    """A second bulk job of the store's orders, over what the first one left."""
    store, clock, server = simulator
    async with httpx.AsyncClient(timeout=30) as http:
        env = simulator_environment(
            sessions, http, server.admin_base_url_template, store, clock, bulk_poll_interval=0.01
        )
        async with pg.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, tenant_id)
            job = await create_sync_job(session, tenant, "bulk", ["orders"])
        assert await run_sync_job(env, job.id) == "succeeded"


def _copied_row(table: str, source: str, changes: str) -> str:
    """SQL adding a copy of `table`'s rows matched by `source` (a WHERE), with `changes` (a
    jsonb object) over its columns and a new surrogate id."""
    return (
        f"INSERT INTO {table} SELECT (jsonb_populate_record(NULL::{table}, to_jsonb(x) ||"
        f" jsonb_build_object('id', nextval(pg_get_serial_sequence('{table}', 'id'))) ||"
        f" {changes})).* FROM {table} x WHERE {source}"
    )


async def _changed_store(
    pg: Backend,
    sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
) -> tuple[int, dict[str, int]]:
    """The orders backfilled, then changed as webhooks and deletions would have: order
    `newer` stored newer than the result (its line items and transactions then removed),
    `deleted` deleted (its transactions removed), and `listed`, which the result brings
    again, holding a stale line item title and children the result no longer lists."""
    tenant_id = await _bulk(pg, sessions, simulator)
    async with pg.sessions() as session, session.begin():
        chosen = list(
            await session.scalars(
                text(
                    "SELECT o.shopify_id FROM orders o WHERE o.raw -> 'refunds' = '[]'"
                    " AND jsonb_array_length(o.raw -> 'transactions') BETWEEN 1 AND 2"
                    " AND EXISTS (SELECT FROM order_line_items i"
                    " WHERE i.order_shopify_id = o.shopify_id) ORDER BY o.shopify_id LIMIT 3"
                )
            )
        )
        assert len(chosen) == 3
        orders = dict(zip(("newer", "deleted", "listed"), chosen, strict=True))
        # A list that may be cut short (as many as a page query asks for) removes nothing.
        orders["cut"] = await session.scalar(
            text(
                "SELECT shopify_id FROM orders WHERE raw -> 'refunds' = '[]'"
                " AND jsonb_array_length(raw -> 'fulfillments') >= :first"
                " ORDER BY shopify_id LIMIT 1"
            ),
            {"first": FULFILLMENTS.first},
        )
        assert orders["cut"] is not None
        # Orders with refunds that have line items: the first stored newer than the result.
        refunded = list(
            await session.scalars(
                text(
                    "SELECT DISTINCT order_shopify_id FROM order_refund_line_items"
                    " ORDER BY order_shopify_id LIMIT 2"
                )
            )
        )
        assert len(refunded) == 2
        orders["refunded_newer"], orders["refunded"] = refunded
        statements = [
            "UPDATE orders SET shopify_updated_at = '2100-01-01Z' WHERE shopify_id = :newer",
            "UPDATE orders SET shopify_updated_at = '2100-01-01Z'"
            " WHERE shopify_id = :refunded_newer",
            "DELETE FROM order_line_items WHERE order_shopify_id = :newer",
            "DELETE FROM order_transactions WHERE order_shopify_id IN (:newer, :deleted)",
            "UPDATE orders SET deleted_at = '2100-01-01Z' WHERE shopify_id = :deleted",
            "UPDATE order_line_items SET title = 'stale' WHERE order_shopify_id = :listed",
            # Gone from Shopify: a line item and a transaction made before the result's
            # order; a transaction made after it stays (the result predates it).
            _copied_row(
                "order_line_items",
                "order_shopify_id = :listed AND shopify_id = (SELECT min(shopify_id)"
                " FROM order_line_items WHERE order_shopify_id = :listed)",
                "jsonb_build_object('shopify_id', 9000000001)",
            ),
            _copied_row(
                "order_transactions",
                "shopify_id = (SELECT min(shopify_id) FROM order_transactions"
                " WHERE order_shopify_id = :listed)",
                "jsonb_build_object('shopify_id', 9000000002,"
                " 'shopify_created_at', '2000-01-01T00:00:00+00:00')",
            ),
            _copied_row(
                "order_transactions",
                "shopify_id = (SELECT min(shopify_id) FROM order_transactions"
                " WHERE order_shopify_id = :listed)",
                "jsonb_build_object('shopify_id', 9000000003,"
                " 'shopify_created_at', '2100-01-01T00:00:00+00:00')",
            ),
            _copied_row(
                "fulfillments",
                "shopify_id = (SELECT min(shopify_id) FROM fulfillments"
                " WHERE order_shopify_id = :cut)",
                "jsonb_build_object('shopify_id', 9000000005,"
                " 'shopify_created_at', '2000-01-01T00:00:00+00:00')",
            ),
            _copied_row(
                "order_refunds",
                "shopify_id = (SELECT min(shopify_id) FROM order_refunds)",
                "jsonb_build_object('shopify_id', 9000000004, 'order_shopify_id',"
                " CAST(:listed AS bigint), 'shopify_created_at', '2000-01-01T00:00:00+00:00')",
            ),
            # Gone from a refund's line items, of an order written again and of one not.
            *(
                _copied_row(
                    "order_refund_line_items",
                    f"shopify_id = (SELECT min(shopify_id) FROM order_refund_line_items"
                    f" WHERE order_shopify_id = :{order})",
                    f"jsonb_build_object('shopify_id', {gone})",
                )
                for order, gone in (("refunded", 9000000006), ("refunded_newer", 9000000007))
            ),
        ]
        for statement in statements:
            await session.execute(text(statement), orders)
    return tenant_id, orders


def _tombstoned(snapshot: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """`snapshot` with each tombstone's time as whether there is one (written at now())."""
    return {
        table: [{**row, "deleted_at": row.get("deleted_at") is not None} for row in rows]
        for table, rows in snapshot.items()
    }


async def test_orders_read_by_postgresql_keep_the_write_rules_of_the_python_path(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    read_in_sql: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over rows a first backfill and later changes left: the children of an order stored
    newer are not written but its transactions are (facts once made), a deleted order's are
    not, and a whole list tombstones what it no longer names; exactly as the Python path."""
    with monkeypatch.context() as patch:
        patch.setattr(runner, "reads_in_sql", lambda resource, dialect: False)
        tenant_id, orders = await _changed_store(pg, app_sessions, simulator)
        await _bulk_again(pg, app_sessions, simulator, tenant_id)
    by_python = _tombstoned(await _snapshot(pg))
    assert read_in_sql == []

    tenant_id, orders = await _changed_store(pg, app_sessions, simulator)
    read_in_sql.clear()
    await _bulk_again(pg, app_sessions, simulator, tenant_id)
    assert read_in_sql
    assert all(done for _, done in read_in_sql)
    by_postgresql = _tombstoned(await _snapshot(pg))
    for table in by_python:
        assert by_postgresql[table] == by_python[table], table

    def rows(table: str, order: str) -> list[dict[str, Any]]:
        return [row for row in by_postgresql[table] if row["order_shopify_id"] == orders[order]]

    assert rows("order_line_items", "newer") == []
    assert rows("order_transactions", "newer")
    assert rows("order_transactions", "deleted") == []
    items = rows("order_line_items", "listed")
    assert {row["shopify_id"] for row in items if row["deleted_at"]} == {9000000001}
    assert all(row["title"] != "stale" for row in items if not row["deleted_at"])
    gone = {row["shopify_id"]: row["deleted_at"] for row in rows("order_transactions", "listed")}
    assert (gone[9000000002], gone[9000000003]) == (True, False)
    assert [row["deleted_at"] for row in rows("order_refunds", "listed")] == [True]
    fulfillments = {row["shopify_id"]: row["deleted_at"] for row in rows("fulfillments", "cut")}
    assert fulfillments[9000000005] is False
    # A refund's whole list of line items tombstones what it no longer names, also where its
    # order was stored newer (refunds are facts once made, written from any version).
    for order, gone in (("refunded", 9000000006), ("refunded_newer", 9000000007)):
        items = {
            row["shopify_id"]: row["deleted_at"] for row in rows("order_refund_line_items", order)
        }
        assert items[gone] is True
        assert not any(deleted for shopify_id, deleted in items.items() if shopify_id != gone)


async def test_a_batch_postgresql_cannot_read_is_written_by_the_python_path(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    read_in_sql: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A time PostgreSQL cannot cast (an ISO week date, which Python reads) fails its batch's
    statements: nothing of them stays (a savepoint), the batch's orders are read again from
    their JSON and normalised in Python instead, in the same transaction, and the job's rows
    are still exactly the store's."""
    monkeypatch.setattr(runner, "BULK_BATCH", 60)
    original = runner.split_batch
    spoiled: list[int] = []

    def week_date(match: re.Match[bytes]) -> bytes:
        year, week, day = date.fromisoformat(match[2].decode()).isocalendar()
        return match[1] + b"%04d-W%02d-%d" % (year, week, day)

    def first_unreadable(groups: Any) -> Any:
        python, sql = original(groups)
        if sql is not None and not spoiled:
            pattern = rb'("processedAt": ?")(\d{4}-\d\d-\d\d)'
            data, count = re.subn(pattern, week_date, sql.data, count=1)
            assert count == 1
            spoiled.append(len(sql.orders))
            sql = dataclasses.replace(sql, data=data)
        return python, sql

    monkeypatch.setattr(runner, "split_batch", first_unreadable)
    with caplog.at_level(logging.INFO, logger="shopify_receiver.backfill"):
        async with httpx.AsyncClient(timeout=30) as http:
            env, tenant_id, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
            assert await run_sync_job(env, job_id) == "succeeded"
    # Two writers: batches finish in either order.
    assert (spoiled[0], False) in read_in_sql
    assert sorted(done for _, done in read_in_sql) == [False] + [True] * (len(read_in_sql) - 1)
    assert len(read_in_sql) > 1
    assert "bulk.sql_refused" in caplog.text
    assert "22007" in caplog.text  # invalid_datetime_format
    await _assert_every_order_in(pg, simulator[0], tenant_id, job_id)


async def test_a_null_list_read_by_postgresql_is_whole_and_empty(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """`"transactions": null` says the order has none (`ChildSet.read`): PostgreSQL reads the
    order without falling back to Python and tombstones the transaction stored before."""
    tenant_id = await create_tenant(pg.sessions, SHOP)
    order = {"id": "gid://shopify/Order/1", "updatedAt": "2025-01-01T00:00:00Z", "refunds": []}
    transaction = {"id": "gid://shopify/OrderTransaction/7", "createdAt": "2024-12-31T00:00:00Z"}
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await write_with_children(
            session,
            Order,
            ORDERS.children,
            ORDERS.normalize_node,
            tenant_id,
            [{**order, "transactions": [transaction]}],
            graphql=True,
            source="webhook",
        )
    newer = {**order, "updatedAt": "2025-01-02T00:00:00Z", "transactions": None}
    lines = [json.dumps(newer).encode()]
    grouper = BulkGrouper(ORDERS.children)
    groups = [*grouper.feed(json.loads(lines[0]), 1), *grouper.finish()]
    python, sql = split_batch(groups)
    assert python == []
    assert sql is not None
    async with tenant_transaction(app_sessions, tenant_id) as session:
        assert await write_orders(session, tenant_id, sql, source="backfill")
    async with pg.sessions() as session:
        stored = (await session.execute(select(OrderTransaction))).scalars().all()
    assert [(row.shopify_id, row.deleted_at is not None) for row in stored] == [(7, True)]


async def test_a_bulk_stream_collects_the_cycles_its_batches_leave(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job process collects its young generation rarely (`receiver.runtime`) and a stream's
    batches free what they make, so the reference cycles they leave (an httpx response and
    its stream, one per Admin API read of refunds) are collected once a batch rather than
    held until the job ends. Automatic collection is off here, as good as never running."""
    monkeypatch.setattr(runner, "BULK_BATCH", 20)
    async with httpx.AsyncClient(timeout=30) as http:
        env, _, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        sent: list[str] = []
        send = http.send

        async def counted(request: httpx.Request, **options: Any) -> httpx.Response:
            sent.append(str(request.url))
            return await send(request, **options)

        monkeypatch.setattr(http, "send", counted)
        gc.collect()
        gc.disable()
        try:
            assert await run_sync_job(env, job_id) == "succeeded"
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            left = sum(1 for found in gc.garbage if isinstance(found, httpx.Response))
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert len(sent) > 10
    assert left < len(sent) / 4


async def test_a_refund_line_item_we_cannot_read_fails_the_job_with_what_it_was(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    simulator: tuple[FakeStore, ManualClock, FakeShopServer],
    read_in_sql: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An order whose refund's line item (an Admin API read) has no id is left to the Python
    path (`split_batch`), which ends the job: failed, saying which resource and what could
    not be read, with nothing of the batch stored."""
    original = runner.fill_bulk_gaps
    spoiled: list[str] = []

    async def first_item_without_id(client: Any, children: Any, nodes: Any) -> int:
        queries = await original(client, children, nodes)
        for node in nodes:
            for refund in node.get("refunds") or []:
                items = (refund.get("refundLineItems") or {}).get("nodes") or []
                if items and not spoiled:
                    spoiled.append(items[0].pop("id"))
        return queries

    monkeypatch.setattr(runner, "fill_bulk_gaps", first_item_without_id)
    async with httpx.AsyncClient(timeout=30) as http:
        env, _, job_id = await _bulk_job(pg, app_sessions, simulator, http, ["orders"])
        assert await run_sync_job(env, job_id) == "failed"
    assert spoiled
    assert read_in_sql == []  # the batch's Python share failed before PostgreSQL's was written
    async with pg.sessions() as session:
        failed = await session.get_one(SyncJob, job_id)
        assert await session.scalar(select(func.count()).select_from(Order)) == 0
    assert failed.error == (
        "orders: Shopify sent a record we cannot read: refund_line_item: has no id"
    )
