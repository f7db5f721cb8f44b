"""Subscriptions as last seen, reconcile runs, dedupe hits per event, targeted sync windows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NEW_TENANT_TABLES = ("webhook_subscriptions", "reconcile_runs")
SHOP_TABLES = ("customers", "products", "orders")

# The same policy as revision 0004.
POLICY = """
CREATE POLICY tenant_isolation ON {table}
    USING (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
    WITH CHECK (
        tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::bigint
        OR current_setting('app.cross_tenant', true) = 'on'
    )
"""


def _tenant_id() -> sa.Column[Any]:
    return sa.Column(
        "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("watchdog_checked_at", TIMESTAMP))
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(
            sa.Column("duplicate_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_duplicate_at", TIMESTAMP))
    with op.batch_alter_table("sync_jobs") as batch:
        batch.add_column(sa.Column("until", TIMESTAMP))
        batch.add_column(
            sa.Column("trigger", sa.String(16), nullable=False, server_default="manual")
        )
    op.create_table(
        "webhook_subscriptions",
        sa.Column("id", BIG_ID, primary_key=True),
        _tenant_id(),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("shopify_gid", sa.String(255)),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("checked_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("tenant_id", "topic", "uri", name="uq_webhook_subscriptions_topic"),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", BIG_ID, primary_key=True),
        _tenant_id(),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("report", JSON_DOC, nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP),
    )
    op.create_index(
        "ix_reconcile_runs_tenant_started", "reconcile_runs", ["tenant_id", "started_at"]
    )
    op.drop_index("ix_webhook_events_status", "webhook_events")
    op.create_index(
        "ix_webhook_events_unprocessed",
        "webhook_events",
        ["tenant_id", "status", "received_at"],
        postgresql_where=sa.text("status <> 'processed'"),
        sqlite_where=sa.text("status <> 'processed'"),
    )
    # Delivery health reads each store's events by topic and time.
    op.create_index(
        "ix_webhook_events_tenant_topic_received",
        "webhook_events",
        ["tenant_id", "topic", "received_at"],
    )
    for table in SHOP_TABLES:
        op.create_index(f"ix_{table}_tenant_updated", table, ["tenant_id", "shopify_updated_at"])
    if op.get_bind().dialect.name == "postgresql":
        for table in NEW_TENANT_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            op.execute(POLICY.format(table=table))


def downgrade() -> None:
    for table in SHOP_TABLES:
        op.drop_index(f"ix_{table}_tenant_updated", table)
    op.drop_index("ix_webhook_events_tenant_topic_received", "webhook_events")
    op.drop_index("ix_webhook_events_unprocessed", "webhook_events")
    op.create_index("ix_webhook_events_status", "webhook_events", ["status"])
    op.drop_index("ix_reconcile_runs_tenant_started", "reconcile_runs")
    for table in NEW_TENANT_TABLES:
        op.drop_table(table)
    with op.batch_alter_table("sync_jobs") as batch:
        batch.drop_column("trigger")
        batch.drop_column("until")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("watchdog_checked_at")
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("last_duplicate_at")
        batch.drop_column("duplicate_count")
