"""Line items by the product and the variant they name.

A product update that drops a variant, and a product's deletion, null the line items that
name it (`handlers.children.forget_references`, as Shopify's own answers do from then on).
Without these indexes each such write read every line item of the store: measured with the
webhook benchmark, PostgreSQL spent several milliseconds per webhook, growing with the
store, and on a store with millions of line items one product edit would pass the five
seconds a webhook has. Partial: most lookups are for ids that are set, and a line item of a
custom sale names neither.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa

from models.migrations.online import create_index_online, drop_index_online

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_order_line_items_variant": "variant_shopify_id",
    "ix_order_line_items_product": "product_shopify_id",
}


def upgrade() -> None:
    for name, column in INDEXES.items():
        create_index_online(
            name,
            "order_line_items",
            ["tenant_id", column],
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
        )


def downgrade() -> None:
    for name in INDEXES:
        drop_index_online(name, "order_line_items")
