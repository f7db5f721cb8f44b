"""The migration and the models describe the same schema, on both databases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from models import Base, create_engine
from models import migrate as migrations
from models.tables import is_inbox_partition
from tests.conftest import BACKENDS, _create_postgres_database, _drop_postgres_database


def _ours(name, type_, parent_names):
    # The inbox's partitions (PostgreSQL) are described by their parent's model.
    if type_ == "table":
        return not ((name and name.startswith("procrastinate_")) or is_inbox_partition(name))
    return not is_inbox_partition(parent_names.get("table_name"))


async def test_migrations_match_the_models(backend):
    def diff(sync_connection):
        context = MigrationContext.configure(
            sync_connection, opts={"include_name": _ours, "compare_type": True}
        )
        return compare_metadata(context, Base.metadata)

    async with backend.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []


@pytest.fixture(params=BACKENDS)
async def empty_database(request, tmp_path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'upgraded.db'}"
        return
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)


async def test_upgrading_a_database_with_data_keeps_every_row(empty_database):
    # SQLite alters a table by copying it and dropping the original; with foreign keys on,
    # dropping `tenants` cascaded to every row that refers to a store.
    await asyncio.to_thread(migrations.upgrade, empty_database, "0005")
    engine = create_engine(empty_database)
    rows = {
        "tenants": "INSERT INTO tenants (id, shop_domain, status, credentials_status, "
        "created_at, updated_at) VALUES (1, 'a.myshopify.com', 'active', 'ok', :now, :now)",
        "webhook_events": "INSERT INTO webhook_events (tenant_id, shop_domain, topic, "
        "dedupe_key, received_at, status, attempts, duplicate_count) "
        "VALUES (1, 'a.myshopify.com', 'orders/create', 'k', :now, 'processed', 1, 0)",
        "sync_jobs": "INSERT INTO sync_jobs (tenant_id, mode, status, resources, progress, "
        "attempts, created_at, \"trigger\") VALUES (1, 'full', 'succeeded', '[]', '{}', 1, :now, "
        "'manual')",
        "reconcile_runs": 'INSERT INTO reconcile_runs (tenant_id, status, "trigger", report, '
        "started_at) VALUES (1, 'clean', 'periodic', '{}', :now)",
    }
    try:
        async with engine.begin() as connection:
            for insert in rows.values():
                await connection.execute(text(insert), {"now": datetime.now(UTC)})
        await engine.dispose()
        await asyncio.to_thread(migrations.upgrade, empty_database, "head")
        async with engine.connect() as connection:
            counts = {
                table: (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar()
                for table in rows
            }
    finally:
        await engine.dispose()
    assert counts == dict.fromkeys(rows, 1)


async def test_events_that_failed_before_retries_existed_are_due_after_the_upgrade(empty_database):
    await asyncio.to_thread(migrations.upgrade, empty_database, "0007")
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO tenants (id, shop_domain, status, credentials_status, "
                    "created_at, updated_at) VALUES (1, 'a.myshopify.com', 'active', 'ok', "
                    ":now, :now)"
                ),
                {"now": datetime.now(UTC)},
            )
            for key, status in (("failed-1", "failed"), ("done-1", "processed")):
                await connection.execute(
                    text(
                        "INSERT INTO webhook_events (tenant_id, shop_domain, topic, dedupe_key, "
                        "received_at, status, attempts, duplicate_count) VALUES (1, "
                        "'a.myshopify.com', 'orders/create', :key, :now, :status, 1, 0)"
                    ),
                    {"key": key, "now": datetime.now(UTC), "status": status},
                )
        await engine.dispose()
        await asyncio.to_thread(migrations.upgrade, empty_database, "head")
        async with engine.connect() as connection:
            due = dict(
                (
                    await connection.execute(
                        text("SELECT dedupe_key, next_attempt_at FROM webhook_events")
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    assert due["failed-1"] is not None  # the retry sweep takes it
    assert due["done-1"] is None


async def test_json_columns_compress_with_lz4_new_inbox_months_too(pg):
    """Migration 0017: every jsonb column of ours compresses with lz4 (this PostgreSQL has
    it), the inbox's existing partitions and one made afterwards included."""
    month = {"month": datetime(2031, 5, 1, tzinfo=UTC)}
    async with pg.engine.begin() as connection:
        await connection.execute(text("SELECT webhook_events_add_month(:month)"), month)
        columns = (
            await connection.execute(
                text(
                    "SELECT c.relname, a.attname, a.attcompression::text FROM pg_attribute a "
                    "JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') "
                    "AND c.relname NOT LIKE 'procrastinate%' "
                    "AND a.atttypid = 'jsonb'::regtype AND a.attnum > 0"
                )
            )
        ).all()
        await connection.execute(text("SELECT webhook_events_drop_month(:month, false)"), month)
    compression = {(table, name): method for table, name, method in columns}
    assert ("orders", "raw") in compression
    assert ("webhook_events_p203105", "payload") in compression
    assert ("webhook_events_default", "payload") in compression
    assert {key for key, method in compression.items() if method != "l"} == set()
