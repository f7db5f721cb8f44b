"""Alembic, driven from code so that `serve`, `migrate`, `/readyz` and tests share one path."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would choke on a '%' in a password.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking; call it from synchronous code or a worker thread."""
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    return heads[0]


async def current_revision(connection: AsyncConnection) -> str | None:
    return await connection.run_sync(
        lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
    )
