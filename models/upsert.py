"""Dialect-aware INSERT ... ON CONFLICT, the one statement every idempotent write is built on."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def insert_on_conflict(session: AsyncSession, table: Table | Any) -> Any:
    """An INSERT for `table` that has `.on_conflict_do_update/_nothing` and `.excluded`."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert support for the {dialect} dialect")
