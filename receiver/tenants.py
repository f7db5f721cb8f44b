"""Stores (tenants): lookup by domain and their encrypted credentials."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import String, bindparam, cast, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from models import SecretBox, Tenant

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
_WEBHOOK_TENANT_SCOPED = _WEBHOOK_TENANT.add_columns(
    func.set_config("app.tenant_id", cast(Tenant.id, String), true()),
    func.set_config("app.cross_tenant", "off", true()),
)


async def tenant_for_webhook(session: AsyncSession, shop_domain: str) -> WebhookTenant | None:
    """The store a webhook is for (and, on PostgreSQL, the transaction scoped to it)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _WEBHOOK_TENANT_SCOPED if postgres else _WEBHOOK_TENANT
    # Core, on the session's connection: the ORM's execute path costs more CPU than the query.
    connection = await session.connection()
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
