"""One typed settings object, built from the environment."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from handlers import metafields
from handlers.retries import DEFAULT_MAX_ATTEMPTS
from models.encryption import SecretBox, generate_key
from models.engine import UnsupportedDatabaseUrl, normalize_database_url

log = logging.getLogger("shopify_receiver.settings")
N = TypeVar("N", int, float)

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/receiver.db"
DEFAULT_API_VERSION = "2026-10"
DEFAULT_ADMIN_BASE_URL = "https://{shop}/admin/api/{version}"
DEFAULT_OAUTH_BASE_URL = "https://{shop}/admin/oauth"
DEFAULT_WEBHOOK_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_UNVERIFIED_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_SMALL_BODY_BYTES = 64 * 1024
DEV_STATE_DIR = Path("var")


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and secrets.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


class SettingsError(ValueError):
    pass


def _split_secrets(value: str | None) -> tuple[Secret, ...]:
    return tuple(Secret(part.strip()) for part in (value or "").split(",") if part.strip())


def _dev_secret(name: str, make: Callable[[], str]) -> str:
    """Read or create a development-only secret under var/, loudly."""
    path = DEV_STATE_DIR / name
    if path.exists():
        return path.read_text().strip()
    DEV_STATE_DIR.mkdir(parents=True, exist_ok=True)
    value = make()
    path.write_text(value + "\n")
    path.chmod(0o600)
    log.warning("generated %s into %s: for development only, set it in production", name, path)
    return value


def _positive(
    env: Mapping[str, str], name: str, default: N, parse: Callable[[str], N], kind: str
) -> N:
    text = env.get(name)
    if not text:
        return default
    try:
        value = parse(text)
    except ValueError as exc:
        raise SettingsError(f"{name}={text!r} is not {kind}") from exc
    if value <= 0:
        raise SettingsError(f"{name} must be positive")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    return _positive(env, name, default, float, "a number")


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """`name`'s whole number in `env` (`default` when unset); SettingsError, one line naming
    the variable, when it is not a positive whole number."""
    return _positive(env, name, default, int, "a whole number")


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("1", "on", "true", "yes"):
        return True
    if text in ("0", "off", "false", "no"):
        return False
    raise SettingsError(f"{name}={text!r}: use on or off")


def _public_url(value: str | None) -> str | None:
    if not value:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise SettingsError(f"PUBLIC_URL={value!r} is not an absolute http(s) URL")
    return value.strip().rstrip("/")


def _database_url(value: str | None) -> str:
    if not value:
        return DEFAULT_DATABASE_URL
    try:
        return normalize_database_url(value)
    except UnsupportedDatabaseUrl as exc:
        # Only the scheme is quoted: the rest of the URL usually carries a password.
        raise SettingsError(f"DATABASE_URL {exc}") from None


def _namespaces(value: str | None) -> tuple[str, ...]:
    try:
        return metafields.parse_namespaces(value)
    except ValueError as exc:
        raise SettingsError(f"METAFIELD_NAMESPACES={value!r}: {exc}") from exc


@dataclass(frozen=True)
class Settings:
    # repr=False: a database URL usually carries its password.
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    api_secrets: tuple[Secret, ...] = ()
    secret_key: Secret = field(default_factory=lambda: Secret(secrets.token_urlsafe(32)))
    encryption_keys: tuple[Secret, ...] = field(default_factory=lambda: (Secret(generate_key()),))
    api_version: str = DEFAULT_API_VERSION
    admin_base_url: str = DEFAULT_ADMIN_BASE_URL
    webhook_max_body_bytes: int = DEFAULT_WEBHOOK_MAX_BODY_BYTES
    # The app's client id, needed to refresh expiring offline tokens.
    api_key: str | None = None
    # A running sync job silent for this long is taken over by another worker.
    backfill_lease_seconds: float = 60.0
    # Connections per web process (PostgreSQL); a request that finds none free within
    # models.engine.POOL_TIMEOUT_SECONDS gets a 503 well inside Shopify's 5-second limit.
    database_pool_size: int = 20
    # How long raw webhook payloads are kept (`events prune` empties older ones); None: forever.
    payload_retention_days: float | None = None
    # Where Shopify reaches this service (`https://receiver.example.com`): webhook
    # subscriptions point at {public_url}/webhooks/shopify. Needed by `webhooks sync`.
    public_url: str | None = None
    # How often each active store's subscriptions are re-checked (and a gap backfilled),
    # and how often its data is reconciled with Shopify's counts and watermarks.
    watchdog_interval_seconds: float = 300.0
    reconcile_interval_seconds: float = 86400.0
    # PERIODIC_CHECKS=off: no watchdog or reconcile ticks in this process (tests, or a
    # deployment that schedules `webhooks sync` and `reconcile` itself).
    periodic_checks: bool = True
    # Slow and idle clients (receiver/limits.py). Open connections per process: beyond it a new
    # connection closes the oldest one that has no request running.
    http_max_connections: int = 1000
    # A connection must complete each request head this soon after it opens (or after its
    # previous response), and each request body this soon after its head.
    http_header_timeout_seconds: float = 5.0
    http_body_timeout_seconds: float = 3.0
    # Bytes of webhook bodies larger than webhook_small_body_bytes held before their signature
    # is checked, per process; a body that would pass it gets 503 with Retry-After.
    webhook_unverified_budget_bytes: int = DEFAULT_UNVERIFIED_BUDGET_BYTES
    webhook_small_body_bytes: int = DEFAULT_SMALL_BODY_BYTES
    # The web process's PostgreSQL sessions: a statement (a lock wait included) or an idle
    # transaction past these is ended by the server, so no request outlives Shopify's 5 s
    # (2 s at most waiting for a pooled connection, then 3 s). Workers are not bound by them.
    database_statement_timeout_seconds: float = 3.0
    database_idle_in_transaction_timeout_seconds: float = 3.0
    # METRICS_TOKEN: the bearer token /metrics (web and worker) requires; None leaves it open.
    metrics_token: Secret | None = None
    # ALLOW_RLS_BYPASS=on: start even when the database role bypasses row-level security.
    allow_rls_bypass: bool = False
    # A failed event is applied again with backoff; after this many attempts (the first
    # delivery included) it is `dead` and waits for a hand replay.
    event_max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # METAFIELD_NAMESPACES: the namespaces whose metafields (of orders, products, customers)
    # are kept in `metafields`; none by default. `apply_metafields` makes them the process's.
    metafield_namespaces: tuple[str, ...] = ()
    # Installing (receiver/install.py). SHOPIFY_SCOPES: scopes asked for beyond the ones the
    # handled topics and the backfill need; SHOPIFY_OAUTH_BASE_URL: where the authorize and
    # access_token endpoints are ({shop}); AFTER_INSTALL_URL: where an install lands instead of
    # the store's page ({shop} is replaced).
    extra_scopes: tuple[str, ...] = ()
    oauth_base_url: str = DEFAULT_OAUTH_BASE_URL
    after_install_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        secret_key = env.get("SECRET_KEY") or _dev_secret(
            "secret_key", lambda: secrets.token_urlsafe(32)
        )
        keys = env.get("ENCRYPTION_KEYS") or _dev_secret("encryption_keys", generate_key)
        limit_text = env.get("WEBHOOK_MAX_BODY_BYTES", str(DEFAULT_WEBHOOK_MAX_BODY_BYTES))
        try:
            limit = int(limit_text)
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_MAX_BODY_BYTES={limit_text!r} is not a number") from exc
        if limit <= 0:
            raise SettingsError("WEBHOOK_MAX_BODY_BYTES must be positive")
        settings = cls(
            database_url=_database_url(env.get("DATABASE_URL")),
            api_secrets=_split_secrets(env.get("SHOPIFY_API_SECRET")),
            secret_key=Secret(secret_key),
            encryption_keys=_split_secrets(keys),
            api_version=env.get("SHOPIFY_API_VERSION") or DEFAULT_API_VERSION,
            admin_base_url=env.get("SHOPIFY_ADMIN_BASE_URL") or DEFAULT_ADMIN_BASE_URL,
            webhook_max_body_bytes=limit,
            api_key=env.get("SHOPIFY_API_KEY") or None,
            backfill_lease_seconds=_positive_float(env, "BACKFILL_LEASE_SECONDS", 60.0),
            database_pool_size=int(_positive_float(env, "DATABASE_POOL_SIZE", 20)),
            payload_retention_days=(
                _positive_float(env, "PAYLOAD_RETENTION_DAYS", 1.0)
                if env.get("PAYLOAD_RETENTION_DAYS")
                else None
            ),
            public_url=_public_url(env.get("PUBLIC_URL")),
            watchdog_interval_seconds=_positive_float(env, "WATCHDOG_INTERVAL_SECONDS", 300.0),
            reconcile_interval_seconds=_positive_float(env, "RECONCILE_INTERVAL_SECONDS", 86400.0),
            periodic_checks=_switch(env, "PERIODIC_CHECKS", True),
            http_max_connections=positive_int(env, "HTTP_MAX_CONNECTIONS", 1000),
            http_header_timeout_seconds=_positive_float(env, "HTTP_HEADER_TIMEOUT_SECONDS", 5.0),
            http_body_timeout_seconds=_positive_float(env, "HTTP_BODY_TIMEOUT_SECONDS", 3.0),
            webhook_unverified_budget_bytes=positive_int(
                env, "WEBHOOK_UNVERIFIED_BUDGET_BYTES", DEFAULT_UNVERIFIED_BUDGET_BYTES
            ),
            webhook_small_body_bytes=positive_int(
                env, "WEBHOOK_SMALL_BODY_BYTES", DEFAULT_SMALL_BODY_BYTES
            ),
            database_statement_timeout_seconds=_positive_float(
                env, "DATABASE_STATEMENT_TIMEOUT_SECONDS", 3.0
            ),
            database_idle_in_transaction_timeout_seconds=_positive_float(
                env, "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", 3.0
            ),
            metrics_token=Secret(env["METRICS_TOKEN"]) if env.get("METRICS_TOKEN") else None,
            allow_rls_bypass=_switch(env, "ALLOW_RLS_BYPASS", False),
            event_max_attempts=positive_int(env, "EVENT_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS),
            metafield_namespaces=_namespaces(env.get("METAFIELD_NAMESPACES")),
            extra_scopes=tuple(
                scope.strip() for scope in env.get("SHOPIFY_SCOPES", "").split(",") if scope.strip()
            ),
            oauth_base_url=(env.get("SHOPIFY_OAUTH_BASE_URL") or DEFAULT_OAUTH_BASE_URL).rstrip(
                "/"
            ),
            after_install_url=env.get("AFTER_INSTALL_URL") or None,
        )
        settings.secret_box()  # fail at start-up, not at the first webhook, on a malformed key
        return settings

    def apply_metafields(self) -> None:
        """Make `metafield_namespaces` the ones this process's queries, subscriptions and
        writes keep (the resource registry is module-level)."""
        metafields.configure(self.metafield_namespaces)

    @property
    def webhook_url(self) -> str | None:
        """The address our subscriptions deliver to, or None without PUBLIC_URL."""
        return f"{self.public_url}/webhooks/shopify" if self.public_url else None

    def secret_box(self) -> SecretBox:
        try:
            return SecretBox([key.reveal() for key in self.encryption_keys])
        except ValueError as exc:
            raise SettingsError(f"ENCRYPTION_KEYS: {exc}") from exc
