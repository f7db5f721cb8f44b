"""An index migration lets the service keep writing to its table while the index builds.

Upgrading a large database, revisions 0015, 0018 and 0019 each index a table a store's
webhooks write (line items, variants, refund line items). A plain CREATE INDEX waits for the
writers already in the table and, while it waits and builds, makes every new write wait
behind it: each webhook batch touching the table would then run into its statement timeout.
They build CONCURRENTLY (`models.migrations.online`), and a write meets no wait."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from models import create_engine
from models import migrate as migrations
from tests.conftest import _create_postgres_database, _drop_postgres_database
from tests.factories import blocked_by

# Revision, its table, a row of that table (the migration's columns given), its index.
CASES = {
    "0015": (
        "order_line_items",
        "order_shopify_id, variant_shopify_id, product_shopify_id",
        "ix_order_line_items_variant",
    ),
    "0018": (
        "product_variants",
        "product_shopify_id, inventory_item_shopify_id",
        "ix_product_variants_inventory_item",
    ),
    "0019": (
        "order_refund_line_items",
        "refund_shopify_id, order_shopify_id",
        "ix_order_refund_line_items_order",
    ),
}


@pytest.fixture
async def database() -> AsyncIterator[str]:
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)


async def _add_store(connection: AsyncConnection) -> None:
    await connection.execute(
        text(
            "INSERT INTO tenants (id, shop_domain, status, credentials_status, created_at,"
            " updated_at) VALUES (1, 'online.myshopify.com', 'active', 'ok', now(), now())"
        )
    )


async def _write(connection: AsyncConnection, table: str, columns: str, shopify_id: int) -> None:
    values = ", ".join("7" for _ in columns.split(","))
    await connection.execute(
        text(
            f"INSERT INTO {table} (tenant_id, shopify_id, {columns}, source, synced_at)"
            f" VALUES (1, :id, {values}, 'webhook', now())"
        ),
        {"id": shopify_id},
    )


@pytest.mark.parametrize("revision", sorted(CASES))
async def test_an_index_migration_lets_writes_go_on_while_it_builds(
    database: str, revision: str
) -> None:
    table, columns, index = CASES[revision]
    before = f"{int(revision) - 1:04d}"
    await asyncio.to_thread(migrations.upgrade, database, before)
    engine = create_engine(database)
    try:
        async with engine.begin() as connection:
            await _add_store(connection)
        # A batch in flight when the migration starts: it has written and not committed.
        async with engine.connect() as writer:
            await writer.begin()
            await _write(writer, table, columns, 1)
            writer_pid = await writer.scalar(text("SELECT pg_backend_pid()"))
            migration = asyncio.create_task(
                asyncio.to_thread(migrations.upgrade, database, revision)
            )
            await blocked_by(
                engine, writer_pid, migration, "the migration never waited on the writer"
            )
            # The next batch writes while the migration waits: behind a plain CREATE INDEX
            # it would queue until the lock timeout.
            async with engine.begin() as next_batch:
                await next_batch.execute(text("SET LOCAL lock_timeout = '2s'"))
                await _write(next_batch, table, columns, 2)
            await writer.commit()
        await migration
        async with engine.connect() as connection:
            indexes = await _indexes(connection, table)
            rows = await connection.scalar(text(f"SELECT count(*) FROM {table}"))
    finally:
        await engine.dispose()
    assert indexes[index] == (True, False)  # built, valid, and not the unique one below
    assert rows == 2


async def _indexes(connection: AsyncConnection, table: str) -> dict[str, tuple[bool, bool]]:
    """Each index of `table`: whether it is valid, and whether it is unique."""
    found = await connection.execute(
        text(
            "SELECT c.relname, i.indisvalid, i.indisunique FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = :table"
        ),
        {"table": table},
    )
    return {name: (valid, unique) for name, valid, unique in found.all()}


async def test_an_interrupted_build_is_finished_by_running_the_migration_again(
    database: str,
) -> None:
    """A concurrent build that fails (cancelled, out of disk, a deadlock) leaves an invalid
    index under the migration's name; the migration's next run replaces it."""
    table, columns, index = CASES["0018"]
    await asyncio.to_thread(migrations.upgrade, database, "0017")
    engine = create_engine(database, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await _add_store(connection)
            for shopify_id in (1, 2):
                await _write(connection, table, columns, shopify_id)
            # A build under the index's name that fails on its second scan: what an
            # interrupted run leaves.
            with pytest.raises(Exception, match="could not create unique index"):
                await connection.execute(
                    text(f"CREATE UNIQUE INDEX CONCURRENTLY {index} ON {table} (tenant_id)")
                )
            assert (await _indexes(connection, table))[index] == (False, True)
        await asyncio.to_thread(migrations.upgrade, database, "0018")
        async with engine.connect() as connection:
            assert (await _indexes(connection, table))[index] == (True, False)
    finally:
        await engine.dispose()


async def test_an_index_already_built_is_kept_when_the_migration_runs_again(
    database: str,
) -> None:
    """0015 builds two indexes, each committed on its own: a run interrupted between them
    leaves the first built and valid, and the next run must not build it again (on a large
    table, a second full scan for nothing)."""
    first, second = "ix_order_line_items_variant", "ix_order_line_items_product"
    await asyncio.to_thread(migrations.upgrade, database, "0014")
    engine = create_engine(database, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            # What the interrupted run built: 0015's first index, as 0015 defines it.
            await connection.execute(
                text(
                    f"CREATE INDEX CONCURRENTLY {first} ON order_line_items"
                    " (tenant_id, variant_shopify_id) WHERE variant_shopify_id IS NOT NULL"
                )
            )
            built = await connection.scalar(text(f"SELECT '{first}'::regclass::oid"))
        await asyncio.to_thread(migrations.upgrade, database, "0015")
        async with engine.connect() as connection:
            kept = await connection.scalar(text(f"SELECT '{first}'::regclass::oid"))
            indexes = await _indexes(connection, "order_line_items")
    finally:
        await engine.dispose()
    assert kept == built
    assert indexes[first] == (True, False)
    assert indexes[second] == (True, False)


def test_on_sqlite_an_index_left_by_an_interrupted_run_is_built_again(tmp_path: Path) -> None:
    """SQLite builds the same indexes plainly, each committed on its own too: the next run
    must not stop at the index the interrupted one left ("already exists")."""
    database = tmp_path / "interrupted.db"
    url = f"sqlite+aiosqlite:///{database}"
    migrations.upgrade(url, "0014")
    with closing(sqlite3.connect(database)) as connection, connection:
        connection.execute(
            "CREATE INDEX ix_order_line_items_variant ON order_line_items"
            " (tenant_id, variant_shopify_id) WHERE variant_shopify_id IS NOT NULL"
        )
    migrations.upgrade(url, "0015")
    with closing(sqlite3.connect(database)) as connection:
        names = {
            name
            for (name,) in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name = 'order_line_items'"
            )
        }
    assert {"ix_order_line_items_variant", "ix_order_line_items_product"} <= names
