"""Initial schema: tenants, customers, products, orders, webhook_events, compliance_requests.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Plain types, frozen here, so later changes to models/types.py cannot rewrite history.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
MONEY = sa.Numeric(20, 4).with_variant(sa.String(40), "sqlite")
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _shop_record_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("shopify_id", sa.BigInteger(), nullable=False),
        sa.Column("shopify_created_at", TIMESTAMP),
        sa.Column("shopify_updated_at", TIMESTAMP),
        sa.Column("deleted_at", TIMESTAMP),
        sa.Column("raw", JSON_DOC),
        sa.Column("synced_at", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("shop_domain", sa.String(255), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("webhook_secrets_encrypted", sa.Text()),
        sa.Column("access_token_encrypted", sa.Text()),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("uninstalled_at", TIMESTAMP),
        sa.Column("redacted_at", TIMESTAMP),
    )
    op.create_table(
        "customers",
        *_shop_record_columns(),
        sa.Column("email", sa.String(320)),
        sa.Column("first_name", sa.Text()),
        sa.Column("last_name", sa.Text()),
        sa.Column("phone", sa.String(64)),
        sa.Column("state", sa.String(32)),
        sa.Column("amount_spent", MONEY),
        sa.Column("currency", sa.String(8)),
        sa.Column("orders_count", sa.BigInteger()),
        sa.UniqueConstraint("tenant_id", "shopify_id", name="uq_customers_shop_id"),
    )
    op.create_table(
        "products",
        *_shop_record_columns(),
        sa.Column("title", sa.Text()),
        sa.Column("handle", sa.Text()),
        sa.Column("status", sa.String(32)),
        sa.Column("vendor", sa.Text()),
        sa.Column("product_type", sa.Text()),
        sa.Column("tags", sa.Text()),
        sa.UniqueConstraint("tenant_id", "shopify_id", name="uq_products_shop_id"),
    )
    op.create_table(
        "orders",
        *_shop_record_columns(),
        sa.Column("name", sa.String(255)),
        sa.Column("email", sa.String(320)),
        sa.Column("customer_shopify_id", sa.BigInteger()),
        sa.Column("currency", sa.String(8)),
        sa.Column("total_price", MONEY),
        sa.Column("subtotal_price", MONEY),
        sa.Column("financial_status", sa.String(32)),
        sa.Column("fulfillment_status", sa.String(32)),
        sa.Column("cancelled_at", TIMESTAMP),
        sa.Column("processed_at", TIMESTAMP),
        sa.Column("edited_at", TIMESTAMP),
        sa.UniqueConstraint("tenant_id", "shopify_id", name="uq_orders_shop_id"),
    )
    op.create_index("ix_orders_customer_shopify_id", "orders", ["customer_shopify_id"])
    op.create_table(
        "webhook_events",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE")),
        sa.Column("shop_domain", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(255)),
        sa.Column("webhook_id", sa.String(255)),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("api_version", sa.String(32)),
        sa.Column("triggered_at", TIMESTAMP),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("processed_at", TIMESTAMP),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("payload", JSON_DOC),
        sa.UniqueConstraint("shop_domain", "topic", "dedupe_key", name="uq_webhook_events_dedupe"),
    )
    op.create_index("ix_webhook_events_status", "webhook_events", ["status"])
    op.create_index(
        "ix_webhook_events_tenant_received", "webhook_events", ["tenant_id", "received_at"]
    )
    op.create_table(
        "compliance_requests",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "webhook_event_id", BIG_ID, sa.ForeignKey("webhook_events.id", ondelete="SET NULL")
        ),
        sa.Column("topic", sa.String(100), nullable=False),
        sa.Column("customer_shopify_id", sa.BigInteger()),
        sa.Column("payload", JSON_DOC),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("completed_at", TIMESTAMP),
    )
    op.create_index(
        "ix_compliance_requests_tenant_customer",
        "compliance_requests",
        ["tenant_id", "customer_shopify_id"],
    )


def downgrade() -> None:
    for table in ("compliance_requests", "webhook_events", "orders", "products", "customers"):
        op.drop_table(table)
    op.drop_table("tenants")
