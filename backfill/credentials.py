"""A store's Admin API token: decrypted on use, refreshed before expiry and after a 401,
stored back encrypted; a token that cannot be refreshed marks the store's credentials invalid."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, and_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.client import BackfillError, CredentialsInvalid
from models import SecretBox, Tenant, utcnow
from models.encryption import InvalidToken, missing_key_advice
from models.statuses import CredentialsStatus, TenantStatus

log = logging.getLogger("shopify_receiver.backfill.credentials")

# Refresh this long before expiry, so a page never starts with a token about to lapse.
REFRESH_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class AppCredentials:
    client_id: str
    client_secret: str


class TenantCredentials:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tenant_id: int,
        box: SecretBox,
        http: httpx.AsyncClient,
        *,
        token_url: str,
        app: AppCredentials | None,
    ) -> None:
        self.sessions = sessions
        self.tenant_id = tenant_id
        self.box = box
        self.http = http
        self.token_url = token_url
        self.app = app
        self._lock = asyncio.Lock()
        # The token in use and its expiry: read once, not per request. If another worker
        # refreshes it meanwhile, our copy gets a 401 and refresh() picks up theirs.
        self._cached: tuple[str, datetime | None] | None = None

    async def _tenant(self, session: AsyncSession) -> Tenant:
        tenant = await session.get(Tenant, self.tenant_id)
        if tenant is None:
            raise CredentialsInvalid(f"store {self.tenant_id} no longer exists")
        return tenant

    def _decrypt(self, tenant: Tenant, encrypted: str, what: str) -> str:
        try:
            return self.box.decrypt(encrypted)
        except InvalidToken:
            # Not Shopify's refusal, and not the store's fault: the credentials stay as they
            # are, so putting the key back is all it takes.
            raise CredentialsInvalid(
                f"{tenant.shop_domain}: "
                + missing_key_advice(f"its {what}", tenant.shop_domain, "--access-token TOKEN")
            ) from None

    async def token(self) -> str:
        if self._cached is not None:
            token, expires_at = self._cached
            if expires_at is None or expires_at - utcnow() >= REFRESH_MARGIN:
                return token
        async with self._lock, self.sessions() as session:
            tenant = await self._tenant(session)
            if tenant.credentials_status == CredentialsStatus.INVALID:
                raise CredentialsInvalid(
                    f"{tenant.shop_domain}: credentials are invalid ({tenant.credentials_error}); "
                    "reinstall the app or set a new token with `tenants add --access-token`"
                )
            if not tenant.access_token_encrypted:
                raise CredentialsInvalid(
                    f"{tenant.shop_domain}: no access token; set one with "
                    "`shopify-receiver tenants add --shop ... --access-token ...`"
                )
            expires_at = tenant.access_token_expires_at
            token = self._decrypt(tenant, tenant.access_token_encrypted, "access token")
        if expires_at is not None and expires_at - utcnow() < REFRESH_MARGIN:
            return await self.refresh(token)
        self._cached = (token, expires_at)
        return token

    async def refresh(self, rejected: str) -> str:
        async with self._lock:
            async with self.sessions() as session:
                tenant = await self._tenant(session)
                current = (
                    self._decrypt(tenant, tenant.access_token_encrypted, "access token")
                    if tenant.access_token_encrypted
                    else None
                )
                if (
                    current
                    and current != rejected
                    and tenant.credentials_status == CredentialsStatus.OK
                ):
                    # Another worker refreshed while we waited, or our copy was stale.
                    self._cached = (current, tenant.access_token_expires_at)
                    return current
                refresh_token = (
                    self._decrypt(tenant, tenant.refresh_token_encrypted, "refresh token")
                    if tenant.refresh_token_encrypted
                    else None
                )
                shop = tenant.shop_domain
            if refresh_token is None or self.app is None:
                why = (
                    "the token was refused and there is no refresh token"
                    if refresh_token is None
                    else "SHOPIFY_API_KEY is not set, so the token cannot be refreshed"
                )
                await self._invalidate(why)
                raise CredentialsInvalid(f"{shop}: {why}")
            try:
                response = await self.http.post(
                    self.token_url,
                    json={
                        "client_id": self.app.client_id,
                        "client_secret": self.app.client_secret,
                        "grant_type": "refresh_token",
                        "refresh_token": refresh_token,
                    },
                )
            except httpx.TransportError as exc:
                # Not the token's fault: leave the credentials alone and let the job retry.
                raise BackfillError(f"{shop}: token refresh failed to connect: {exc}") from exc
            if response.status_code != 200:
                why = f"token refresh refused (HTTP {response.status_code}: {response.text[:200]})"
                await self._invalidate(why)
                raise CredentialsInvalid(f"{shop}: {why}")
            grant = response.json()
            await self._store(grant)
            self._cached = (str(grant["access_token"]), _expiry(utcnow(), grant.get("expires_in")))
            log.info("backfill.token_refreshed shop=%s", shop)
            return str(grant["access_token"])

    async def _store(self, grant: dict[str, object]) -> None:
        now = utcnow()
        async with self.sessions() as session, session.begin():
            tenant = await self._tenant(session)
            tenant.access_token_encrypted = self.box.encrypt(str(grant["access_token"]))
            tenant.access_token_expires_at = _expiry(now, grant.get("expires_in"))
            if grant.get("refresh_token"):
                tenant.refresh_token_encrypted = self.box.encrypt(str(grant["refresh_token"]))
                tenant.refresh_token_expires_at = _expiry(
                    now, grant.get("refresh_token_expires_in")
                )
            tenant.credentials_status = CredentialsStatus.OK
            tenant.credentials_error = None

    async def _invalidate(self, why: str) -> None:
        self._cached = None
        async with self.sessions() as session, session.begin():
            tenant = await self._tenant(session)
            tenant.credentials_status = CredentialsStatus.INVALID
            tenant.credentials_error = why
        log.warning("backfill.credentials_invalid tenant=%s why=%s", self.tenant_id, why)


def _expiry(now: datetime, seconds: object) -> datetime | None:
    if isinstance(seconds, int | float) and seconds > 0:
        return now + timedelta(seconds=float(seconds))
    if isinstance(seconds, str) and seconds.isdigit():
        return now + timedelta(seconds=int(seconds))
    return None


def callable_store() -> ColumnElement[bool]:
    """Stores the periodic checks may call Shopify for: installed, with a token that works."""
    return and_(
        Tenant.status == TenantStatus.ACTIVE,
        Tenant.credentials_status == CredentialsStatus.OK,
        Tenant.access_token_encrypted.is_not(None),
    )
