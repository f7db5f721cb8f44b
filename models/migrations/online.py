"""Index changes a migration makes while the service keeps writing (PostgreSQL).

A plain CREATE INDEX holds a lock that blocks every write to its table until the index is
built, and behind it every webhook batch writing there: minutes on a table of millions of
rows, each batch ending at the statement timeout with the 503 Shopify retries. CREATE INDEX
CONCURRENTLY lets writes go on while it builds; it cannot run inside a transaction, so it runs
in an autocommit block (the migrations before it are committed first). A build that was
interrupted leaves an invalid index behind, which is dropped first, so running the migration
again finishes it; an index already built and valid under the name is kept, so a revision
interrupted between two of its indexes does not build the first again. SQLite builds the index
as usual (one left by an interrupted run is dropped and built again)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op


def create_index_online(name: str, table: str, columns: Sequence[str], **options: Any) -> None:
    with op.get_context().autocommit_block():
        if op.get_bind().dialect.name != "postgresql":
            op.drop_index(name, table_name=table, if_exists=True)
        else:
            valid = _validity(name)
            if valid:
                return
            if valid is False:
                op.drop_index(name, table_name=table, postgresql_concurrently=True)
        op.create_index(name, table, list(columns), postgresql_concurrently=True, **options)


def _validity(name: str) -> bool | None:
    """Whether the index `name` in the current schema is valid; None when there is none."""
    valid: bool | None = op.get_bind().scalar(
        sa.text(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = :name AND c.relnamespace = current_schema()::regnamespace"
        ),
        {"name": name},
    )
    return valid


def drop_index_online(name: str, table: str) -> None:
    with op.get_context().autocommit_block():
        op.drop_index(name, table_name=table, if_exists=True, postgresql_concurrently=True)
