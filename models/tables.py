"""The tables. Their names and key columns are a public contract (see DESIGN.md, Tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from models.statuses import (
    CredentialsStatus,
    EventStatus,
    ReconcileStatus,
    ReconcileTrigger,
    SyncMode,
    SyncStatus,
    SyncTrigger,
    TenantStatus,
    allowed,
)
from models.types import BigId, JSONDocument, Money, UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        datetime: UTCDateTime(),
        Decimal: Money(),
        dict[str, Any]: JSONDocument,
    }


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (
        allowed("tenants", "status", TenantStatus),
        allowed("tenants", "credentials_status", CredentialsStatus),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shop_domain: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=TenantStatus.ACTIVE)
    # Fernet tokens (see models.encryption); never plaintext.
    webhook_secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    uninstalled_at: Mapped[datetime | None]
    redacted_at: Mapped[datetime | None]
    # Expiring offline tokens (SHOPIFY.md, Access tokens): the pair is refreshed before expiry.
    access_token_expires_at: Mapped[datetime | None]
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_expires_at: Mapped[datetime | None]
    credentials_status: Mapped[str] = mapped_column(String(16), default=CredentialsStatus.OK)
    credentials_error: Mapped[str | None] = mapped_column(Text)
    # Last time the watchdog compared this store's subscriptions with the intended ones.
    watchdog_checked_at: Mapped[datetime | None]
    # Shopify's numeric shop id, learnt from the backfill's `shop { id }` or from a signed
    # payload naming both the shop's domain and its id; destructive topics are checked on it.
    shopify_shop_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # The store's own Admin API base, a template like SHOPIFY_ADMIN_BASE_URL (a simulated
    # store's simulator); None sends it to SHOPIFY_ADMIN_BASE_URL (backfill.admin_base).
    admin_base_url: Mapped[str | None] = mapped_column(Text)
    # The access scopes granted at the last install, comma-separated as Shopify sends them;
    # None for a store added by hand (unknown).
    granted_scopes: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Tenant(id={self.id!r}, shop_domain={self.shop_domain!r}, status={self.status!r})"


class ShopRecord(Base):
    """Columns every shop-data table shares: identity, Shopify's clocks, tombstone, raw payload."""

    __abstract__ = True
    # The columns an idempotent upsert conflicts on (its unique constraint), and whether a
    # tombstone is final: Shopify never restores a deleted order, product or customer.
    conflict_key: ClassVar[tuple[str, ...]] = ("tenant_id", "shopify_id")
    revivable: ClassVar[bool] = False

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    shopify_id: Mapped[int] = mapped_column(BigInteger)
    shopify_created_at: Mapped[datetime | None]
    shopify_updated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]
    # When this service last wrote the row, and whether a webhook or the backfill did.
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="webhook")

    @declared_attr
    def tenant_id(cls) -> Mapped[int]:
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=False)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            UniqueConstraint("tenant_id", "shopify_id", name=f"uq_{cls.__tablename__}_shop_id"),
            # Reconcile counts live rows per updated_at window and reads watermarks.
            Index(f"ix_{cls.__tablename__}_tenant_updated", "tenant_id", "shopify_updated_at"),
        )


class Customer(ShopRecord):
    __tablename__ = "customers"

    email: Mapped[str | None] = mapped_column(String(320))
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(32))
    amount_spent: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    orders_count: Mapped[int | None] = mapped_column(BigInteger)
    # When the customers/purchasing_summary that set amount_spent and orders_count occurred:
    # summaries are applied in that order (they carry no updated_at).
    purchasing_summary_at: Mapped[datetime | None]
    tags: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    verified_email: Mapped[bool | None]
    # Marketing consent as Shopify states it (subscribed, not_subscribed, unsubscribed, ...).
    email_marketing_state: Mapped[str | None] = mapped_column(String(32))
    email_marketing_opt_in_level: Mapped[str | None] = mapped_column(String(32))
    email_marketing_updated_at: Mapped[datetime | None]
    sms_marketing_state: Mapped[str | None] = mapped_column(String(32))
    sms_marketing_opt_in_level: Mapped[str | None] = mapped_column(String(32))
    sms_marketing_updated_at: Mapped[datetime | None]


class Product(ShopRecord):
    __tablename__ = "products"

    title: Mapped[str | None] = mapped_column(Text)
    handle: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))
    vendor: Mapped[str | None] = mapped_column(Text)
    product_type: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)
    published_at: Mapped[datetime | None]
    # The Shopify product taxonomy category's full name ("Apparel & Accessories > Hats").
    category: Mapped[str | None] = mapped_column(Text)


class Order(ShopRecord):
    __tablename__ = "orders"

    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    customer_shopify_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    currency: Mapped[str | None] = mapped_column(String(8))
    total_price: Mapped[Decimal | None]
    subtotal_price: Mapped[Decimal | None]
    financial_status: Mapped[str | None] = mapped_column(String(32))
    fulfillment_status: Mapped[str | None] = mapped_column(String(32))
    cancelled_at: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]
    # From orders/edited, whose payload is the edit, not the order.
    edited_at: Mapped[datetime | None]
    # The customer's currency and the total in it (the shop's are `currency`, `total_price`).
    presentment_currency: Mapped[str | None] = mapped_column(String(8))
    total_price_presentment: Mapped[Decimal | None]
    # After edits, refunds and removals; in the shop's currency like the other totals.
    current_total_price: Mapped[Decimal | None]
    total_tax: Mapped[Decimal | None]
    total_discounts: Mapped[Decimal | None]
    tags: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    cancel_reason: Mapped[str | None] = mapped_column(String(32))
    closed_at: Mapped[datetime | None]
    source_name: Mapped[str | None] = mapped_column(String(255))
    test: Mapped[bool | None]
    shipping_country_code: Mapped[str | None] = mapped_column(String(8))
    shipping_province_code: Mapped[str | None] = mapped_column(String(16))


class Location(ShopRecord):
    """A place the store stocks, sells or ships from. Its phone and address are the
    business's, not a customer's: not personal data."""

    __tablename__ = "locations"

    name: Mapped[str | None] = mapped_column(Text)
    address1: Mapped[str | None] = mapped_column(Text)
    address2: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    zip: Mapped[str | None] = mapped_column(String(32))
    province_code: Mapped[str | None] = mapped_column(String(16))
    country_code: Mapped[str | None] = mapped_column(String(8))
    phone: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool | None]


# -- Children: rows that belong to one order, product, customer or inventory item. Each names
# its parent's Shopify id; webhooks and the backfill write them with the parent (handlers/
# children.py). Money is exact with its currency beside it, as on the parents.


class OrderLineItem(ShopRecord):
    __tablename__ = "order_line_items"

    order_shopify_id: Mapped[int] = mapped_column(BigInteger)
    product_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    variant_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    sku: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    variant_title: Mapped[str | None] = mapped_column(Text)
    vendor: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    current_quantity: Mapped[int | None] = mapped_column(BigInteger)
    price: Mapped[Decimal | None]
    total_discount: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    taxable: Mapped[bool | None]
    requires_shipping: Mapped[bool | None]
    gift_card: Mapped[bool | None]
    fulfillable_quantity: Mapped[int | None] = mapped_column(BigInteger)
    fulfillment_status: Mapped[str | None] = mapped_column(String(32))


class OrderRefund(ShopRecord):
    __tablename__ = "order_refunds"

    order_shopify_id: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]
    total_refunded: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))


class OrderRefundLineItem(ShopRecord):
    __tablename__ = "order_refund_line_items"

    refund_shopify_id: Mapped[int] = mapped_column(BigInteger)
    order_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    line_item_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    location_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    quantity: Mapped[int | None] = mapped_column(BigInteger)
    subtotal: Mapped[Decimal | None]
    total_tax: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    restock_type: Mapped[str | None] = mapped_column(String(32))


class OrderTransaction(ShopRecord):
    __tablename__ = "order_transactions"

    order_shopify_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(32))
    gateway: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    parent_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    processed_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    test: Mapped[bool | None]


class Fulfillment(ShopRecord):
    __tablename__ = "fulfillments"

    order_shopify_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(32))
    shipment_status: Mapped[str | None] = mapped_column(String(32))
    location_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    tracking_company: Mapped[str | None] = mapped_column(Text)
    # Lists: one shipment can have several parcels.
    tracking_numbers: Mapped[list[str] | None] = mapped_column(JSONDocument)
    tracking_urls: Mapped[list[str] | None] = mapped_column(JSONDocument)


class ProductVariant(ShopRecord):
    __tablename__ = "product_variants"

    product_shopify_id: Mapped[int] = mapped_column(BigInteger)
    title: Mapped[str | None] = mapped_column(Text)
    sku: Mapped[str | None] = mapped_column(Text)
    barcode: Mapped[str | None] = mapped_column(Text)
    # In the shop's currency: Shopify sends variant prices without one.
    price: Mapped[Decimal | None]
    compare_at_price: Mapped[Decimal | None]
    position: Mapped[int | None] = mapped_column(Integer)
    inventory_item_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    inventory_quantity: Mapped[int | None] = mapped_column(BigInteger)
    # [{"name": "Size", "value": "M"}, ...] in the product's option order.
    selected_options: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument)
    taxable: Mapped[bool | None]


class CustomerAddress(ShopRecord):
    """A customer's address book entry: personal data, emptied by customers/redact."""

    __tablename__ = "customer_addresses"

    customer_shopify_id: Mapped[int] = mapped_column(BigInteger)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    company: Mapped[str | None] = mapped_column(Text)
    address1: Mapped[str | None] = mapped_column(Text)
    address2: Mapped[str | None] = mapped_column(Text)
    city: Mapped[str | None] = mapped_column(Text)
    province: Mapped[str | None] = mapped_column(Text)
    province_code: Mapped[str | None] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(Text)
    country_code: Mapped[str | None] = mapped_column(String(8))
    zip: Mapped[str | None] = mapped_column(String(32))
    phone: Mapped[str | None] = mapped_column(String(64))
    is_default: Mapped[bool | None]


class InventoryItem(ShopRecord):
    """What a variant's stock is counted as (one per variant); its levels are per location."""

    __tablename__ = "inventory_items"

    sku: Mapped[str | None] = mapped_column(Text)
    tracked: Mapped[bool | None]
    requires_shipping: Mapped[bool | None]
    cost: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    country_code_of_origin: Mapped[str | None] = mapped_column(String(8))
    province_code_of_origin: Mapped[str | None] = mapped_column(String(16))
    harmonized_system_code: Mapped[str | None] = mapped_column(String(32))


class InventoryLevel(Base):
    """Stock of one inventory item at one location. Shopify gives a level no id of its own
    (its gid is the location's id with the item's as a query), so the pair is the key, and a
    disconnected level (tombstoned) may be connected again."""

    __tablename__ = "inventory_levels"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id",
            "inventory_item_shopify_id",
            "location_shopify_id",
            name="uq_inventory_levels_item_location",
        ),
        Index("ix_inventory_levels_tenant_updated", "tenant_id", "shopify_updated_at"),
        Index("ix_inventory_levels_tenant_location", "tenant_id", "location_shopify_id"),
    )
    conflict_key: ClassVar[tuple[str, ...]] = (
        "tenant_id",
        "inventory_item_shopify_id",
        "location_shopify_id",
    )
    # A disconnected level is connected again by a later connect or update.
    revivable: ClassVar[bool] = True

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    inventory_item_shopify_id: Mapped[int] = mapped_column(BigInteger)
    location_shopify_id: Mapped[int] = mapped_column(BigInteger)
    available: Mapped[int | None] = mapped_column(BigInteger)
    on_hand: Mapped[int | None] = mapped_column(BigInteger)
    committed: Mapped[int | None] = mapped_column(BigInteger)
    incoming: Mapped[int | None] = mapped_column(BigInteger)
    shopify_created_at: Mapped[datetime | None]
    shopify_updated_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]
    raw: Mapped[dict[str, Any] | None]
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="webhook")


class Metafield(ShopRecord):
    """A metafield of a kept namespace (METAFIELD_NAMESPACES) on an order, product,
    variant or customer; `value` is Shopify's string form, `type` says how to read it."""

    __tablename__ = "metafields"

    owner_type: Mapped[str] = mapped_column(String(32))
    owner_shopify_id: Mapped[int] = mapped_column(BigInteger)
    namespace: Mapped[str] = mapped_column(String(255))
    key: Mapped[str] = mapped_column(String(255))
    type: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[str | None] = mapped_column(Text)


# Children are read and tombstoned by parent: one index per parent key.
Index("ix_order_line_items_order", OrderLineItem.tenant_id, OrderLineItem.order_shopify_id)
Index("ix_order_refunds_order", OrderRefund.tenant_id, OrderRefund.order_shopify_id)
Index(
    "ix_order_refund_line_items_refund",
    OrderRefundLineItem.tenant_id,
    OrderRefundLineItem.refund_shopify_id,
)
# ...and by order, their owner: an order's deletion and a customer's redaction reach them so.
Index(
    "ix_order_refund_line_items_order",
    OrderRefundLineItem.tenant_id,
    OrderRefundLineItem.order_shopify_id,
)
Index("ix_order_transactions_order", OrderTransaction.tenant_id, OrderTransaction.order_shopify_id)
Index("ix_fulfillments_order", Fulfillment.tenant_id, Fulfillment.order_shopify_id)
Index("ix_product_variants_product", ProductVariant.tenant_id, ProductVariant.product_shopify_id)
# A level's webhook recounts the stock of the variants of its item (handlers.topics).
Index(
    "ix_product_variants_inventory_item",
    ProductVariant.tenant_id,
    ProductVariant.inventory_item_shopify_id,
    postgresql_where=ProductVariant.inventory_item_shopify_id.is_not(None),
    sqlite_where=ProductVariant.inventory_item_shopify_id.is_not(None),
)
Index(
    "ix_customer_addresses_customer",
    CustomerAddress.tenant_id,
    CustomerAddress.customer_shopify_id,
)
Index("ix_metafields_owner", Metafield.tenant_id, Metafield.owner_type, Metafield.owner_shopify_id)
# A deleted product or variant nulls the line items naming it (handlers.children.forget_references).
for _column in (OrderLineItem.variant_shopify_id, OrderLineItem.product_shopify_id):
    Index(
        f"ix_order_line_items_{_column.key.removesuffix('_shopify_id')}",
        OrderLineItem.tenant_id,
        _column,
        postgresql_where=_column.is_not(None),
        sqlite_where=_column.is_not(None),
    )


# The dashboard's revenue and orders-per-day windows read by store and time.
Index("ix_orders_tenant_processed", Order.tenant_id, Order.processed_at)
# ...and the orders Shopify gave no processed_at, by created_at (the dashboard's time is
# processed_at, else created_at; a partial index keeps the second half as small as it is).
# Plain columns, not COALESCE(...): under row-level security PostgreSQL uses only
# leakproof conditions as index conditions, and a COALESCE is not one (revision 0013).
Index(
    "ix_orders_tenant_created_unprocessed",
    Order.tenant_id,
    Order.shopify_created_at,
    postgresql_where=Order.processed_at.is_(None),
    sqlite_where=Order.processed_at.is_(None),
)
Index("ix_order_refunds_tenant_processed", OrderRefund.tenant_id, OrderRefund.processed_at)
Index(
    "ix_order_refunds_tenant_created_unprocessed",
    OrderRefund.tenant_id,
    OrderRefund.shopify_created_at,
    postgresql_where=OrderRefund.processed_at.is_(None),
    sqlite_where=OrderRefund.processed_at.is_(None),
)


class WebhookEvent(Base):
    """The inbox: every verified delivery, committed before Shopify gets its 200.

    On PostgreSQL the table is range-partitioned by month on `received_at` (migration 0016),
    with a DEFAULT partition, so retention drops whole months; its primary key there is
    (id, received_at), as a partitioned table's unique keys must hold the partition key. The
    id alone is still unique (one sequence) and is what the ORM and every reader look rows up
    by. Dedupe is exact across partitions through `webhook_event_keys`; rows are written only
    by `handlers.inbox`. On SQLite it is a plain table, with the same key table.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        Index("ix_webhook_events_tenant_received", "tenant_id", "received_at"),
        # Only the rows someone looks for by status (failed to replay, ignored to re-check):
        # processed events, nearly all of them, cost this index nothing on the hot path.
        Index(
            "ix_webhook_events_unprocessed",
            "tenant_id",
            "status",
            "received_at",
            postgresql_where=text(f"status <> '{EventStatus.PROCESSED.value}'"),
            sqlite_where=text(f"status <> '{EventStatus.PROCESSED.value}'"),
        ),
        Index("ix_webhook_events_tenant_topic_received", "tenant_id", "topic", "received_at"),
        # The retry sweep reads failed events whose next attempt is due, soonest first.
        Index(
            "ix_webhook_events_retry",
            "next_attempt_at",
            postgresql_where=text(f"status = '{EventStatus.FAILED.value}'"),
            sqlite_where=text(f"status = '{EventStatus.FAILED.value}'"),
        ),
        allowed("webhook_events", "status", EventStatus),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    shop_domain: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(100))
    event_id: Mapped[str | None] = mapped_column(String(255))
    webhook_id: Mapped[str | None] = mapped_column(String(255))
    dedupe_key: Mapped[str] = mapped_column(String(255))
    api_version: Mapped[str | None] = mapped_column(String(32))
    triggered_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any] | None]
    # Redeliveries of this event: they change no data, but the dashboard counts dedupe hits.
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_duplicate_at: Mapped[datetime | None]
    # When a `failed` event is next applied again (backoff); NULL for every other status.
    next_attempt_at: Mapped[datetime | None]


# Migration 0016's month partitions of webhook_events and its DEFAULT partition (PostgreSQL):
# made and dropped at run time, described by the parent's model, not by models of their own.
_INBOX_PARTITION = re.compile(r"webhook_events_(p[0-9]{6}|default)")


def is_inbox_partition(table_name: str | None) -> bool:
    return table_name is not None and _INBOX_PARTITION.fullmatch(table_name) is not None


class WebhookEventKey(Base):
    """The inbox's dedupe keys: one row per stored event, unique per shop, topic and key (one
    underlying event can fan out to several topics), in a narrow table of its own because a
    partitioned `webhook_events` cannot hold a unique key without its partition key. The
    event's id and received_at find its row (and partition) for the duplicate counter."""

    __tablename__ = "webhook_event_keys"
    __table_args__ = (
        # shop/redact deletes a store's keys with its events.
        Index("ix_webhook_event_keys_tenant", "tenant_id"),
    )

    shop_domain: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(100), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # None for an unknown shop's event, as for the event itself.
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    webhook_event_id: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime]


class ChildRefetch(Base):
    """A record whose webhook body cut one of its child lists short (a product's `variants`,
    listed whole only in `variant_gids`): the refetch job reads the record with all those
    children from the Admin API, writes them, and deletes this row. Written in the webhook's
    own transaction, so no cut list is forgotten."""

    __tablename__ = "child_refetches"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "child_table", "parent_shopify_id", name="uq_child_refetches_parent"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    child_table: Mapped[str] = mapped_column(String(64))  # product_variants
    parent_shopify_id: Mapped[int] = mapped_column(BigInteger)
    # The newest request: a refetch that read the record before it must not clear it.
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)


class ComplianceRequest(Base):
    __tablename__ = "compliance_requests"
    __table_args__ = (
        Index("ix_compliance_requests_tenant_customer", "tenant_id", "customer_shopify_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    # A plain reference, no foreign key (migration 0016): the event may live in a partition
    # that retention drops whole, which runs no ON DELETE action; prune sets it to NULL.
    webhook_event_id: Mapped[int | None] = mapped_column(BigId)
    topic: Mapped[str] = mapped_column(String(100))
    customer_shopify_id: Mapped[int | None] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any] | None]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


_ACTIVE_SYNC = f"status IN ('{SyncStatus.QUEUED.value}', '{SyncStatus.RUNNING.value}')"


class SyncJob(Base):
    """One backfill of one store: a durable row whose progress is the checkpoint."""

    __tablename__ = "sync_jobs"
    __table_args__ = (
        # At most one queued or running job per store, enforced by the database so two
        # concurrent POST /api/sync calls cannot both start one.
        Index(
            "uq_sync_jobs_one_active_per_tenant",
            "tenant_id",
            unique=True,
            postgresql_where=text(_ACTIVE_SYNC),
            sqlite_where=text(_ACTIVE_SYNC),
        ),
        Index("ix_sync_jobs_tenant_created", "tenant_id", "created_at"),
        allowed("sync_jobs", "status", SyncStatus),
        allowed("sync_jobs", "mode", SyncMode),
        allowed("sync_jobs", "trigger", SyncTrigger),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=SyncStatus.QUEUED)
    resources: Mapped[list[str]] = mapped_column(JSONDocument)
    # Per resource: {"cursor", "count", "done", "pages", "bulk_operation_id", "lines"}.
    progress: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    # Lower bound of an incremental pull (the previous finished sync's start).
    since: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Bumped with every checkpoint: a running job whose heartbeat is old was abandoned.
    heartbeat_at: Mapped[datetime | None]
    # Upper bound of a targeted pull (reconcile repairs a window of updated_at), else None.
    until: Mapped[datetime | None]
    trigger: Mapped[str] = mapped_column(
        String(16), default=SyncTrigger.MANUAL, server_default=SyncTrigger.MANUAL.value
    )


class ApiToken(Base):
    """A token for scripts (`Authorization: Bearer`); only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # A read-only token may read but never write (no syncs, no replays), whatever is_admin says.
    read_only: Mapped[bool] = mapped_column(default=False, server_default=text("false"))


class ApiTokenTenant(Base):
    """The stores a scoped API token may see; a token with no rows here sees every store, so
    a store a token is scoped to cannot be deleted (RESTRICT) until the token is revoked."""

    __tablename__ = "api_token_tenants"

    api_token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="RESTRICT"), primary_key=True
    )


class User(Base):
    """A dashboard user: admins see every store, viewers only those in user_tenants."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, email={self.email!r}, is_admin={self.is_admin!r})"


class UserSession(Base):
    """A signed-in dashboard session, held server-side so that logging out ends it: the cookie
    carries a random token whose SHA-256 is stored here, and a cookie without a row is no
    session at all."""

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]


class UserTenant(Base):
    __tablename__ = "user_tenants"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True
    )


class LoginThrottle(Base):
    """Failed sign-ins per email and per address, shared by every process through the database."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]


class WebhookSubscription(Base):
    """Shopify's subscriptions for a store as last seen by `webhooks sync`/`status` or the
    watchdog: the dashboard's list of topics that should be delivering."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "topic", "uri", name="uq_webhook_subscriptions_topic"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(100))  # REST spelling: orders/create
    uri: Mapped[str] = mapped_column(Text)
    shopify_gid: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconcileRun(Base):
    """One comparison of Shopify's counts and watermarks with ours, and what it repaired."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (
        Index("ix_reconcile_runs_tenant_started", "tenant_id", "started_at"),
        allowed("reconcile_runs", "status", ReconcileStatus),
        allowed("reconcile_runs", "trigger", ReconcileTrigger),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=ReconcileStatus.RUNNING)
    trigger: Mapped[str] = mapped_column(String(16), default=ReconcileTrigger.MANUAL)
    # Per resource: counts and watermarks on both sides, windows compared, rows repaired.
    report: Mapped[dict[str, Any]] = mapped_column(JSONDocument, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


# Every mapped shop-data table (a ShopRecord), found rather than listed: the resource registry
# (handlers/resources.py) says what each one is.
SHOP_DATA_MODELS: tuple[type[ShopRecord], ...] = tuple(
    sorted(
        (
            mapper.class_
            for mapper in Base.registry.mappers
            if issubclass(mapper.class_, ShopRecord)
        ),
        key=lambda model: str(model.__tablename__),
    )
)
