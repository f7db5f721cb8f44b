"""Row-level security scoping (PostgreSQL). Every transaction that reads or writes shop data
names its tenant with `use_tenant`; the few that must span stores say so with
`use_all_tenants`, the one narrow, greppable path for cross-tenant work.

The policies (migration 0004) apply to the service's database role, which neither owns the
tables nor is a superuser, so a query that forgets its tenant filter still sees one store.
Both settings are transaction-local (`set_config(..., true)`): nothing leaks to the next
transaction on a pooled connection. On SQLite there is no RLS and these do nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, cast, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker
from sqlalchemy.sql import Select, Subquery

from models.tables import Base


def _tenant_tables() -> tuple[str, ...]:
    return tuple(table.name for table in Base.metadata.sorted_tables if "tenant_id" in table.c)


# Tables whose rows carry tenant_id and are guarded by the tenant_isolation policy: every
# table of the metadata with that column, so a new table cannot be forgotten here.
TENANT_TABLES = _tenant_tables()

_SCOPE = text(
    "SELECT set_config('app.tenant_id', :tenant, true), "
    "set_config('app.cross_tenant', :cross, true)"
)


def _postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def store_row(tenant: Any) -> Subquery:
    """The store as the column `id` of a one-row subquery kept apart (OFFSET 0), for a lookup
    to compare `tenant_id` with rather than with the value (`of_store` compares with its
    value as a scalar subquery; a statement joining it keeps it as a row). The planner then
    costs the lookup for a store of average size. Given the value, it reads the table's
    statistics, and a store they predate (a shared database analysed before the store's first
    rows, a backfill filling a table faster than autovacuum analyses it) counts as holding
    none: every index that starts with the store then costs the same, and one that orders by
    something else (refunds' (store, processed), orders' (store, updated)) was chosen over the
    one the lookup needs, reading the store's every row for each id looked up. `tenant`: the
    store's id, or a bound parameter holding it."""
    return _store(tenant).subquery()


def _store(tenant: Any) -> Select[int]:
    return select(cast(tenant, BigInteger()).label("id")).offset(literal_column("0"))


def of_store(tenant_id: Any, tenant: Any) -> ColumnElement[bool]:
    """`tenant_id` (a table's column) is the store `tenant`, compared with `store_row`'s
    value as a scalar subquery: what every lookup of a store's rows by something other than
    its conflict key says, where `tenant_id == tenant` would trust the statistics. (Scalar,
    not joined: a DELETE may say it too, and SQLite's DELETE takes no second table.)"""
    same: ColumnElement[bool] = tenant_id == _store(tenant).scalar_subquery()
    return same


async def use_tenant(session: AsyncSession, tenant_id: int) -> None:
    """Scope the current transaction to one store's rows."""
    if _postgres(session):
        await session.execute(_SCOPE, {"tenant": str(tenant_id), "cross": "off"})


async def use_all_tenants(session: AsyncSession) -> None:
    """Lift the scope for the current transaction: admin views, workers' queue sweeps, the CLI,
    and lookups by id that check access themselves. Keep every caller easy to justify."""
    if _postgres(session):
        await session.execute(_SCOPE, {"tenant": "", "cross": "on"})


@asynccontextmanager
async def tenant_transaction(
    sessions: async_sessionmaker[AsyncSession], tenant_id: int
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction scoped to one store: committed when the block ends,
    rolled back when it raises."""
    async with sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        yield session


@asynccontextmanager
async def cross_store_transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session in one transaction that spans stores (`use_all_tenants`): keep each caller
    easy to justify, as for the primitive."""
    async with sessions() as session, session.begin():
        await use_all_tenants(session)
        yield session


async def rls_bypass_reason(connection: AsyncConnection) -> str | None:
    """Why row-level security would not bind the role this connection uses, or None.

    A superuser and a BYPASSRLS role skip every policy; a role that owns a table (or inherits
    its owner's rights) skips that table's policy unless the table FORCEs row-level security;
    and a table with row-level security disabled has no policy to apply. The tables checked
    are those of the database with a `tenant_id` column, and those the models declare (a
    table missing from the database fails the schema check, not this one)."""
    if connection.dialect.name != "postgresql":
        return None
    role = (
        await connection.execute(
            text(
                "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
            )
        )
    ).one()
    if role.rolsuper:
        return f"database role {role.rolname} is a superuser"
    if role.rolbypassrls:
        return f"database role {role.rolname} has BYPASSRLS"
    tables = (
        await connection.execute(
            text(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                "pg_has_role(current_user, c.relowner, 'USAGE') AS owns "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND ("
                "c.relname = ANY(:tables) OR EXISTS (SELECT 1 FROM pg_attribute a "
                "WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)) "
                "ORDER BY c.relname"
            ),
            {"tables": list(TENANT_TABLES)},
        )
    ).all()
    disabled = [table.relname for table in tables if not table.relrowsecurity]
    if disabled:
        return f"row-level security is disabled on {', '.join(disabled)}"
    owned = [table.relname for table in tables if table.owns and not table.relforcerowsecurity]
    if owned:
        return (
            f"database role {role.rolname} owns {', '.join(owned)} "
            "(without FORCE ROW LEVEL SECURITY)"
        )
    return None
