"""Backfill: sync_jobs, api_tokens, expiring-token columns on tenants, procrastinate's queue.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ACTIVE = "status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("access_token_expires_at", TIMESTAMP))
        batch.add_column(sa.Column("refresh_token_encrypted", sa.Text()))
        batch.add_column(sa.Column("refresh_token_expires_at", TIMESTAMP))
        batch.add_column(
            sa.Column("credentials_status", sa.String(16), nullable=False, server_default="ok")
        )
        batch.add_column(sa.Column("credentials_error", sa.Text()))
    op.create_table(
        "sync_jobs",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resources", JSON_DOC, nullable=False),
        sa.Column("progress", JSON_DOC, nullable=False),
        sa.Column("since", TIMESTAMP),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("finished_at", TIMESTAMP),
        sa.Column("heartbeat_at", TIMESTAMP),
    )
    op.create_index(
        "uq_sync_jobs_one_active_per_tenant",
        "sync_jobs",
        ["tenant_id"],
        unique=True,
        postgresql_where=sa.text(ACTIVE),
        sqlite_where=sa.text(ACTIVE),
    )
    op.create_index("ix_sync_jobs_tenant_created", "sync_jobs", ["tenant_id", "created_at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_used_at", TIMESTAMP),
        sa.Column("revoked_at", TIMESTAMP),
    )
    if op.get_bind().dialect.name == "postgresql":
        # procrastinate's tables, functions and triggers, at the version pinned in pyproject.
        from procrastinate.schema import SchemaManager
        from sqlalchemy.util import await_only

        # The schema is many statements; asyncpg runs a multi-statement script only through
        # its own simple-query path, not through a prepared statement.
        dbapi_connection = op.get_bind().connection.dbapi_connection
        assert dbapi_connection is not None  # an open migration connection
        driver = dbapi_connection.driver_connection
        await_only(driver.execute(SchemaManager.get_schema()))


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("sync_jobs")
    with op.batch_alter_table("tenants") as batch:
        for column in (
            "credentials_error",
            "credentials_status",
            "refresh_token_expires_at",
            "refresh_token_encrypted",
            "access_token_expires_at",
        ):
            batch.drop_column(column)
