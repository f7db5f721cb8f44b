"""The inbox partitioned by month (PostgreSQL) with its dedupe keys in a table of their own:
dedupe across months, concurrent copies, retention by partition, the partition tick, and the
migration both ways. The service's role runs everything it runs in production."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.maintenance import prune_events
from backfill.queue import _blueprint
from handlers import inbox
from models import (
    ComplianceRequest,
    WebhookEvent,
    WebhookEventKey,
    create_engine,
    create_session_factory,
    utcnow,
)
from models import migrate as migrations
from models.statuses import EventStatus
from models.tenancy import cross_store_transaction, tenant_transaction
from tests.conftest import (
    BACKENDS,
    Backend,
    _create_postgres_database,
    _drop_postgres_database,
    as_app_role,
)
from tests.factories import OTHER_SHOP, SHOP, blocked_by, create_tenant


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """What the service runs with: the app role on PostgreSQL (not the tables' owner)."""
    if backend.name != "postgresql":
        yield backend.sessions
        return
    engine = create_engine(as_app_role(backend.url))
    yield create_session_factory(engine)
    await engine.dispose()


def event(
    key: str,
    received_at: datetime,
    tenant_id: int | None,
    status: str = EventStatus.PROCESSED,
    shop: str = SHOP,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "shop_domain": shop,
        "topic": "orders/create",
        "event_id": key,
        "webhook_id": None,
        "dedupe_key": key,
        "api_version": "2026-10",
        "triggered_at": received_at,
        "received_at": received_at,
        "processed_at": received_at,
        "status": status,
        "error": "handler failed" if status == EventStatus.FAILED else None,
        "attempts": 1,
        "payload": {"id": 1, "key": key},
    }


async def store(
    sessions: async_sessionmaker[AsyncSession], values: dict[str, Any], tenant_id: int
) -> int | None:
    async with tenant_transaction(sessions, tenant_id) as session:
        return await inbox.store_event(session, values)


async def partitions(backend: Backend) -> set[str]:
    async with backend.engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'webhook_events'::regclass"
            )
        )
        return set(rows.scalars())


async def table_exists(backend: Backend, name: str) -> bool:
    async with backend.engine.connect() as connection:
        return bool(
            await connection.scalar(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name})
        )


async def partition_of(backend: Backend, event_id: int) -> str:
    async with backend.engine.connect() as connection:
        return str(
            await connection.scalar(
                text("SELECT tableoid::regclass::text FROM webhook_events WHERE id = :id"),
                {"id": event_id},
            )
        )


# --- dedupe --------------------------------------------------------------------------------


async def test_the_same_event_in_another_month_is_a_duplicate(backend, sessions):
    tenant = await create_tenant(backend.sessions, SHOP)
    november = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    december = datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC)

    async with cross_store_transaction(sessions) as session:
        await inbox.add_months(session, november)  # November's and December's (PostgreSQL)
    first = await store(sessions, event("evt-1", november, tenant), tenant)
    again = await store(sessions, event("evt-1", december, tenant), tenant)
    async with tenant_transaction(sessions, tenant) as session:
        await inbox.count_duplicates(session, [(SHOP, "orders/create", "evt-1")])

    assert first is not None
    assert again is None
    async with backend.sessions() as session:
        rows = (await session.scalars(select(WebhookEvent))).all()
        keys = (await session.scalars(select(WebhookEventKey))).all()
    assert [(row.id, row.received_at, row.duplicate_count) for row in rows] == [
        (first, november, 1)
    ]
    assert [(key.webhook_event_id, key.received_at, key.tenant_id) for key in keys] == [
        (first, november, tenant)
    ]
    if backend.name == "postgresql":
        assert await partition_of(backend, first) == "webhook_events_p202611"


async def test_one_key_per_shop_and_topic(backend, sessions):
    alpha = await create_tenant(backend.sessions, SHOP)
    beta = await create_tenant(backend.sessions, OTHER_SHOP)
    now = utcnow()
    assert await store(sessions, event("evt-1", now, alpha), alpha) is not None
    assert await store(sessions, event("evt-1", now, beta, shop=OTHER_SHOP), beta) is not None
    other_topic = event("evt-1", now, alpha) | {"topic": "orders/updated"}
    assert await store(sessions, other_topic, alpha) is not None


async def test_a_rolled_back_copy_leaves_no_key_and_a_waiting_copy_stores_itself(pg, app_sessions):
    """Two concurrent copies: the second waits on the first's key; when the first rolls back
    the second stores the event, and when the first commits the second is a duplicate."""
    tenant = await create_tenant(pg.sessions, SHOP)
    for first_commits in (False, True):
        key = f"race-{first_commits}"
        first = app_sessions()
        try:
            await first.execute(text("SELECT set_config('app.tenant_id', :t, true)"), {
                "t": str(tenant)
            })  # fmt: skip
            first_id = await inbox.store_event(first, event(key, utcnow(), tenant))
            assert first_id is not None
            first_pid = (await first.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            second = asyncio.create_task(store(app_sessions, event(key, utcnow(), tenant), tenant))
            await blocked_by(
                pg.engine, first_pid, second, "the second copy never waited on the first's key"
            )
            assert not second.done()  # waiting on the first copy's key
            await (first.commit() if first_commits else first.rollback())
        finally:
            await first.close()
        second_id = await asyncio.wait_for(second, 10)
        if first_commits:
            assert second_id is None
        else:
            assert second_id is not None
            assert second_id != first_id
    async with pg.sessions() as session:
        keys = (await session.scalars(select(WebhookEventKey.dedupe_key))).all()
        events = (await session.scalars(select(WebhookEvent.dedupe_key))).all()
    assert sorted(keys) == sorted(events) == ["race-False", "race-True"]


# --- retention ----------------------------------------------------------------------------


async def test_prune_drops_whole_old_months_and_keeps_failed_events_and_their_keys(
    backend, sessions
):
    tenant = await create_tenant(backend.sessions, SHOP)
    long_ago = datetime(2025, 3, 10, tzinfo=UTC)
    async with cross_store_transaction(sessions) as session:
        await inbox.add_months(session, long_ago)  # March and April 2025
    done = await store(sessions, event("done", long_ago, tenant), tenant)
    failed = await store(sessions, event("failed", long_ago, tenant, EventStatus.FAILED), tenant)
    recent = await store(sessions, event("recent", utcnow() - timedelta(hours=1), tenant), tenant)
    assert done
    assert failed
    assert recent
    async with backend.sessions() as session, session.begin():
        session.add(
            ComplianceRequest(
                tenant_id=tenant, webhook_event_id=done, topic="customers/data_request"
            )
        )
    if backend.name == "postgresql":
        assert {"webhook_events_p202503", "webhook_events_p202504"} <= await partitions(backend)
        assert await partition_of(backend, failed) == "webhook_events_p202503"

    report = await prune_events(sessions, older_than=timedelta(days=30))

    assert report.deleted == 1
    async with backend.sessions() as session:
        rows = {row.dedupe_key: row for row in await session.scalars(select(WebhookEvent))}
        keys = {key.dedupe_key: key for key in await session.scalars(select(WebhookEventKey))}
        reference = await session.scalar(select(ComplianceRequest.webhook_event_id))
    assert sorted(rows) == sorted(keys) == ["failed", "recent"]
    assert (rows["failed"].id, rows["failed"].received_at) == (failed, long_ago)
    assert (keys["failed"].webhook_event_id, keys["failed"].received_at) == (failed, long_ago)
    assert reference is None  # as ON DELETE SET NULL did
    if backend.name == "postgresql":
        left = await partitions(backend)
        assert "webhook_events_p202503" not in left
        assert "webhook_events_p202504" not in left  # empty, and wholly old too
        assert not await table_exists(backend, "webhook_events_p202503")
        assert await partition_of(backend, failed) == "webhook_events_default"

    # A pruned event delivered again is stored anew; a kept one is still a duplicate.
    assert await store(sessions, event("done", utcnow(), tenant), tenant) is not None
    assert await store(sessions, event("failed", utcnow(), tenant), tenant) is None
    async with tenant_transaction(sessions, tenant) as session:
        await inbox.count_duplicates(session, [(SHOP, "orders/create", "failed")])
    async with backend.sessions() as session:
        counted = await session.scalar(
            select(WebhookEvent.duplicate_count).where(WebhookEvent.id == failed)
        )
    assert counted == 1

    # And with include_failed the kept ones go too, from wherever they are now.
    report = await prune_events(sessions, older_than=timedelta(days=30), include_failed=True)
    assert report.deleted == 1
    async with backend.sessions() as session:
        left = (await session.scalars(select(WebhookEventKey.dedupe_key))).all()
    assert sorted(left) == ["done", "recent"]


async def test_prune_deletes_the_month_at_the_horizon_row_by_row(backend, sessions):
    tenant = await create_tenant(backend.sessions, SHOP)
    now = utcnow()
    old = await store(sessions, event("old", now - timedelta(days=10), tenant), tenant)
    new = await store(sessions, event("new", now - timedelta(days=1), tenant), tenant)
    before = await partitions(backend) if backend.name == "postgresql" else set()

    report = await prune_events(sessions, older_than=timedelta(days=5), now=now)

    assert report.deleted == 1
    async with backend.sessions() as session:
        assert (await session.scalars(select(WebhookEvent.id))).all() == [new]
        assert (await session.scalars(select(WebhookEventKey.webhook_event_id))).all() == [new]
    assert old != new
    if backend.name == "postgresql":
        assert await partitions(backend) == before  # this month and the last are kept whole


async def test_the_tick_makes_next_months_partition_and_moves_what_default_held(pg, app_sessions):
    tenant = await create_tenant(pg.sessions, SHOP)
    far = datetime(2031, 6, 15, tzinfo=UTC)
    try:
        early = await store(app_sessions, event("early", far, tenant), tenant)
        assert early is not None
        assert await partition_of(pg, early) == "webhook_events_default"
        async with cross_store_transaction(app_sessions) as session:
            made = await inbox.add_months(session, far)
        assert made == [datetime(2031, 6, 1, tzinfo=UTC), datetime(2031, 7, 1, tzinfo=UTC)]
        assert await partition_of(pg, early) == "webhook_events_p203106"
        async with cross_store_transaction(app_sessions) as session:
            assert await inbox.add_months(session, far) == []  # already there
        # Guarded like its parent, should anyone read it directly.
        async with pg.engine.connect() as connection:
            guarded = await connection.scalar(
                text("SELECT relrowsecurity FROM pg_class WHERE relname = 'webhook_events_p203106'")
            )
        assert guarded
        # The service's own tick makes this month's and the next if missing.
        async with cross_store_transaction(app_sessions) as session:
            await inbox.add_months(session)
        this_month = inbox.month_start(utcnow())
        names = await partitions(pg)
        for month in (this_month, inbox.next_month(this_month)):
            assert f"webhook_events_p{month:%Y%m}" in names
    finally:
        async with pg.sessions() as session, session.begin():
            await session.execute(text("SELECT webhook_events_drop_month(:m, false)"), {"m": far})
            await session.execute(
                text("SELECT webhook_events_drop_month(:m, false)"),
                {"m": datetime(2031, 7, 1, tzinfo=UTC)},
            )


# --- the migration --------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def empty_database(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'upgraded.db'}"
        return
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)


async def test_the_migration_keeps_every_event_and_key_and_goes_back(empty_database):
    await asyncio.to_thread(migrations.upgrade, empty_database, "0015")
    engine = create_engine(empty_database)
    postgres = engine.dialect.name == "postgresql"
    times = [datetime(2026, 9, 3, tzinfo=UTC), datetime(2026, 10, 31, 23, tzinfo=UTC)]
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO tenants (id, shop_domain, status, credentials_status, "
                    "created_at, updated_at) VALUES (1, :shop, 'active', 'ok', :now, :now)"
                ),
                {"shop": SHOP, "now": times[0]},
            )
            for n, received_at in enumerate(times, start=1):
                await connection.execute(
                    text(
                        "INSERT INTO webhook_events (id, tenant_id, shop_domain, topic, "
                        "dedupe_key, received_at, status, attempts, duplicate_count) VALUES "
                        "(:id, 1, :shop, 'orders/create', :key, :at, 'processed', 1, 0)"
                    ),
                    {"id": 40 + n, "shop": SHOP, "key": f"evt-{n}", "at": received_at},
                )
            await connection.execute(
                text(
                    "INSERT INTO compliance_requests (tenant_id, webhook_event_id, topic, "
                    "received_at) VALUES (1, 41, 'customers/data_request', :at)"
                ),
                {"at": times[0]},
            )
        await engine.dispose()
        await asyncio.to_thread(migrations.upgrade, empty_database, "head")

        sessions = create_session_factory(engine)
        async with sessions() as session:
            rows = (await session.execute(select(WebhookEvent.id, WebhookEvent.dedupe_key))).all()
            keys = (
                await session.execute(
                    select(WebhookEventKey.webhook_event_id, WebhookEventKey.dedupe_key)
                )
            ).all()
        assert sorted(rows) == sorted(keys) == [(41, "evt-1"), (42, "evt-2")]
        async with cross_store_transaction(sessions) as session:
            # An event stored before the upgrade is still a duplicate; a new one follows on.
            assert await inbox.store_event(session, event("evt-2", utcnow(), 1)) is None
            new = await inbox.store_event(session, event("evt-3", utcnow(), 1))
        assert new is not None
        assert new not in (41, 42)
        if postgres:
            async with engine.connect() as connection:
                placed = dict(
                    (
                        await connection.execute(
                            text("SELECT id, tableoid::regclass::text FROM webhook_events")
                        )
                    ).all()
                )
            assert placed[41] == "webhook_events_p202609"
            assert placed[42] == "webhook_events_p202610"
        await engine.dispose()

        await asyncio.to_thread(
            command.downgrade, migrations.alembic_config(empty_database), "0015"
        )
        async with engine.begin() as connection:
            back = (
                await connection.execute(text("SELECT id, dedupe_key FROM webhook_events"))
            ).all()
            reference = await connection.scalar(
                text("SELECT webhook_event_id FROM compliance_requests")
            )
            if postgres:
                kind = await connection.scalar(
                    text("SELECT relkind::text FROM pg_class WHERE relname = 'webhook_events'")
                )
                assert kind == "r"
            # The unique key is back on the table itself.
            with pytest.raises(Exception, match=r"(?i)unique"):
                async with connection.begin_nested():
                    await connection.execute(
                        text(
                            "INSERT INTO webhook_events (tenant_id, shop_domain, topic, "
                            "dedupe_key, received_at, status, attempts, duplicate_count) "
                            "VALUES (1, :shop, 'orders/create', 'evt-1', :at, 'processed', 1, 0)"
                        ),
                        {"shop": SHOP, "at": times[1]},
                    )
        assert sorted(back) == sorted([(41, "evt-1"), (42, "evt-2"), (new, "evt-3")])
        assert reference == 41
    finally:
        await engine.dispose()


def test_the_worker_makes_partitions_every_hour():
    scheduled = {
        periodic.task.name: periodic.cron
        for periodic in _blueprint().periodic_registry.periodic_tasks.values()
    }
    assert scheduled["make_inbox_partitions"] == "7 * * * *"
