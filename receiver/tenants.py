"""Stores (tenants): lookup by domain and their encrypted credentials."""

from __future__ import annotations

import json
import re

from sqlalchemy import select
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


def webhook_secrets(box: SecretBox, tenant: Tenant) -> list[str]:
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
