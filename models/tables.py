"""The tables. Their names and key columns are a public contract (see DESIGN.md, Tables)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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

    def __repr__(self) -> str:
        return f"Tenant(id={self.id!r}, shop_domain={self.shop_domain!r}, status={self.status!r})"


class ShopRecord(Base):
    """Columns every shop-data table shares: identity, Shopify's clocks, tombstone, raw payload."""

    __abstract__ = True

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


class Product(ShopRecord):
    __tablename__ = "products"

    title: Mapped[str | None] = mapped_column(Text)
    handle: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))
    vendor: Mapped[str | None] = mapped_column(Text)
    product_type: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[str | None] = mapped_column(Text)


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


# The dashboard's revenue and orders-per-day windows read by store and time.
Index("ix_orders_tenant_processed", Order.tenant_id, Order.processed_at)


class WebhookEvent(Base):
    """The inbox: every verified delivery, committed before Shopify gets its 200."""

    __tablename__ = "webhook_events"
    __table_args__ = (
        # The dedupe key is per shop and topic: one underlying event can fan out to several topics.
        UniqueConstraint("shop_domain", "topic", "dedupe_key", name="uq_webhook_events_dedupe"),
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


class ComplianceRequest(Base):
    __tablename__ = "compliance_requests"
    __table_args__ = (
        Index("ix_compliance_requests_tenant_customer", "tenant_id", "customer_shopify_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    webhook_event_id: Mapped[int | None] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="SET NULL")
    )
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
