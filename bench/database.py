"""The benchmarks' databases as README's "Database roles" sets them up: the service's role,
its grants, and URLs that connect as it (row-level security binds what it writes)."""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url

APP_ROLE = "receiver_app"


def dsn(url: str) -> str:
    """The SQLAlchemy URL as a plain libpq DSN, for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def run_statements(url: str, *statements: str) -> list[list[asyncpg.Record]]:
    """Each statement's rows, in order, on one connection of its own."""
    connection = await asyncpg.connect(dsn(url))
    try:
        return [await connection.fetch(statement) for statement in statements]
    finally:
        await connection.close()


def as_role(url: str, role: str | None) -> str:
    if not role:
        return url
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


def app_role_grants(database: str, role: str) -> list[str]:
    """What README's "Database roles" asks of an operator (as tests/conftest.py does), for a
    benchmark database's tables as they are now: the role made if missing, and its grants."""
    return [
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        f"'{role}') THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; "
        "END IF; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f'GRANT CONNECT ON DATABASE "{database}" TO {role}',
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {role}",
    ]
