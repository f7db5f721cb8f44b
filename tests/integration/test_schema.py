"""The migration and the models describe the same schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from models import Base


def _ours(name, type_, parent_names):
    return not (type_ == "table" and name and name.startswith("procrastinate_"))


async def test_migrations_match_the_models(backend):
    def diff(sync_connection):
        context = MigrationContext.configure(
            sync_connection, opts={"include_name": _ours, "compare_type": True}
        )
        return compare_metadata(context, Base.metadata)

    async with backend.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    assert differences == []
