"""Refund line items by their order.

A refund's line items are found by their refund, and also by the order that owns them
(`ChildSet.owner_key`): an orders/delete tombstones them by order
(`handlers.children.tombstone_children`), and customers/redact scrubs them by the customer's
orders. Without this index each of those read the store's every refund line item, or the
table's (20,200 rows for a store of 20,000 beside another's 200, test_tombstone_reads.py).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from models.migrations.online import create_index_online, drop_index_online

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_order_refund_line_items_order"


def upgrade() -> None:
    create_index_online(NAME, "order_refund_line_items", ["tenant_id", "order_shopify_id"])


def downgrade() -> None:
    drop_index_online(NAME, "order_refund_line_items")
