"""Dashboard indexes (PostgreSQL): orders and refunds by store and when they happened.

The store page's date range, chart, newest-order probe and recent orders all read orders by
`COALESCE(processed_at, shopify_created_at)`: an index on that expression lets a range read
only its own rows (and the newest/oldest order one index probe) on a store of millions.

Revision ID: 0013
Revises: 0011 (0012 is another change in flight: the integrator sets this to "0012" when both
are merged, so the history stays one line)
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # PostgreSQL only, as in models/tables.py: SQLite stores are small, and SQLAlchemy cannot
    # reflect SQLite's expression indexes.
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_orders_tenant_happened",
        "orders",
        ["tenant_id", sa.text("COALESCE(processed_at, shopify_created_at)")],
    )
    op.create_index(
        "ix_order_refunds_tenant_happened",
        "order_refunds",
        ["tenant_id", sa.text("COALESCE(processed_at, shopify_created_at)")],
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_order_refunds_tenant_happened", table_name="order_refunds")
    op.drop_index("ix_orders_tenant_happened", table_name="orders")
