"""Offline access tokens of one store: static (non-expiring) ones and expiring ones with
refresh tokens, refreshed through ``POST /admin/oauth/access_token``; and the ways an app gets
its first token there (an install): an authorization code from ``/admin/oauth/authorize``, or
an App Bridge session token (token exchange).

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
import time
from dataclasses import dataclass
from typing import Any, Literal

import jwt

from .clock import Clock

DEFAULT_SCOPE = "read_customers,read_orders,read_products"
ACCESS_TTL = 3600
REFRESH_TTL = 90 * 24 * 3600

Verdict = Literal["ok", "unknown", "expired", "revoked"]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN = "urn:shopify:params:oauth:token-type:offline-access-token"


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
        # Authorization codes not yet exchanged -> the scopes the merchant approved with them.
        self._codes: dict[str, str] = {}
        self.installs = 0

    def add_static(self, value: str | None = None) -> str:
        """A non-expiring offline token (custom and merchant-created apps)."""
        token = value or f"shpat_{secrets.token_hex(16)}"
        with self._lock:
            self._access[token] = AccessToken(token, None)
        return token

    def authorize(self, scope: str) -> str:
        """The merchant approves the app with `scope`: a one-use authorization code."""
        code = secrets.token_hex(16)
        with self._lock:
            self._codes[code] = scope
        return code

    def _client_refused(self, form: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        if form.get("client_id") != self.client_id or not secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        ):
            return 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed.",
            }
        return None

    def _install(self, scope: str, expiring: bool) -> dict[str, Any]:
        """An app's installation: the approved scopes become the store's, and (with the lock
        held) the offline token it gets."""
        self.scope = scope
        self.installs += 1
        if expiring:
            return self._issue_pair(self.access_ttl, self.refresh_ttl)
        token = f"shpat_{secrets.token_hex(16)}"
        self._access[token] = AccessToken(token, None)
        return {"access_token": token, "scope": scope}

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """``POST /admin/oauth/access_token``: a code, a token exchange or a refresh."""
        grant_type = form.get("grant_type")
        if grant_type == "refresh_token":
            return self.refresh(form)
        refused = self._client_refused(form)
        if refused is not None:
            return refused
        expiring = form.get("expiring") == "1"
        if grant_type == TOKEN_EXCHANGE:
            return self._token_exchange(form, expiring)
        if grant_type not in (None, "", "authorization_code"):
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": f"grant_type {grant_type} is not supported",
            }
        with self._lock:
            scope = self._codes.pop(form.get("code", ""), None)
            if scope is None:
                return 400, {
                    "error": "invalid_request",
                    "error_description": "The authorization code was not found or was already used",
                }
            return 200, self._install(scope, expiring)

    def _token_exchange(self, form: dict[str, str], expiring: bool) -> tuple[int, dict[str, Any]]:
        if (
            form.get("subject_token_type") != ID_TOKEN
            or form.get("requested_token_type") != OFFLINE_TOKEN
        ):
            return 400, {
                "error": "invalid_request",
                "error_description": "subject_token_type must be id_token and "
                "requested_token_type offline-access-token",
            }
        try:
            jwt.decode(
                form.get("subject_token", ""),
                self.client_secret,
                algorithms=["HS256"],
                audience=self.client_id,
                leeway=5,
            )
        except jwt.InvalidTokenError:
            return 400, {
                "error": "invalid_subject_token",
                "error_description": "The session token is invalid.",
            }
        with self._lock:
            return 200, self._install(self.scope, expiring)

    def session_token(self, shop_domain: str, *, lifetime: int = 60) -> str:
        """An App Bridge session token for this store, as Shopify signs it."""
        now = int(time.time())
        return jwt.encode(
            {
                "iss": f"https://{shop_domain}/admin",
                "dest": f"https://{shop_domain}",
                "aud": self.client_id,
                "sub": "42",
                "exp": now + lifetime,
                "nbf": now,
                "iat": now,
                "jti": secrets.token_hex(8),
                "sid": secrets.token_hex(8),
            },
            self.client_secret,
            algorithm="HS256",
        )

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
        refused = self._client_refused(form)
        if refused is not None:
            return refused
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
