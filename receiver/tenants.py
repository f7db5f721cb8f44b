"""Stores (tenants): lookup by domain and their encrypted credentials."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import timedelta

from cryptography.fernet import InvalidToken
from sqlalchemy import String, bindparam, cast, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.admin_base import check_store_admin_base_url
from models import SecretBox, Tenant, utcnow
from models.driver import session_connection
from models.encryption import missing_key_advice
from models.statuses import CredentialsStatus, TenantStatus
from models.tenancy import cross_store_transaction

SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]{0,200}\.myshopify\.com")


class InvalidShopDomain(ValueError):
    pass


def normalize_shop_domain(value: str) -> str:
    """`Name.myshopify.com` -> `name.myshopify.com`; anything else is refused."""
    domain = value.strip().lower()
    if not SHOP_DOMAIN.fullmatch(domain):
        raise InvalidShopDomain(f"{value!r} is not a NAME.myshopify.com domain")
    return domain


async def find_tenant(session: AsyncSession, shop_domain: str) -> Tenant | None:
    return await session.scalar(select(Tenant).where(Tenant.shop_domain == shop_domain))


class UnknownStore(LookupError):
    def __init__(self, shop_domain: str) -> None:
        super().__init__(
            f"unknown store {shop_domain}; add it with `tenants add --shop {shop_domain}`"
        )
        self.shop_domain = shop_domain


async def require_tenant(session: AsyncSession, shop_domain: str) -> Tenant:
    tenant = await find_tenant(session, shop_domain)
    if tenant is None:
        raise UnknownStore(shop_domain)
    return tenant


@dataclass(frozen=True)
class WebhookTenant:
    """What receiving a webhook needs of its store."""

    id: int
    status: str
    webhook_secrets_encrypted: str | None
    # What destructive topics are checked on (handlers.shop_identity).
    shopify_shop_id: int | None = None


_WEBHOOK_TENANT = select(
    Tenant.id, Tenant.status, Tenant.webhook_secrets_encrypted, Tenant.shopify_shop_id
).where(Tenant.shop_domain == bindparam("shop"))
# The same, and on PostgreSQL it also scopes the transaction to the store (what `use_tenant`
# does): every webhook needs both, and this is one round trip instead of two.
# It also has the transaction's prepared statements run on their generic plans. A webhook's
# statements find rows by their store and keys, or take them as one JSON array (parents and
# ids as arrays): a plan made for the values gains nothing there, yet PostgreSQL kept making
# one for some at every execution. A batch's child tombstones took 0.51 ms of planning for
# 0.34 ms of running (bench/RESULTS.md, notes of 2026-12-05 03:40-04:25 UTC). The setting ends with
# the transaction, as the store's scope does.
_WEBHOOK_TENANT_SCOPED = _WEBHOOK_TENANT.add_columns(
    func.set_config("app.tenant_id", cast(Tenant.id, String), true()),
    func.set_config("app.cross_tenant", "off", true()),
    func.set_config("plan_cache_mode", "force_generic_plan", true()),
)


async def tenant_for_webhook(session: AsyncSession, shop_domain: str) -> WebhookTenant | None:
    """The store a webhook is for (and, on PostgreSQL, the transaction scoped to it, its
    statements on their generic plans)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _WEBHOOK_TENANT_SCOPED if postgres else _WEBHOOK_TENANT
    # Core, on the session's connection: the ORM's execute path costs more CPU than the query.
    connection = await session_connection(session)
    row = (await connection.execute(statement, {"shop": shop_domain})).first()
    return None if row is None else WebhookTenant(row[0], row[1], row[2], row[3])


def webhook_secrets(box: SecretBox, tenant: Tenant | WebhookTenant) -> list[str]:
    """The store's own webhook secrets, newest first (several during a rotation)."""
    if not tenant.webhook_secrets_encrypted:
        return []
    return list(json.loads(box.decrypt(tenant.webhook_secrets_encrypted)))


def set_webhook_secrets(box: SecretBox, tenant: Tenant, secrets: list[str]) -> None:
    tenant.webhook_secrets_encrypted = box.encrypt(json.dumps(secrets)) if secrets else None


def access_token(box: SecretBox, tenant: Tenant) -> str | None:
    if not tenant.access_token_encrypted:
        return None
    return box.decrypt(tenant.access_token_encrypted)


def set_access_token(box: SecretBox, tenant: Tenant, token: str | None) -> None:
    tenant.access_token_encrypted = box.encrypt(token) if token else None


# -- use cases -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreCredentials:
    """What an operator hands over for a store; None (or empty) leaves the stored one as is."""

    webhook_secrets: tuple[str, ...] = ()
    access_token: str | None = None
    refresh_token: str | None = None
    token_expires_in: timedelta | None = None
    refresh_token_expires_in: timedelta | None = None
    # What the store granted at install (Shopify's `scope`); None leaves the stored one.
    granted_scopes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AddedStore:
    tenant_id: int
    shop_domain: str
    created: bool


async def add_store(
    sessions: async_sessionmaker[AsyncSession],
    box: SecretBox,
    shop_domain: str,
    credentials: StoreCredentials,
    *,
    admin_base_url: str | None = None,
) -> AddedStore:
    """Add a store, or update its secrets and reactivate it (InvalidShopDomain for a domain
    that is not NAME.myshopify.com).

    `admin_base_url` is the store's own Admin API base (a simulated store): None leaves the
    stored one as is, "" removes it; InvalidAdminBaseUrl for one that cannot be a simulator's."""
    shop_domain = normalize_shop_domain(shop_domain)
    base = check_store_admin_base_url(admin_base_url) if admin_base_url else admin_base_url
    # A new store has no id to scope to yet; the tenants table has no row-level policy.
    async with cross_store_transaction(sessions) as session:
        tenant = await find_tenant(session, shop_domain)
        created = tenant is None
        if tenant is None:
            tenant = Tenant(shop_domain=shop_domain, status=TenantStatus.ACTIVE)
            session.add(tenant)
        else:
            tenant.status = TenantStatus.ACTIVE
        if base is not None:
            tenant.admin_base_url = base or None
        if credentials.webhook_secrets:
            set_webhook_secrets(box, tenant, list(credentials.webhook_secrets))
        if credentials.access_token:
            set_access_token(box, tenant, credentials.access_token)
            expires_in = credentials.token_expires_in
            tenant.access_token_expires_at = utcnow() + expires_in if expires_in else None
            refresh = credentials.refresh_token
            tenant.refresh_token_encrypted = box.encrypt(refresh) if refresh else None
            refresh_in = credentials.refresh_token_expires_in
            tenant.refresh_token_expires_at = (
                utcnow() + refresh_in if refresh and refresh_in else None
            )
            tenant.credentials_status = CredentialsStatus.OK
            tenant.credentials_error = None
        if credentials.granted_scopes is not None:
            tenant.granted_scopes = ",".join(credentials.granted_scopes)
        await session.flush()
        return AddedStore(tenant.id, shop_domain, created)


_ENCRYPTED_COLUMNS = (
    "webhook_secrets_encrypted",
    "access_token_encrypted",
    "refresh_token_encrypted",
)


class Undecryptable(Exception):
    """A stored value no key in ENCRYPTION_KEYS opens: nothing was re-encrypted."""

    def __init__(self, shop_domain: str, column: str) -> None:
        # Which option sets the value again, for the advice.
        option = {
            "access_token_encrypted": "--access-token TOKEN",
            "refresh_token_encrypted": "--access-token TOKEN --refresh-token TOKEN",
            "webhook_secrets_encrypted": "--webhook-secret SECRET",
        }.get(column, "--access-token TOKEN")
        advice = missing_key_advice(f"its {column.removesuffix('_encrypted')}", shop_domain, option)
        super().__init__(
            f"{shop_domain}: {column} cannot be decrypted with any key in ENCRYPTION_KEYS, so "
            f"nothing was changed; {advice}"
        )
        self.shop_domain = shop_domain
        self.column = column


@dataclass(frozen=True)
class KeyRotation:
    values: int
    stores: int


async def rotate_keys(sessions: async_sessionmaker[AsyncSession], box: SecretBox) -> KeyRotation:
    """Re-encrypt every stored token and secret with the box's first key, all or nothing."""
    values = stores = 0
    async with cross_store_transaction(sessions) as session:
        for tenant in await session.scalars(select(Tenant).order_by(Tenant.id)):
            touched = False
            for column in _ENCRYPTED_COLUMNS:
                token = getattr(tenant, column)
                if not token:
                    continue
                try:
                    setattr(tenant, column, box.rotate(token))
                except InvalidToken:
                    raise Undecryptable(tenant.shop_domain, column) from None
                values += 1
                touched = True
            stores += touched
    return KeyRotation(values, stores)
