"""tenants.admin_base_url: a store's own Admin API base (a simulated store's simulator).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: every existing store keeps going to SHOPIFY_ADMIN_BASE_URL.
    op.add_column("tenants", sa.Column("admin_base_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("admin_base_url")
