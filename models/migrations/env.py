"""Alembic environment: runs migrations over the same async engine the service uses."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from models.engine import create_engine
from models.tables import Base, is_inbox_partition

target_metadata = Base.metadata


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    # procrastinate owns its tables (created by revision 0002); leave them out of comparisons,
    # and the inbox's partitions (revision 0016), which the parent's model describes.
    if type_ == "table":
        return not (
            (name is not None and name.startswith("procrastinate_")) or is_inbox_partition(name)
        )
    return not is_inbox_partition(parent_names.get("table_name"))


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # SQLite alters a table by copying it and dropping the original, and with foreign keys
        # on, that DROP cascades: recreating `tenants` would delete every row referring to a
        # store. The pragma only takes effect outside a transaction, so it goes to the driver
        # before Alembic begins one; the foreign keys are checked once the copies are done.
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
        include_name=_ours,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left rows with a missing parent: {broken[:10]}")


async def _run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: sqlalchemy.url is not set (models.migrate sets it)")
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `shopify-receiver migrate`")
asyncio.run(_run_async())
