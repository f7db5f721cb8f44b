"""Dialect-aware INSERT ... ON CONFLICT, the one statement every idempotent write is built on."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def affected_rows(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched: `session.execute` types its result as a plain Result,
    while what such statements return is a CursorResult, which counts them."""
    return cast(CursorResult[Any], result).rowcount or 0


def insert_on_conflict(session: AsyncSession, table: Table | Any) -> Any:
    """An INSERT for `table` that has `.on_conflict_do_update/_nothing` and `.excluded`."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert support for the {dialect} dialect")
