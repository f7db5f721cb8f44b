"""Dashboard indexes: orders and refunds by store and when they happened.

The store page's date ranges read orders (and refunds) by `processed_at`, else
`shopify_created_at`. `ix_orders_tenant_processed` serves the first half; these serve the
rest: orders without processed_at by created_at (partial, so as small as that set), and
refunds the same way. The queries compare plain columns, never COALESCE(...): under
row-level security PostgreSQL takes only leakproof conditions as index conditions, and a
COALESCE is not one, so an expression index on it went unused for the app's role.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNPROCESSED = sa.text("processed_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_orders_tenant_created_unprocessed",
        "orders",
        ["tenant_id", "shopify_created_at"],
        postgresql_where=UNPROCESSED,
        sqlite_where=UNPROCESSED,
    )
    op.create_index(
        "ix_order_refunds_tenant_processed", "order_refunds", ["tenant_id", "processed_at"]
    )
    op.create_index(
        "ix_order_refunds_tenant_created_unprocessed",
        "order_refunds",
        ["tenant_id", "shopify_created_at"],
        postgresql_where=UNPROCESSED,
        sqlite_where=UNPROCESSED,
    )


def downgrade() -> None:
    op.drop_index("ix_order_refunds_tenant_created_unprocessed", table_name="order_refunds")
    op.drop_index("ix_order_refunds_tenant_processed", table_name="order_refunds")
    op.drop_index("ix_orders_tenant_created_unprocessed", table_name="orders")
