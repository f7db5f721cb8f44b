"""The `shopify-receiver` command line.

Heavy modules (alembic, procrastinate, the backfill) are imported inside the commands that
use them: every other command starts in a fraction of the time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.admin_base import InvalidAdminBaseUrl, check_store_admin_base_url
from handlers import handled_topics
from handlers.compliance import export_customer
from handlers.events import replay_events
from handlers.resources import RESOURCES, parse_resource_names, reconciled_names
from handlers.shop_identity import DESTRUCTIVE_TOPICS
from models import (
    Tenant,
    WebhookEvent,
    create_engine,
    create_session_factory,
    is_sqlite,
)
from models.engine import normalize_database_url
from models.statuses import (
    CredentialsStatus,
    EventStatus,
    ReconcileStatus,
    SyncMode,
    SyncStatus,
)
from models.tenancy import cross_store_transaction
from receiver import runtime
from receiver.auth import InvalidTokenName, create_token
from receiver.errors import describe_operational_error
from receiver.logs import LoggingConfigError, configure_logging
from receiver.samples import sample_payload, webhook_headers
from receiver.settings import DEFAULT_DATABASE_URL, Settings, SettingsError
from receiver.tenants import (
    InvalidShopDomain,
    StoreCredentials,
    Undecryptable,
    UnknownStore,
    add_store,
    find_tenant,
    normalize_shop_domain,
    require_tenant,
    rotate_keys,
    webhook_secrets,
)

if TYPE_CHECKING:
    from backfill.subscriptions import SubscriptionReport

T = TypeVar("T")
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8000/webhooks/shopify"


def _settings() -> Settings:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    settings.apply_metafields()
    if is_sqlite(settings.database_url):
        # As `serve` does: a command run first on a new (or older) embedded database would
        # otherwise fail on a missing table. Already at head it only reads the version.
        from models import migrate as migrations

        migrations.upgrade(settings.database_url)
    return settings


def _with_sessions(
    settings: Settings, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]
) -> T:
    """Run `work` (a service, given the session factory) on DATABASE_URL."""

    async def run() -> T:
        engine = create_engine(settings.database_url)
        try:
            return await work(create_session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one transaction: committed if it returns, rolled back if it raises."""

    async def in_transaction(sessions: async_sessionmaker[AsyncSession]) -> T:
        # Operator tooling works across stores by nature.
        async with cross_store_transaction(sessions) as session:
            return await work(session)

    return _with_sessions(settings, in_transaction)


def _shop(value: str) -> str:
    try:
        return normalize_shop_domain(value)
    except InvalidShopDomain as exc:
        raise click.BadParameter(str(exc)) from exc


async def _require_tenant(session: AsyncSession, shop: str) -> Tenant:
    try:
        return await require_tenant(session, shop)
    except UnknownStore as exc:
        raise click.ClickException(str(exc)) from None


def _json_default(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _older_revision(revision: str) -> bool:
    """Whether `revision` is one of this version's migrations (so `migrate` brings it up)."""
    from alembic.script import ScriptDirectory

    from models.migrate import MIGRATIONS_DIR

    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    return any(script.revision == revision for script in scripts.walk_revisions())


def _check_row_level_security(settings: Settings, *, unreachable_ok: bool) -> None:
    """Refuse to run as a role that row-level security does not bind (a superuser, BYPASSRLS,
    or the tables' owner without FORCE): every store's rows would be visible to every query
    that forgot its filter. ALLOW_RLS_BYPASS=on runs anyway, with a warning."""
    from models.tenancy import rls_bypass_reason
    from receiver.errors import DATABASE_ERRORS

    if is_sqlite(settings.database_url):
        return

    from models.migrate import current_revision, head_revision

    async def check() -> tuple[str | None, str | None]:
        engine = create_engine(settings.database_url)
        try:
            async with engine.connect() as connection:
                return await rls_bypass_reason(connection), await current_revision(connection)
        finally:
            await engine.dispose()

    try:
        reason, revision = asyncio.run(check())
    except DATABASE_ERRORS as exc:  # OSError among them
        problem = describe_operational_error(exc, settings.database_url) or (
            f"the database is unreachable ({type(exc).__name__})"
        )
        if not unreachable_ok:
            raise click.ClickException(problem) from None
        click.echo(
            f"warning: {problem}; serving anyway: webhooks get 503 (Shopify retries them) "
            "until it is fixed, and row-level security is checked at the next start",
            err=True,
        )
        return
    if revision != head_revision() and (revision is None or _older_revision(revision)):
        # A newer revision (this code rolled back after a migration) is left to /readyz.
        schema = f"schema is at revision {revision}" if revision else "schema is not migrated"
        problem = (
            f"the database's {schema}, this version needs {head_revision()}: "
            "run `shopify-receiver migrate`"
        )
        if not unreachable_ok:
            raise click.ClickException(problem)
        click.echo(f"warning: {problem}; until then webhooks get 503", err=True)
    if reason is None:
        return
    if settings.allow_rls_bypass:
        click.echo(
            f"warning: {reason}: stores are NOT isolated by row-level security "
            "(running anyway because ALLOW_RLS_BYPASS=on)",
            err=True,
        )
        return
    raise click.ClickException(
        f"refusing to start: {reason}, so row-level security would not keep stores apart. "
        "Connect as a role without SUPERUSER or BYPASSRLS that does not own the tables "
        "(README, Database roles), or set ALLOW_RLS_BYPASS=on to run anyway."
    )


def _check_port(host: str, port: int) -> None:
    """A port already taken would otherwise be found by uvicorn only after the app started,
    and said in one log line among many."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise click.BadParameter(f"{host}: {exc.strerror}", param_hint="--host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: a port in TIME_WAIT after a restart is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"{host}:{port} is already in use (another `shopify-receiver serve`?): "
                    "stop that process or choose another port with --port"
                ) from None
            raise click.ClickException(
                f"cannot listen on {host}:{port} ({exc.strerror}): choose another address "
                "with --host or a port above 1023 with --port"
            ) from None


def _one_line(exc: Exception) -> str:
    """An error that escaped a command, as one line that says what to do."""
    try:
        url = normalize_database_url(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL)
        described = describe_operational_error(exc, url)
    except ValueError:  # a malformed URL, which the settings refuse on their own
        described = None
    if described is not None:
        return described
    said = (str(exc).strip().splitlines() or [""])[0]
    return (
        f"unexpected {type(exc).__name__}{': ' + said if said else ''} "
        "(run again with --debug for the traceback)"
    )


class _OneLineErrors(click.Group):
    """Commands' operational mistakes (database down or not migrated, grants or an encryption
    key missing) end as one line on stderr and exit 1; --debug lets the traceback through."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(_one_line(exc)) from None


@click.group(cls=_OneLineErrors)
@click.option(
    "--debug",
    is_flag=True,
    envvar="DEBUG",
    help="Show the traceback of an error, not only its one line (also DEBUG=1).",
)
def main(debug: bool) -> None:
    """Keep a faithful copy of Shopify stores in SQL."""
    try:
        configure_logging()
    except LoggingConfigError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(min=0, max=65535),
    envvar="PORT",
    show_envvar=True,
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
def serve(host: str, port: int, workers: int) -> None:
    """Serve webhooks and pages (migrates the embedded SQLite default first)."""
    from models import migrate as migrations
    from receiver.app import WEB_PROCESSES_ENV
    from receiver.limits import run_server, server_config
    from receiver.metrics import prepare_multiprocess_dir, remove_multiprocess_dir

    settings = _settings()  # also creates the dev secrets once, before workers race for them
    _check_port(host, port)
    if is_sqlite(settings.database_url):
        migrations.upgrade(settings.database_url)
    # A database that is down at start is allowed (webhooks get 503 until it is back).
    _check_row_level_security(settings, unreachable_ok=True)
    if not settings.api_secrets:
        click.echo(
            "warning: SHOPIFY_API_SECRET is not set; only stores with their own webhook secret "
            "can deliver webhooks",
            err=True,
        )
    config = server_config(
        "receiver.app:create_served_app",
        settings,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level="info",
        # Our handler (JSON by default) formats uvicorn's lines too.
        log_config=None,
    )
    # Several workers share one set of metrics through files (prometheus_client's
    # multiprocess mode); the directory must be in the environment before they start.
    metrics_dir = prepare_multiprocess_dir() if workers > 1 else None
    os.environ[WEB_PROCESSES_ENV] = str(workers)
    try:
        run_server(config)
    finally:
        if metrics_dir is not None:
            remove_multiprocess_dir(metrics_dir)


@main.command()
def migrate() -> None:
    """Upgrade DATABASE_URL's schema to the newest revision."""
    from models import migrate as migrations

    settings = _settings()
    migrations.upgrade(settings.database_url)
    click.echo(f"schema at {migrations.head_revision()}")


@main.group()
def tenants() -> None:
    """Stores this service receives webhooks for."""


@tenants.command("add")
@click.option("--shop", required=True, help="NAME.myshopify.com")
@click.option(
    "--webhook-secret",
    "webhook_secret",
    multiple=True,
    help="The store's own webhook signing secret; repeat it to accept old and new during rotation.",
)
@click.option("--access-token", default=None, help="Offline Admin API access token.")
@click.option("--refresh-token", default=None, help="Refresh token of an expiring offline token.")
@click.option(
    "--token-expires-in",
    type=click.IntRange(min=1),
    default=None,
    help="Seconds until the access token expires (expiring offline tokens).",
)
@click.option(
    "--admin-url",
    "admin_url",
    default=None,
    metavar="URL",
    help="A simulated store's own Admin API base, a template like SHOPIFY_ADMIN_BASE_URL "
    "(http://HOST:PORT/{shop}/admin/api/{version}); nothing for this store then goes to "
    "Shopify. '' removes it.",
)
def tenants_add(
    shop: str,
    webhook_secret: tuple[str, ...],
    access_token: str | None,
    refresh_token: str | None,
    token_expires_in: int | None,
    admin_url: str | None,
) -> None:
    """Add a store, or update its secrets and reactivate it."""
    settings = _settings()
    box = settings.secret_box()
    shop = _shop(shop)
    credentials = StoreCredentials(
        webhook_secrets=webhook_secret,
        access_token=access_token,
        refresh_token=refresh_token,
        token_expires_in=timedelta(seconds=token_expires_in) if token_expires_in else None,
    )
    if admin_url:
        try:
            admin_url = check_store_admin_base_url(admin_url)
        except InvalidAdminBaseUrl as exc:
            raise click.BadParameter(str(exc), param_hint="'--admin-url'") from None
    added = _with_sessions(
        settings,
        lambda sessions: add_store(sessions, box, shop, credentials, admin_base_url=admin_url),
    )
    click.echo(f"{'added' if added.created else 'updated'} {shop} (tenant {added.tenant_id})")


@tenants.command("list")
def tenants_list() -> None:
    """Stores, their status and which credentials they hold (never the values)."""

    async def work(session: AsyncSession) -> list[Tenant]:
        return list(await session.scalars(select(Tenant).order_by(Tenant.id)))

    # The install flow's module brings the web app's services (the job queue among them).
    from receiver.install import scope_gaps

    rows = _with_session(_settings(), work)
    click.echo(f"{'ID':>4}  {'SHOP':<40} {'STATUS':<12} {'SECRET':<7} TOKEN")
    for tenant in rows:
        secret = "yes" if tenant.webhook_secrets_encrypted else "no"
        token = "yes" if tenant.access_token_encrypted else "no"
        if tenant.credentials_status != CredentialsStatus.OK:
            token = tenant.credentials_status
        # Only simulated stores have their own base; the others go to SHOPIFY_ADMIN_BASE_URL.
        base = f"  admin {tenant.admin_base_url}" if tenant.admin_base_url else ""
        # Known for installed stores only: the grant Shopify reported at install.
        missing = scope_gaps(tenant.granted_scopes)
        gaps = f"  missing scopes {','.join(missing)}" if missing else ""
        click.echo(
            f"{tenant.id:>4}  {tenant.shop_domain:<40} {tenant.status:<12} {secret:<7} {token}"
            f"{base}{gaps}"
        )


@main.command("send-test-webhook")
@click.argument("topic")
@click.option("--shop", required=True)
@click.option("--url", default=DEFAULT_WEBHOOK_URL, show_default=True)
@click.option("--payload", "payload_file", type=click.Path(exists=True, dir_okay=False))
def send_test_webhook(topic: str, shop: str, url: str, payload_file: str | None) -> None:
    """Post a realistic, correctly signed sample webhook to a running receiver."""
    settings = _settings()
    shop = _shop(shop)

    async def store_facts(session: AsyncSession) -> tuple[str | None, int | None]:
        tenant = await find_tenant(session, shop)
        secrets = webhook_secrets(settings.secret_box(), tenant) if tenant else []
        return (secrets[0] if secrets else None), (tenant.shopify_shop_id if tenant else None)

    secret, shop_id = _with_session(settings, store_facts)
    if payload_file:
        body = Path(payload_file).read_bytes()
    else:
        try:
            payload = sample_payload(topic, shop)
        except KeyError:
            known = ", ".join(handled_topics())
            raise click.BadParameter(f"no sample for {topic}; samples exist for: {known}") from None
        if topic in DESTRUCTIVE_TOPICS:
            # The sample's shop id is made up: sent as is, the receiver would learn it as this
            # store's and refuse Shopify's real requests. The id we hold, or none.
            payload["id" if topic == "app/uninstalled" else "shop_id"] = shop_id
        body = json.dumps(payload).encode()
    if secret is None:
        if not settings.api_secrets:
            raise click.ClickException(
                f"nothing to sign with: {shop} has no webhook secret "
                "and SHOPIFY_API_SECRET is unset"
            )
        secret = settings.api_secrets[0].reveal()
    headers = webhook_headers(topic, shop, body, secret)
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"could not reach {url}: {exc}") from exc
    click.echo(f"{response.status_code} {response.text}")
    if not response.is_success:
        sys.exit(1)


class ResourceList(click.ParamType[list[str]]):
    """A comma-separated choice of the registry's resources (`orders,customers`), checked like
    click.Choice: an unknown name is a usage error listing the valid ones."""

    name = "resources"

    def __init__(self, choices: list[str]) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        try:
            return parse_resource_names(str(value), among=self.choices)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + ",".join(self.choices) + "]"


def _resources_option(choices: list[str]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--resources", type=ResourceList(choices), default=",".join(choices), show_default=True
    )


def _values(choices: type[StrEnum]) -> list[str]:
    # Plain strings: click matches Enum choices by member name (FAILED), not by value.
    return [choice.value for choice in choices]


@main.group()
def events() -> None:
    """The webhook inbox."""


@events.command("list")
@click.option("--status", type=click.Choice(_values(EventStatus)))
@click.option("--shop", default=None)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
def events_list(status: str | None, shop: str | None, limit: int) -> None:
    """Newest events first."""
    shop = _shop(shop) if shop else None

    async def work(session: AsyncSession) -> list[WebhookEvent]:
        query = select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit)
        if status:
            query = query.where(WebhookEvent.status == status)
        if shop:
            query = query.where(WebhookEvent.shop_domain == shop)
        return list(await session.scalars(query))

    for event in _with_session(_settings(), work):
        received = event.received_at.isoformat(timespec="seconds")
        line = f"{event.id:>6}  {received}  {event.status:<9} {event.shop_domain}  {event.topic}"
        click.echo(line + (f"  {event.error}" if event.error else ""))


@events.command("replay")
@click.option(
    "--status",
    type=click.Choice([EventStatus.FAILED.value, EventStatus.IGNORED.value]),
    default=None,
)
@click.option("--id", "event_id", type=int, default=None)
def events_replay(status: str | None, event_id: int | None) -> None:
    """Apply stored events again (after a fix, or once their store was added)."""
    if (status is None) == (event_id is None):
        raise click.UsageError("give exactly one of --status or --id")

    chosen = EventStatus(status) if status is not None else None
    report = _with_sessions(
        _settings(), lambda sessions: replay_events(sessions, event_id=event_id, status=chosen)
    )
    if event_id is not None and not report.events:
        raise click.ClickException(f"no event {event_id}")
    for replayed in report.events:
        error = f"  {replayed.error}" if replayed.error else ""
        click.echo(f"{replayed.event_id:>6}  {replayed.status}{error}")
    click.echo(f"replayed {len(report.events)} event(s)")
    if report.any_failed:
        sys.exit(1)


def parse_age(value: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if not match:
        raise click.BadParameter(f"{value!r}: use a number and d, h or m, e.g. 30d")
    amount, unit = int(match.group(1)), match.group(2)
    return {
        "d": timedelta(days=amount),
        "h": timedelta(hours=amount),
        "m": timedelta(minutes=amount),
    }[unit]


@events.command("prune")
@click.option("--older-than", "older_than", default=None, help="Delete events older than this.")
@click.option(
    "--payloads-older-than",
    "payloads_older_than",
    default=None,
    help="Empty the raw payloads of events older than this (default: PAYLOAD_RETENTION_DAYS).",
)
@click.option("--include-failed", is_flag=True, help="Also delete failed events (not replayable).")
def events_prune(
    older_than: str | None, payloads_older_than: str | None, include_failed: bool
) -> None:
    """Delete old processed and ignored events, and empty raw payloads past their retention.

    Failed events keep their payload unless --include-failed: it is what a replay applies.
    Emptied events keep their row (ids, topic, times) for dedupe and audit.
    """
    settings = _settings()
    payload_age = parse_age(payloads_older_than) if payloads_older_than else None
    if payload_age is None and settings.payload_retention_days is not None:
        payload_age = timedelta(days=settings.payload_retention_days)
    if older_than is None and payload_age is None:
        raise click.UsageError("give --older-than and/or --payloads-older-than")
    from backfill.maintenance import prune_events

    age = parse_age(older_than) if older_than is not None else None
    report = _with_sessions(
        settings,
        lambda sessions: prune_events(
            sessions,
            older_than=age,
            payloads_older_than=payload_age,
            include_failed=include_failed,
        ),
    )
    if older_than is not None:
        click.echo(f"pruned {report.deleted} event(s) older than {older_than}")
    if payload_age is not None:
        click.echo(
            f"emptied the payloads of {report.emptied} event(s) older than {payload_age.days}d"
        )


@main.group()
def keys() -> None:
    """Encryption keys for tokens and secrets at rest."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored token and secret with the first ENCRYPTION_KEYS key.

    Put the new key first and keep the old ones after it, run this, then drop the old keys.
    """
    settings = _settings()
    box = settings.secret_box()
    try:
        rotation = _with_sessions(settings, lambda sessions: rotate_keys(sessions, box))
    except Undecryptable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"re-encrypted {rotation.values} value(s) of {rotation.stores} store(s) with the "
        "newest key; the other keys can be removed from ENCRYPTION_KEYS"
    )


@main.group()
def users() -> None:
    """Dashboard users."""


@users.command("add")
@click.option("--email", required=True)
@click.option("--admin", is_flag=True, help="May see every store and start syncs and replays.")
@click.option("--tenant", "shops", multiple=True, help="A store a viewer may see; repeat it.")
def users_add(email: str, admin: bool, shops: tuple[str, ...]) -> None:
    """Add a user, or reset their password and stores. The password is read from standard
    input (first line) or asked for, never taken from the command line."""
    from receiver.auth import (
        InvalidEmail,
        PasswordTooShort,
        add_user,
        valid_email,
    )

    settings = _settings()
    try:
        email = valid_email(email)
    except InvalidEmail as exc:
        raise click.BadParameter(str(exc), param_hint="--email") from None
    domains = tuple(_shop(shop) for shop in shops)
    if sys.stdin is not None and not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        added = _with_sessions(
            settings,
            lambda sessions: add_user(sessions, email, password, admin=admin, shops=domains),
        )
    except (PasswordTooShort, UnknownStore) as exc:
        raise click.ClickException(str(exc)) from None
    role = "admin" if added.is_admin else f"viewer of {added.store_count} store(s)"
    click.echo(f"{'added' if added.created else 'updated'} {added.email} ({role})")


@main.group()
def tokens() -> None:
    """API tokens for scripts calling /api/*."""


@tokens.command("create")
@click.option("--name", required=True, help="Who or what uses the token, e.g. ci-backfill.")
@click.option("--read-only", is_flag=True, help="May read (/api/stats, /api/sync/ID), never write.")
@click.option(
    "--tenant",
    "shops",
    multiple=True,
    help="A store the token may see; repeat it. Without it the token sees every store.",
)
def tokens_create(name: str, read_only: bool, shops: tuple[str, ...]) -> None:
    """Print a new API token once; only its hash is stored. Without --read-only it may start
    syncs (on its stores, with --tenant); other stores answer 404 to it, as if absent."""
    domains = tuple(_shop(shop) for shop in shops)
    try:
        token = _with_sessions(
            _settings(),
            lambda sessions: create_token(sessions, name, read_only=read_only, shops=domains),
        )
    except InvalidTokenName as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    except UnknownStore as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(token)


@main.command()
@click.argument("shop")
@_resources_option(list(RESOURCES))
@click.option(
    "--mode",
    type=click.Choice(["auto", *_values(SyncMode)]),
    default="auto",
    show_default=True,
    help="auto: bulk for a large store (by Shopify's counts), full otherwise.",
)
def backfill(shop: str, resources: list[str], mode: str) -> None:
    """Pull a store's data now, in the foreground, with progress (same job as /api/sync).

    If the store already has a job that nobody is running (it was interrupted), that job is
    resumed from its checkpoint instead of starting over.
    """
    from backfill import sync
    from backfill.runner import run_sync_job
    from receiver.backfill_env import admin_environment
    from receiver.progress import BackfillProgress

    settings = _settings()
    shop = _shop(shop)
    chosen = resources

    async def run() -> tuple[int, str, str | None]:
        async with admin_environment(settings) as env:
            async with env.sessions() as session:
                tenant_id = (await _require_tenant(session, shop)).id
            try:
                started = await sync.start_sync(
                    env.sessions, tenant_id, mode, chosen, require_token=True, backfill=env
                )
                job = started.job
                if started.choice is not None:
                    counted = started.choice.records
                    click.echo(
                        f"mode auto: {job.mode}, "
                        + (
                            f"Shopify counts {counted:,} records"
                            if counted is not None
                            else "Shopify gave no counts"
                        )
                        + f" (bulk from {sync.AUTO_BULK_MIN_RECORDS:,})",
                        err=True,
                    )
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from exc
            except (sync.StoreUnknown, sync.StoreInactive, sync.NoToken) as exc:
                raise click.ClickException(str(exc)) from None
            except sync.SyncAlreadyRunning as exc:
                job = exc.job
                click.echo(f"resuming {job.mode} sync job {job.id}", err=True)
            with BackfillProgress() as display:
                outcome = await run_sync_job(env, job.id, on_progress=display)
            if outcome == "skipped":
                return job.id, "busy", "another worker is running this job right now"
            finished = await sync.job_outcome(env.sessions, tenant_id, job.id)
            return job.id, finished.status, finished.error

    job_id, status, error = runtime.run(run())
    click.echo(f"sync job {job_id}: {status}" + (f": {error}" if error else ""))
    if status != SyncStatus.SUCCEEDED:
        sys.exit(1)


@main.command("reconcile")
@click.argument("shop")
@_resources_option(reconciled_names())
@click.option("--dry-run", is_flag=True, help="Compare and report only; change nothing.")
@click.option(
    "--full",
    is_flag=True,
    help="Re-pull and compare every record, not only drifted windows (slower; also finds "
    "fields changed without a new updated_at).",
)
def reconcile_command(shop: str, resources: list[str], dry_run: bool, full: bool) -> None:
    """Compare Shopify's counts and watermarks with ours and repair drift.

    Exits 0 when the store is clean or was repaired, 1 when drift remains or the run failed.
    """
    from backfill.reconcile import reconcile, validate_resources
    from models import ReconcileRun
    from receiver.backfill_env import admin_environment

    settings = _settings()
    shop = _shop(shop)
    try:
        chosen = validate_resources(resources)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resources") from exc
    if full and dry_run:
        raise click.UsageError("--full repairs what it pulls; it cannot be a --dry-run")

    async def run() -> ReconcileRun:
        async with admin_environment(settings) as env:
            async with env.sessions() as session, session.begin():
                tenant = await _require_tenant(session, shop)
            return await reconcile(env, tenant.id, repair=not dry_run, resources=chosen, full=full)

    outcome = asyncio.run(run())
    click.echo(
        f"{'RESOURCE':<16} {'SHOPIFY':>9} {'DB':>9}  {'SHOPIFY NEWEST':<20} {'DB NEWEST':<20} "
        f"{'WINDOWS':>7} {'DRIFTED':>7} {'REPAIRED':>8} {'TOMBSTONED':>10} {'QUERIES':>7}"
    )

    def stamp(value: Any) -> str:
        return str(value)[:19].replace("T", " ") if value else "-"

    for name, report in (outcome.report or {}).items():
        shopify_count = report.get("shopify_count")
        click.echo(
            f"{name:<16} {shopify_count if shopify_count is not None else '-':>9} "
            f"{report.get('db_count') if report.get('db_count') is not None else '-':>9}  "
            f"{stamp(report.get('shopify_watermark')):<20} {stamp(report.get('db_watermark')):<20} "
            f"{report.get('windows_compared', 0):>7} {report.get('drifted_windows', 0):>7} "
            f"{report.get('repaired', 0):>8} {report.get('tombstoned', 0):>10} "
            f"{report.get('queries', 0):>7}"
        )
        if report.get("deferred"):
            click.echo(f"  {name}: {report['deferred']} row(s) too recent to judge, left alone")
        if report.get("remaining_windows"):
            still = "differ" if dry_run else "still differ after repairing"
            click.echo(f"  {name}: {report['remaining_windows']} window(s) {still}")
    click.echo(
        f"reconcile run {outcome.id}: {outcome.status}"
        + (f": {outcome.error}" if outcome.error else "")
    )
    if outcome.status not in (ReconcileStatus.CLEAN, ReconcileStatus.REPAIRED):
        sys.exit(1)


@main.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--metrics-port",
    envvar="WORKER_METRICS_PORT",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Serve this worker's Prometheus metrics on GET /metrics at this port "
    "(env WORKER_METRICS_PORT; METRICS_TOKEN applies). Off by default.",
)
@click.option(
    "--metrics-host",
    envvar="WORKER_METRICS_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics port listens on.",
)
def worker(concurrency: int, metrics_port: int | None, metrics_host: str) -> None:
    """Run queued backfills (PostgreSQL). Start any number, on any number of machines."""
    from backfill.queue import procrastinate_app, run_worker
    from receiver.backfill_env import admin_environment, maintenance_for
    from receiver.metrics import serve_worker_metrics

    settings = _settings()
    if is_sqlite(settings.database_url):
        raise click.ClickException(
            "workers need PostgreSQL; on the embedded SQLite default `serve` runs jobs itself"
        )
    _check_row_level_security(settings, unreachable_ok=False)
    if metrics_port is not None:
        try:
            serve_worker_metrics(metrics_host, metrics_port, settings.metrics_token)
        except OSError as exc:
            raise click.ClickException(
                f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc.strerror}"
            ) from None

    async def run() -> None:
        async with admin_environment(settings) as env:
            app = procrastinate_app(settings.database_url)
            async with app.open_async():
                await run_worker(
                    app, env, concurrency=concurrency, maintenance=maintenance_for(settings)
                )

    runtime.run(run())


@main.group()
def webhooks() -> None:
    """Shopify's webhook subscriptions for a store (they point at PUBLIC_URL/webhooks/shopify)."""


def _check_subscriptions(shop: str, *, repair: bool) -> SubscriptionReport:
    """Run `sync_subscriptions` (repair) or `subscription_status` for one store; a
    SubscriptionReport, or a one-line error for anything Shopify or the setup refuses."""
    from backfill.client import BackfillError
    from backfill.subscriptions import subscription_status, sync_subscriptions
    from receiver.backfill_env import admin_environment

    settings = _settings()
    shop = _shop(shop)
    uri = settings.webhook_url
    if uri is None:
        raise click.ClickException(
            "PUBLIC_URL is not set: set it to where Shopify reaches this service "
            "(e.g. https://receiver.example.com); subscriptions point at "
            "PUBLIC_URL/webhooks/shopify"
        )

    async def run() -> SubscriptionReport:
        async with admin_environment(settings) as env:
            async with env.sessions() as session, session.begin():
                tenant = await _require_tenant(session, shop)
            try:
                if repair:
                    return await sync_subscriptions(env, tenant, uri)
                return await subscription_status(env, tenant, uri)
            except BackfillError as exc:
                raise click.ClickException(str(exc)) from exc

    return asyncio.run(run())


@webhooks.command("sync")
@click.argument("shop")
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
def webhooks_sync(shop: str, dry_run: bool) -> None:
    """Subscribe the store to every handled topic at PUBLIC_URL and delete every other
    subscription (old address, topic no longer handled, XML, filtered, duplicate).

    Exits 0 when Shopify's list is right afterwards, 1 when a change was refused.
    """
    from backfill.subscriptions import stray_reason

    if dry_run:
        report = _check_subscriptions(shop, repair=False)
        for topic in report.ok:
            click.echo(f"{'kept':<14} {topic}")
        for topic in report.missing:
            click.echo(f"{'would create':<14} {topic}")
        for subscription in report.stray + report.duplicates:
            reason = stray_reason(subscription, report.uri)
            click.echo(f"{'would delete':<14} {subscription.topic}  {subscription.uri}  ({reason})")
        unwanted = len(report.stray) + len(report.duplicates)
        click.echo(
            f"dry run for {report.shop} -> {report.uri}: {len(report.missing)} to create, "
            f"{unwanted} to delete, {len(report.ok)} kept; nothing changed"
        )
        return
    report = _check_subscriptions(shop, repair=True)
    for topic in report.ok:
        click.echo(f"{'kept':<8} {topic}")
    for topic in report.created:
        click.echo(f"{'created':<8} {topic}")
    for subscription in report.deleted:
        reason = stray_reason(subscription, report.uri)
        click.echo(f"{'deleted':<8} {subscription.topic}  {subscription.uri}  ({reason})")
    for error in report.errors:
        click.echo(f"error: {error}", err=True)
    click.echo(
        f"synced {report.shop} -> {report.uri}: {len(report.created)} created, "
        f"{len(report.deleted)} deleted, {len(report.ok)} kept"
    )
    if report.errors:
        sys.exit(1)


@webhooks.command("status")
@click.argument("shop")
def webhooks_status(shop: str) -> None:
    """Compare the store's subscriptions with the handled topics, changing nothing.

    Exits 0 when they match, 1 on drift (a topic missing, or a subscription that should not
    be there); `webhooks sync SHOP` repairs it.
    """
    from backfill.subscriptions import stray_reason

    report = _check_subscriptions(shop, repair=False)
    for topic in sorted([*report.ok, *report.missing]):
        click.echo(f"{'ok' if topic in report.ok else 'missing':<10} {topic}")
    for subscription in report.stray + report.duplicates:
        reason = stray_reason(subscription, report.uri)
        click.echo(f"{'stray':<10} {subscription.topic}  {subscription.uri}  ({reason})")
    if report.in_sync:
        click.echo(f"{report.shop}: in sync ({len(report.ok)} topics -> {report.uri})")
        return
    unwanted = len(report.stray) + len(report.duplicates)
    click.echo(
        f"{report.shop}: drift: {len(report.missing)} missing, {unwanted} stray; "
        f"`shopify-receiver webhooks sync {report.shop}` repairs it"
    )
    sys.exit(1)


@main.group()
def compliance() -> None:
    """GDPR/CCPA requests."""


@compliance.command("export")
@click.option("--shop", required=True)
@click.option("--customer", "customer_id", required=True, type=click.IntRange(min=1))
def compliance_export(shop: str, customer_id: int) -> None:
    """Print everything stored about one customer as JSON; completes open data requests."""
    shop = _shop(shop)

    async def work(session: AsyncSession) -> dict[str, Any]:
        tenant = await _require_tenant(session, shop)
        return await export_customer(session, tenant.id, customer_id)

    click.echo(json.dumps(_with_session(_settings(), work), indent=2, default=_json_default))


if __name__ == "__main__":
    main()
