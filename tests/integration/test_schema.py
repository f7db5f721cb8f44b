"""The migration and the models describe the same schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import Base


async def test_migrations_match_the_models(backend):
    def diff(sync_connection):
        return compare_metadata(MigrationContext.configure(sync_connection), Base.metadata)

    async with backend.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []
