"""Variants by their inventory item.

Every inventory level webhook (`inventory_levels/update`, `/connect`, `/disconnect`, the
topics a busy store sends most: each sale moves stock) recounts the stock of the variants
stocked from its item (`handlers.topics.recount_variant_stock`). Nothing indexed variants by
their item, so each such webhook read the store's every variant, or the table's (20,200 rows
for a store of 20,000 beside another's 200, tests/integration/test_inventory_reads.py).
Partial, as the line items' (0015): a variant read from a body without its item names none.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa

from models.migrations.online import create_index_online, drop_index_online

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_product_variants_inventory_item"
COLUMN = "inventory_item_shopify_id"


def upgrade() -> None:
    create_index_online(
        NAME,
        "product_variants",
        ["tenant_id", COLUMN],
        postgresql_where=sa.text(f"{COLUMN} IS NOT NULL"),
        sqlite_where=sa.text(f"{COLUMN} IS NOT NULL"),
    )


def downgrade() -> None:
    drop_index_online(NAME, "product_variants")
