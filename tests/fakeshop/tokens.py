"""Offline access tokens of one store: static (non-expiring) ones and expiring ones with
refresh tokens, refreshed through ``POST /admin/oauth/access_token``.

Rules simulated (shopify.dev, "About offline access tokens" and the 2026-08 changelog "More
resilient refreshes for expiring offline access tokens"):

- an expiring access token lives ``expires_in`` seconds (3600 by default), its refresh token
  ``refresh_token_expires_in`` (90 days);
- only one expiring token is active per app and store: a refresh revokes the earlier expiring
  access tokens;
- a refresh keeps the refresh token it used valid until its replacement is itself used, so a
  client that lost a refresh response can retry with the old one.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any, Literal

from .clock import Clock

DEFAULT_SCOPE = "read_customers,read_orders,read_products"
ACCESS_TTL = 3600
REFRESH_TTL = 90 * 24 * 3600

Verdict = Literal["ok", "unknown", "expired", "revoked"]


@dataclass
class AccessToken:
    value: str
    expires_at: float | None  # on the store's monotonic clock; None never expires
    revoked: bool = False
    expiring: bool = False


@dataclass
class RefreshToken:
    value: str
    expires_at: float
    serial: int  # issue order, for "every older refresh token" rules
    access_ttl: int  # lifetime of the access tokens it yields (tests shorten it)
    valid: bool = True


class TokenRegistry:
    def __init__(
        self,
        clock: Clock,
        *,
        client_id: str,
        client_secret: str,
        scope: str = DEFAULT_SCOPE,
        revoke_on_refresh: bool = True,
        access_ttl: int = ACCESS_TTL,
        refresh_ttl: int = REFRESH_TTL,
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.clock = clock
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.revoke_on_refresh = revoke_on_refresh
        self._lock = threading.Lock()
        self._access: dict[str, AccessToken] = {}
        self._refresh: dict[str, RefreshToken] = {}
        self._serial = 0
        self.refreshes = 0

    def add_static(self, value: str | None = None) -> str:
        """A non-expiring offline token (custom and merchant-created apps)."""
        token = value or f"shpat_{secrets.token_hex(16)}"
        with self._lock:
            self._access[token] = AccessToken(token, None)
        return token

    def _issue_pair(self, expires_in: int, refresh_expires_in: int) -> dict[str, Any]:
        now = self.clock.monotonic()
        access = f"shpat_{secrets.token_hex(16)}"
        refresh = f"shprt_{secrets.token_hex(16)}"
        self._serial += 1
        self._access[access] = AccessToken(access, now + expires_in, expiring=True)
        self._refresh[refresh] = RefreshToken(
            refresh, now + refresh_expires_in, self._serial, expires_in
        )
        return {
            "access_token": access,
            "expires_in": expires_in,
            "refresh_token": refresh,
            "refresh_token_expires_in": refresh_expires_in,
            "scope": self.scope,
        }

    def issue_expiring(
        self, expires_in: int | None = None, refresh_token_expires_in: int | None = None
    ) -> dict[str, Any]:
        """An expiring token pair, as the OAuth grant returns it (the app's first install)."""
        with self._lock:
            return self._issue_pair(
                expires_in or self.access_ttl, refresh_token_expires_in or self.refresh_ttl
            )

    def check(self, value: str | None) -> Verdict:
        with self._lock:
            token = self._access.get(value or "")
            if token is None:
                return "unknown"
            if token.revoked:
                return "revoked"
            if token.expires_at is not None and self.clock.monotonic() >= token.expires_at:
                return "expired"
            return "ok"

    def revoke(self, value: str) -> None:
        with self._lock:
            token = self._access.get(value)
            if token is not None:
                token.revoked = True

    def expire(self, value: str) -> None:
        with self._lock:
            token = self._access.get(value)
            if token is not None:
                token.expires_at = self.clock.monotonic()

    def revoke_all(self) -> None:
        """What an uninstall does: every access and refresh token stops working."""
        with self._lock:
            for token in self._access.values():
                token.revoked = True
            for refresh in self._refresh.values():
                refresh.valid = False

    def refresh(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Handle a refresh_token grant; (HTTP status, JSON body)."""
        if form.get("grant_type") != "refresh_token":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "grant_type must be refresh_token",
            }
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed.",
            }
        with self._lock:
            used = self._refresh.get(form.get("refresh_token", ""))
            now = self.clock.monotonic()
            if used is None or not used.valid or now >= used.expires_at:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "The refresh token is invalid, expired or revoked.",
                }
            # Using a refresh token retires every other one (older ones, and replacements
            # issued from it that the client never received), but not itself: it stays valid
            # until the replacement issued now is used.
            for other in self._refresh.values():
                if other is not used:
                    other.valid = False
            if self.revoke_on_refresh:
                for token in self._access.values():
                    if token.expiring:
                        token.revoked = True
            self.refreshes += 1
            return 200, self._issue_pair(used.access_ttl, self.refresh_ttl)
