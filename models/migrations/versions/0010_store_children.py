"""The whole store as tables: line items, refunds, transactions, fulfillments, variants,
addresses, inventory items and levels, metafields; and the parents' new columns (issue #13).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def money() -> sa.types.TypeEngine[Any]:
    # models.types.Money: exact NUMERIC on PostgreSQL, decimal text on SQLite.
    return sa.Numeric().with_variant(sa.String(40), "sqlite")


def _text(length: int | None = None) -> sa.types.TypeEngine[Any]:
    return sa.String(length) if length else sa.Text()


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

# Whoever may write customers (the service's role, as README's "Database roles" says) may
# write the new tables: the grant they would otherwise lack until the operator ran it again.
GRANTS = """
DO $$
DECLARE grantee_name text;
BEGIN
    FOR grantee_name IN
        SELECT DISTINCT grantee FROM information_schema.role_table_grants
        WHERE table_schema = current_schema() AND table_name = 'customers'
          AND privilege_type = 'INSERT' AND grantee <> current_user
    LOOP
        EXECUTE format(
            'GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO %I', grantee_name
        );
        EXECUTE format(
            'GRANT USAGE, SELECT ON SEQUENCE %s TO %I',
            pg_get_serial_sequence('{table}', 'id'), grantee_name
        );
    END LOOP;
END $$
"""


def _record_columns() -> list[sa.Column[Any]]:
    """What every shop-data table has (models.tables.ShopRecord)."""
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


def _big(name: str, nullable: bool = True) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger(), nullable=nullable)


def _tables() -> dict[str, tuple[list[sa.Column[Any]], tuple[str, ...] | None]]:
    """Each ShopRecord table: its own columns and its parent index (name, key columns)."""
    return {
        "order_line_items": (
            [
                _big("order_shopify_id", nullable=False),
                _big("product_shopify_id"),
                _big("variant_shopify_id"),
                sa.Column("sku", _text()),
                sa.Column("title", _text()),
                sa.Column("variant_title", _text()),
                sa.Column("vendor", _text()),
                _big("quantity"),
                _big("current_quantity"),
                sa.Column("price", money()),
                sa.Column("total_discount", money()),
                sa.Column("currency", _text(8)),
                sa.Column("taxable", sa.Boolean()),
                sa.Column("requires_shipping", sa.Boolean()),
                sa.Column("gift_card", sa.Boolean()),
                _big("fulfillable_quantity"),
                sa.Column("fulfillment_status", _text(32)),
            ],
            ("ix_order_line_items_order", "order_shopify_id"),
        ),
        "order_refunds": (
            [
                _big("order_shopify_id", nullable=False),
                sa.Column("note", _text()),
                sa.Column("processed_at", TIMESTAMP),
                sa.Column("total_refunded", money()),
                sa.Column("currency", _text(8)),
            ],
            ("ix_order_refunds_order", "order_shopify_id"),
        ),
        "order_refund_line_items": (
            [
                _big("refund_shopify_id", nullable=False),
                _big("order_shopify_id"),
                _big("line_item_shopify_id"),
                _big("location_shopify_id"),
                _big("quantity"),
                sa.Column("subtotal", money()),
                sa.Column("total_tax", money()),
                sa.Column("currency", _text(8)),
                sa.Column("restock_type", _text(32)),
            ],
            ("ix_order_refund_line_items_refund", "refund_shopify_id"),
        ),
        "order_transactions": (
            [
                _big("order_shopify_id", nullable=False),
                sa.Column("kind", _text(32)),
                sa.Column("status", _text(32)),
                sa.Column("gateway", _text()),
                sa.Column("amount", money()),
                sa.Column("currency", _text(8)),
                _big("parent_shopify_id"),
                sa.Column("processed_at", TIMESTAMP),
                sa.Column("error_code", _text(64)),
                sa.Column("test", sa.Boolean()),
            ],
            ("ix_order_transactions_order", "order_shopify_id"),
        ),
        "fulfillments": (
            [
                _big("order_shopify_id", nullable=False),
                sa.Column("name", _text(255)),
                sa.Column("status", _text(32)),
                sa.Column("shipment_status", _text(32)),
                _big("location_shopify_id"),
                sa.Column("tracking_company", _text()),
                sa.Column("tracking_numbers", JSON_DOC),
                sa.Column("tracking_urls", JSON_DOC),
            ],
            ("ix_fulfillments_order", "order_shopify_id"),
        ),
        "product_variants": (
            [
                _big("product_shopify_id", nullable=False),
                sa.Column("title", _text()),
                sa.Column("sku", _text()),
                sa.Column("barcode", _text()),
                sa.Column("price", money()),
                sa.Column("compare_at_price", money()),
                sa.Column("position", sa.Integer()),
                _big("inventory_item_shopify_id"),
                _big("inventory_quantity"),
                sa.Column("selected_options", JSON_DOC),
                sa.Column("taxable", sa.Boolean()),
            ],
            ("ix_product_variants_product", "product_shopify_id"),
        ),
        "customer_addresses": (
            [
                _big("customer_shopify_id", nullable=False),
                sa.Column("first_name", _text()),
                sa.Column("last_name", _text()),
                sa.Column("name", _text()),
                sa.Column("company", _text()),
                sa.Column("address1", _text()),
                sa.Column("address2", _text()),
                sa.Column("city", _text()),
                sa.Column("province", _text()),
                sa.Column("province_code", _text(16)),
                sa.Column("country", _text()),
                sa.Column("country_code", _text(8)),
                sa.Column("zip", _text(32)),
                sa.Column("phone", _text(64)),
                sa.Column("is_default", sa.Boolean()),
            ],
            ("ix_customer_addresses_customer", "customer_shopify_id"),
        ),
        "inventory_items": (
            [
                sa.Column("sku", _text()),
                sa.Column("tracked", sa.Boolean()),
                sa.Column("requires_shipping", sa.Boolean()),
                sa.Column("cost", money()),
                sa.Column("currency", _text(8)),
                sa.Column("country_code_of_origin", _text(8)),
                sa.Column("province_code_of_origin", _text(16)),
                sa.Column("harmonized_system_code", _text(32)),
            ],
            None,
        ),
        "metafields": (
            [
                sa.Column("owner_type", _text(32), nullable=False),
                _big("owner_shopify_id", nullable=False),
                sa.Column("namespace", _text(255), nullable=False),
                sa.Column("key", _text(255), nullable=False),
                sa.Column("type", _text(100)),
                sa.Column("value", _text()),
            ],
            ("ix_metafields_owner", "owner_type", "owner_shopify_id"),
        ),
    }


PARENT_COLUMNS: dict[str, list[sa.Column[Any]]] = {
    "orders": [
        sa.Column("presentment_currency", _text(8)),
        sa.Column("total_price_presentment", money()),
        sa.Column("current_total_price", money()),
        sa.Column("total_tax", money()),
        sa.Column("total_discounts", money()),
        sa.Column("tags", _text()),
        sa.Column("note", _text()),
        sa.Column("cancel_reason", _text(32)),
        sa.Column("closed_at", TIMESTAMP),
        sa.Column("source_name", _text(255)),
        sa.Column("test", sa.Boolean()),
        sa.Column("shipping_country_code", _text(8)),
        sa.Column("shipping_province_code", _text(16)),
    ],
    "customers": [
        sa.Column("tags", _text()),
        sa.Column("note", _text()),
        sa.Column("verified_email", sa.Boolean()),
        sa.Column("email_marketing_state", _text(32)),
        sa.Column("email_marketing_opt_in_level", _text(32)),
        sa.Column("email_marketing_updated_at", TIMESTAMP),
        sa.Column("sms_marketing_state", _text(32)),
        sa.Column("sms_marketing_opt_in_level", _text(32)),
        sa.Column("sms_marketing_updated_at", TIMESTAMP),
    ],
    "products": [
        sa.Column("published_at", TIMESTAMP),
        sa.Column("category", _text()),
    ],
}


def _isolate(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        # Also for the table's owner (a deployment whose service role owns the tables).
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(POLICY.format(table=table))
        op.execute(GRANTS.format(table=table))


def upgrade() -> None:
    for parent, columns in PARENT_COLUMNS.items():
        with op.batch_alter_table(parent) as batch:
            for column in columns:
                batch.add_column(column)
    for table, (columns, parent_index) in _tables().items():
        op.create_table(
            table,
            *_record_columns(),
            *columns,
            sa.UniqueConstraint("tenant_id", "shopify_id", name=f"uq_{table}_shop_id"),
        )
        op.create_index(f"ix_{table}_tenant_updated", table, ["tenant_id", "shopify_updated_at"])
        if parent_index:
            name, *keys = parent_index
            op.create_index(name, table, ["tenant_id", *keys])
        _isolate(table)
    op.create_table(
        "inventory_levels",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column(
            "tenant_id", BIG_ID, sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False
        ),
        _big("inventory_item_shopify_id", nullable=False),
        _big("location_shopify_id", nullable=False),
        _big("available"),
        _big("on_hand"),
        _big("committed"),
        _big("incoming"),
        sa.Column("shopify_created_at", TIMESTAMP),
        sa.Column("shopify_updated_at", TIMESTAMP),
        sa.Column("deleted_at", TIMESTAMP),
        sa.Column("raw", JSON_DOC),
        sa.Column("synced_at", TIMESTAMP, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.UniqueConstraint(
            "tenant_id",
            "inventory_item_shopify_id",
            "location_shopify_id",
            name="uq_inventory_levels_item_location",
        ),
    )
    op.create_index(
        "ix_inventory_levels_tenant_updated",
        "inventory_levels",
        ["tenant_id", "shopify_updated_at"],
    )
    op.create_index(
        "ix_inventory_levels_tenant_location",
        "inventory_levels",
        ["tenant_id", "location_shopify_id"],
    )
    _isolate("inventory_levels")


def downgrade() -> None:
    op.drop_table("inventory_levels")
    for table in reversed(list(_tables())):
        op.drop_table(table)
    for parent, columns in PARENT_COLUMNS.items():
        with op.batch_alter_table(parent) as batch:
            for column in columns:
                batch.drop_column(column.name)
