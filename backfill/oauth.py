"""Getting a store's first offline token at install: the authorization code grant and token
exchange against Shopify's `/admin/oauth/access_token` (SHOPIFY.md, Installing an app).

Both ask for an expiring offline token (`expiring=1`); Shopify's answer is kept as an
`OfflineGrant` for the install service to store encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from backfill.credentials import AppCredentials

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN = "urn:shopify:params:oauth:token-type:offline-access-token"


class GrantRefused(Exception):
    """Shopify answered the exchange with a refusal (a used code, a bad session token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GrantUnavailable(Exception):
    """Shopify could not be asked (connection, timeout, a 5xx): nothing was granted."""


@dataclass(frozen=True)
class OfflineGrant:
    access_token: str
    scopes: tuple[str, ...]
    expires_in: int | None
    refresh_token: str | None
    refresh_token_expires_in: int | None


def oauth_url(template: str, shop: str, endpoint: str) -> str:
    """`https://{shop}/admin/oauth` + `authorize` -> the shop's authorize endpoint."""
    return f"{template.format(shop=shop).rstrip('/')}/{endpoint}"


def _seconds(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _grant(body: dict[str, Any]) -> OfflineGrant:
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise GrantUnavailable("Shopify's answer holds no access_token")
    refresh = body.get("refresh_token")
    return OfflineGrant(
        access_token=token,
        scopes=tuple(s.strip() for s in str(body.get("scope") or "").split(",") if s.strip()),
        expires_in=_seconds(body.get("expires_in")),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        refresh_token_expires_in=_seconds(body.get("refresh_token_expires_in")),
    )


async def _post(http: httpx.AsyncClient, url: str, form: dict[str, str]) -> OfflineGrant:
    try:
        response = await http.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise GrantUnavailable(f"could not reach {url}: {type(exc).__name__}") from exc
    if response.status_code >= 500:
        raise GrantUnavailable(f"{url} answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GrantUnavailable(f"{url} answered HTTP {response.status_code} without JSON")
    if response.status_code != 200:
        why = body.get("error_description") or body.get("error") or body.get("errors")
        raise GrantRefused(response.status_code, f"Shopify refused the grant: {why}")
    return _grant(body)


async def exchange_code(
    http: httpx.AsyncClient, url: str, app: AppCredentials, code: str
) -> OfflineGrant:
    """The authorization code grant's last step: `code` -> an expiring offline token."""
    return await _post(
        http,
        url,
        {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code": code,
            "expiring": "1",
        },
    )


async def exchange_session_token(
    http: httpx.AsyncClient, url: str, app: AppCredentials, session_token: str
) -> OfflineGrant:
    """Token exchange: an App Bridge session token -> an expiring offline token."""
    return await _post(
        http,
        url,
        {
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": session_token,
            "subject_token_type": ID_TOKEN,
            "requested_token_type": OFFLINE_TOKEN,
            "expiring": "1",
        },
    )
