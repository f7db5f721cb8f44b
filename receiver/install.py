"""Installing the app on a store: the authorization code grant (`GET /auth/install`,
`GET /auth/callback`) and token exchange (`POST /auth/token-exchange`), both ending in
`install_store`, which does what an install does: store created or reactivated, token held
encrypted, scopes recorded, webhooks subscribed, initial backfill queued.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from backfill.client import BackfillError
from backfill.credentials import AppCredentials
from backfill.oauth import (
    GrantRefused,
    GrantUnavailable,
    OfflineGrant,
    exchange_code,
    exchange_session_token,
    oauth_url,
)
from backfill.runner import AUTO_MODE
from backfill.subscriptions import app_scopes, sync_subscriptions
from backfill.sync import SyncAlreadyRunning, start_sync
from receiver.errors import ApiError
from receiver.services import Services
from receiver.settings import Settings
from receiver.tenants import (
    InvalidShopDomain,
    StoreCredentials,
    add_store,
    normalize_shop_domain,
)

log = logging.getLogger("shopify_receiver.install")

# Shopify's redirects carry the time they were signed; older ones are replays.
MAX_TIMESTAMP_AGE_SECONDS = 300
# A clock a little ahead of ours is not an attack.
MAX_TIMESTAMP_SKEW_SECONDS = 60
# An install started and not finished within this long must start again.
STATE_LIFETIME_SECONDS = 600
# Installs one browser may have under way at once (the session cookie holds their states).
MAX_PENDING_STATES = 5
# Session tokens live a minute; clocks drift a little.
SESSION_TOKEN_LEEWAY_SECONDS = 10
# Not granted by default (Shopify approves it per app), but without it orders older than 60
# days are hidden from the backfill: its absence is worth a warning.
READ_ALL_ORDERS = "read_all_orders"
SESSION_STATES = "oauth_states"


class InstallRefused(ApiError):
    status_code = 400


class InstallUnauthorized(ApiError):
    status_code = 401


class InstallForbidden(ApiError):
    status_code = 403


class InstallNotConfigured(ApiError):
    status_code = 503


class ShopifyUnavailable(ApiError):
    status_code = 502


def requested_scopes(settings: Settings) -> list[str]:
    """What the authorize redirect asks for: what the handled topics and the backfill need,
    and SHOPIFY_SCOPES."""
    return sorted(set(app_scopes()) | set(settings.extra_scopes))


def missing_scopes(needed: list[str], granted: tuple[str, ...] | list[str] | None) -> list[str]:
    """The needed scopes a grant lacks (a write scope includes its read scope); [] when the
    grant is unknown (a store added by hand)."""
    if granted is None:
        return []
    held = set(granted) | {"read_" + s.removeprefix("write_") for s in granted}
    return [scope for scope in needed if scope not in held]


def needed_scopes(settings: Settings | None = None) -> list[str]:
    """What the store should grant: what we ask for, and read_all_orders."""
    extra = settings.extra_scopes if settings else ()
    return sorted({*app_scopes(), *extra, READ_ALL_ORDERS})


def scope_gaps(granted_scopes: str | None) -> list[str]:
    """The needed scopes a store's recorded grant (`tenants.granted_scopes`) lacks; [] for a
    store whose grant is unknown (added by hand)."""
    if granted_scopes is None:
        return []
    granted = [scope.strip() for scope in granted_scopes.split(",") if scope.strip()]
    return missing_scopes(needed_scopes(), granted)


def query_hmac(pairs: list[tuple[str, str]], secret: str) -> str:
    """Shopify's signature of a redirect's query: hex HMAC-SHA256, keyed with the client
    secret, of the other parameters sorted by name and joined as `k=v` with `&`."""
    message = "&".join(f"{k}={v}" for k, v in sorted(pairs) if k != "hmac")
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def query_signed(pairs: list[tuple[str, str]], secrets_: list[str]) -> bool:
    given = [v for k, v in pairs if k == "hmac"]
    if len(given) != 1:
        return False
    # Bytes: compare_digest refuses str with non-ASCII characters, and anyone can send those.
    claimed = given[0].lower().encode("utf-8", "replace")
    return any(
        hmac.compare_digest(query_hmac(pairs, secret).encode(), claimed) for secret in secrets_
    )


def _app(settings: Settings) -> AppCredentials:
    if not settings.api_key or not settings.api_secrets:
        raise InstallNotConfigured(
            "installs need the app's credentials: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET"
        )
    return AppCredentials(settings.api_key, settings.api_secrets[0].reveal())


def _shop(value: str | None) -> str:
    try:
        return normalize_shop_domain(value or "")
    except InvalidShopDomain:
        raise InstallRefused("shop must be a NAME.myshopify.com domain") from None


def _check_signed_query(request: Request, settings: Settings) -> None:
    pairs = list(request.query_params.multi_items())
    if not query_signed(pairs, [s.reveal() for s in settings.api_secrets]):
        raise InstallUnauthorized("the request's hmac is missing or wrong")
    stamp = request.query_params.get("timestamp", "")
    # ASCII and short: int() refuses other digits and very long ones.
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise InstallRefused("the request has no timestamp")
    age = time.time() - int(stamp)
    if age > MAX_TIMESTAMP_AGE_SECONDS or age < -MAX_TIMESTAMP_SKEW_SECONDS:
        raise InstallRefused("the request's timestamp is stale: start the install again")


# -- the service ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    tenant_id: int
    shop_domain: str
    created: bool
    missing_scopes: list[str]
    job_id: int | None
    # What did not work and does not undo the install (subscriptions refused, no PUBLIC_URL).
    warnings: list[str] = field(default_factory=list)


async def install_store(services: Services, shop_domain: str, grant: OfflineGrant) -> Installed:
    """What an install does, whichever flow brought the token: the store created (or an
    uninstalled or redacted one reactivated), the tokens stored encrypted with the granted
    scopes, Shopify's subscriptions made to match ours, and the initial backfill queued."""
    settings = services.settings
    added = await add_store(
        services.sessions,
        services.secret_box,
        shop_domain,
        StoreCredentials(
            access_token=grant.access_token,
            refresh_token=grant.refresh_token,
            token_expires_in=timedelta(seconds=grant.expires_in) if grant.expires_in else None,
            refresh_token_expires_in=(
                timedelta(seconds=grant.refresh_token_expires_in)
                if grant.refresh_token_expires_in
                else None
            ),
            granted_scopes=grant.scopes,
        ),
    )
    warnings: list[str] = []
    missing = missing_scopes(needed_scopes(settings), grant.scopes)
    if missing:
        warnings.append(f"the store did not grant {', '.join(missing)}")
    if settings.webhook_url is None:
        warnings.append("PUBLIC_URL is not set, so no webhooks were subscribed")
    else:
        # Also learns the store's Shopify shop id (handlers.shop_identity).
        try:
            report = await sync_subscriptions(
                services.backfill, added.tenant_id, settings.webhook_url
            )
            warnings.extend(report.errors)
        except BackfillError as exc:
            warnings.append(f"webhooks were not subscribed: {exc}")
    job_id: int | None
    try:
        started = await start_sync(
            services.sessions,
            added.tenant_id,
            AUTO_MODE,
            queue=services.job_queue,
            backfill=services.backfill,
        )
        job_id = started.job.id
    except SyncAlreadyRunning as exc:
        job_id = exc.job.id
    log.info(
        "install.done shop=%s created=%s missing_scopes=%s warnings=%d",
        added.shop_domain,
        added.created,
        ",".join(missing),
        len(warnings),
    )
    return Installed(added.tenant_id, added.shop_domain, added.created, missing, job_id, warnings)


# -- routes -----------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    services: Services = request.state.services
    return services


def _pending_states(request: Request) -> dict[str, tuple[str, float]]:
    """This browser's installs under way: state -> (shop, when it started)."""
    states = request.session.get(SESSION_STATES)
    if not isinstance(states, dict):
        return {}
    return {
        state: (str(entry[0]), float(entry[1]))
        for state, entry in states.items()
        if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int | float)
    }


def _save_states(request: Request, pending: dict[str, tuple[str, float]]) -> None:
    # The newest few only: the cookie must stay small.
    newest = list(pending.items())[-MAX_PENDING_STATES:]
    request.session[SESSION_STATES] = {state: [shop, at] for state, (shop, at) in newest}


async def install(request: Request) -> Response:
    """`GET /auth/install?shop=`: start the authorization code grant."""
    settings = _services(request).settings
    shop = _shop(request.query_params.get("shop"))
    if "hmac" in request.query_params:
        # Shopify's install link: signed like the callback.
        _check_signed_query(request, settings)
    app = _app(settings)
    if not settings.public_url:
        raise InstallNotConfigured(
            "installs need PUBLIC_URL (where Shopify sends the merchant back to /auth/callback)"
        )
    state = secrets.token_urlsafe(24)
    now = time.time()
    pending = {
        key: entry
        for key, entry in _pending_states(request).items()
        if now - entry[1] < STATE_LIFETIME_SECONDS
    }
    pending[state] = (shop, now)
    _save_states(request, pending)
    query = urlencode(
        {
            "client_id": app.client_id,
            "scope": ",".join(requested_scopes(settings)),
            "redirect_uri": f"{settings.public_url}/auth/callback",
            "state": state,
        }
    )
    return RedirectResponse(
        f"{oauth_url(settings.oauth_base_url, shop, 'authorize')}?{query}", status_code=302
    )


def _landing(settings: Settings, shop: str) -> str:
    if settings.after_install_url:
        return settings.after_install_url.replace("{shop}", shop)
    return f"/stores/{shop}"


async def callback(request: Request) -> Response:
    """`GET /auth/callback`: verify Shopify's redirect, exchange the code, install."""
    services = _services(request)
    settings = services.settings
    app = _app(settings)
    shop = _shop(request.query_params.get("shop"))
    _check_signed_query(request, settings)
    # One use: the state leaves the session whatever happens next.
    pending = _pending_states(request)
    entry = pending.pop(request.query_params.get("state", ""), None)
    _save_states(request, pending)
    if entry is None or entry[0] != shop or time.time() - entry[1] >= STATE_LIFETIME_SECONDS:
        raise InstallForbidden(
            "state is unknown, used or not this browser's: start the install again"
        )
    code = request.query_params.get("code", "")
    if not code:
        raise InstallRefused("the callback has no code")
    try:
        grant = await exchange_code(
            services.backfill.http,
            oauth_url(settings.oauth_base_url, shop, "access_token"),
            app,
            code,
        )
    except GrantRefused as exc:
        raise InstallRefused(f"{exc}; start the install again") from None
    except GrantUnavailable as exc:
        raise ShopifyUnavailable(f"Shopify could not be reached: {exc}; try again") from None
    await install_store(services, shop, grant)
    return RedirectResponse(_landing(settings, shop), status_code=303)


def _session_token_shop(token: str, settings: Settings, api_key: str) -> str:
    """The shop an App Bridge session token was issued for; InstallUnauthorized when it is not
    signed with the app secret, not for this app, expired or not yet valid."""
    claims: dict[str, Any] | None = None
    for secret in settings.api_secrets:
        try:
            claims = jwt.decode(
                token,
                secret.reveal(),
                algorithms=["HS256"],
                audience=api_key,
                leeway=SESSION_TOKEN_LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "aud", "dest"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise InstallUnauthorized(f"session token refused: {exc}") from None
    if claims is None:
        raise InstallUnauthorized("session token refused: signature verification failed")
    try:
        dest = urlsplit(str(claims.get("dest", "")))
        scheme, host = dest.scheme, dest.hostname
    except ValueError:  # "https://[::1" and the like
        scheme, host = "", None
    if scheme != "https" or not host:
        raise InstallUnauthorized("session token refused: dest is not an https shop URL")
    return _shop(host)


async def token_exchange(request: Request) -> Response:
    """`POST /auth/token-exchange`: an App Bridge session token -> an installed store."""
    services = _services(request)
    settings = services.settings
    app = _app(settings)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InstallUnauthorized("send the App Bridge session token as Authorization: Bearer")
    shop = _session_token_shop(token.strip(), settings, app.client_id)
    try:
        grant = await exchange_session_token(
            services.backfill.http,
            oauth_url(settings.oauth_base_url, shop, "access_token"),
            app,
            token.strip(),
        )
    except GrantRefused as exc:
        raise InstallUnauthorized(str(exc)) from None
    except GrantUnavailable as exc:
        raise ShopifyUnavailable(f"Shopify could not be reached: {exc}; try again") from None
    installed = await install_store(services, shop, grant)
    return JSONResponse(
        {
            "shop": installed.shop_domain,
            "tenantId": installed.tenant_id,
            "created": installed.created,
            "job_id": installed.job_id,
            "missing_scopes": installed.missing_scopes,
            "warnings": installed.warnings,
        }
    )
