"""Dashboard users, their stores, login throttling, and an index for dashboard windows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("last_login_at", TIMESTAMP),
        sa.Column("disabled_at", TIMESTAMP),
    )
    op.create_table(
        "user_tenants",
        sa.Column(
            "user_id", BIG_ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TIMESTAMP, nullable=False),
        sa.Column("locked_until", TIMESTAMP),
    )
    op.create_index("ix_orders_tenant_processed", "orders", ["tenant_id", "processed_at"])


def downgrade() -> None:
    op.drop_index("ix_orders_tenant_processed", "orders")
    for table in ("login_throttles", "user_tenants", "users"):
        op.drop_table(table)
