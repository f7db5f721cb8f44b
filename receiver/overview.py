"""The home page's numbers: per store, revenue today and this month, webhook health, the
latest sync, and what needs someone's attention (alerts); and the lists on the admin page.

Several stores are read at once, so each query spans stores (`use_all_tenants`) and is
filtered by ids the caller already checked the principal may see.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from models import ApiToken, ApiTokenTenant, Order, SyncJob, Tenant, User, UserTenant, WebhookEvent
from models.statuses import CredentialsStatus, EventStatus, SyncStatus, TenantStatus
from models.tenancy import of_store, use_all_tenants
from receiver.install import READ_ALL_ORDERS, scope_gaps
from receiver.stats import (
    delivery_health,
    format_money,
    money_sum,
    money_value,
    order_time,
)

WEBHOOK_WINDOW = timedelta(hours=24)
# A credentials error is Shopify's own text; the card shows its start, the store page the rest.
ERROR_PREVIEW = 160


@dataclass(frozen=True)
class Money:
    currency: str | None
    amount: Decimal

    @property
    def display(self) -> str:
        return format_money(self.amount, self.currency)

    @property
    def digits(self) -> str:
        """The amount alone, grouped (the page keeps it on one line)."""
        return format_money(self.amount, None)


@dataclass(frozen=True)
class WebhookHealth:
    received_24h: int
    failed_24h: int  # failed or dead among those
    last_received_at: datetime | None

    @property
    def state(self) -> str:
        """ok, failing (some of the last day's deliveries failed), quiet (none in a day) or
        none (never any)."""
        if self.last_received_at is None:
            return "none"
        if self.failed_24h:
            return "failing"
        return "ok" if self.received_24h else "quiet"


@dataclass(frozen=True)
class SyncState:
    job_id: int
    status: str
    mode: str
    records: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class Alert:
    """Something wrong with a store, and what to do about it."""

    # silent_topics, dead_events, invalid_credentials, no_token, missing_scopes, uninstalled
    kind: str
    message: str
    action: str
    count: int = 0
    command: str | None = None  # a shell command that helps, shown as code


@dataclass(frozen=True)
class StoreOverview:
    shop_domain: str
    status: str
    has_token: bool
    revenue_today: list[Money]
    revenue_month: list[Money]
    webhooks: WebhookHealth
    sync: SyncState | None
    dead_events: int
    silent_topics: list[str]
    alerts: list[Alert] = field(default_factory=list)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


async def _revenue(
    session: AsyncSession, tenant_ids: list[int], now: datetime
) -> dict[int, tuple[list[Money], list[Money]]]:
    """Per store and currency, gross order totals (not cancelled, not deleted) of today and
    of this month, UTC, by when the order happened (processed_at, else created_at)."""
    today, month = _day_start(now), month_start(now)
    happened = order_time()
    rows = await session.execute(
        select(
            Order.tenant_id,
            Order.currency,
            money_sum(session, case((happened >= today, Order.total_price))).label("today"),
            money_sum(session, Order.total_price.expression).label("month"),
        )
        .where(
            Order.tenant_id.in_(tenant_ids),
            Order.deleted_at.is_(None),
            Order.cancelled_at.is_(None),
            Order.total_price.is_not(None),
            # `happened >= month`, spelled so that the (tenant_id, processed_at) index finds
            # the month's orders instead of a scan of the store's every order.
            or_(
                Order.processed_at >= month,
                and_(Order.processed_at.is_(None), Order.shopify_created_at >= month),
            ),
        )
        .group_by(Order.tenant_id, Order.currency)
        .order_by(Order.tenant_id, Order.currency)
    )
    revenue: dict[int, tuple[list[Money], list[Money]]] = {tid: ([], []) for tid in tenant_ids}
    for tenant_id, currency, day_total, month_total in rows:
        day_list, month_list = revenue[tenant_id]
        if day_total is not None:
            day_list.append(Money(currency, money_value(session, day_total)))
        month_list.append(Money(currency, money_value(session, month_total)))
    return revenue


async def _webhooks(
    session: AsyncSession, tenant_ids: list[int], now: datetime
) -> dict[int, WebhookHealth]:
    failed = WebhookEvent.status.in_([EventStatus.FAILED, EventStatus.DEAD])
    rows = await session.execute(
        select(WebhookEvent.tenant_id, func.count(), func.sum(case((failed, 1), else_=0)))
        .where(
            WebhookEvent.tenant_id.in_(tenant_ids),
            WebhookEvent.received_at >= now - WEBHOOK_WINDOW,
        )
        .group_by(WebhookEvent.tenant_id)
    )
    day = {tenant_id: (int(total), int(failures or 0)) for tenant_id, total, failures in rows}
    health = {}
    for tenant_id in tenant_ids:
        # One store at a time: a short backward scan of the (tenant_id, received_at) index.
        last = await session.scalar(
            select(func.max(WebhookEvent.received_at)).where(
                of_store(WebhookEvent.tenant_id, tenant_id)
            )
        )
        received, failures = day.get(tenant_id, (0, 0))
        health[tenant_id] = WebhookHealth(received, failures, last)
    return health


async def _dead_events(session: AsyncSession, tenant_ids: list[int]) -> dict[int, int]:
    rows = await session.execute(
        select(WebhookEvent.tenant_id, func.count())
        .where(WebhookEvent.tenant_id.in_(tenant_ids), WebhookEvent.status == EventStatus.DEAD)
        .group_by(WebhookEvent.tenant_id)
    )
    return {tenant_id: int(total) for tenant_id, total in rows if tenant_id is not None}


def _records(progress: dict[str, Any], resources: list[str]) -> int:
    total = 0
    for name in resources:
        entry = progress.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("count"), int):
            total += entry["count"]
    return total


async def _latest_syncs(session: AsyncSession, tenant_ids: list[int]) -> dict[int, SyncState]:
    latest = (
        select(func.max(SyncJob.id).label("id"))
        .where(SyncJob.tenant_id.in_(tenant_ids))
        .group_by(SyncJob.tenant_id)
        .subquery()
    )
    jobs = await session.scalars(select(SyncJob).join(latest, SyncJob.id == latest.c.id))
    return {
        job.tenant_id: SyncState(
            job_id=job.id,
            status=job.status,
            mode=job.mode,
            records=_records(job.progress or {}, list(job.resources or [])),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
        )
        for job in jobs
    }


def store_alerts(
    tenant: Tenant, dead_events: int, silent_topics: list[str], sync: SyncState | None
) -> list[Alert]:
    """What needs attention, most blocking first; each alert says what to do."""
    shop = tenant.shop_domain
    if tenant.status != TenantStatus.ACTIVE:
        return [
            Alert(
                "uninstalled",
                f"The app is {tenant.status} on this store: nothing is received or synced.",
                "Install the app again to resume.",
            )
        ]
    alerts = []
    if tenant.credentials_status == CredentialsStatus.INVALID:
        error = (tenant.credentials_error or "").strip()
        if len(error) > ERROR_PREVIEW:
            error = error[: ERROR_PREVIEW - 1] + "…"
        alerts.append(
            Alert(
                "invalid_credentials",
                "Shopify refused the store's access token" + (f": {error}" if error else "."),
                "An admin can give it a new token (Administration, Add a store), or reinstall "
                "the app.",
            )
        )
    elif not tenant.access_token_encrypted:
        alerts.append(
            Alert(
                "no_token",
                "No Admin API access token: backfill, reconcile and subscription checks "
                "cannot run.",
                "An admin can add its token (Administration, Add a store), or install the app.",
            )
        )
    missing = scope_gaps(tenant.granted_scopes)
    if missing:
        alerts.append(
            Alert(
                "missing_scopes",
                f"The store did not grant {', '.join(missing)}: what needs them is not synced"
                + (" (orders older than 60 days)" if READ_ALL_ORDERS in missing else "")
                + ".",
                "Add them to the app's scopes (shopify.app.toml, SHOPIFY_SCOPES) and install "
                "again; read_all_orders needs Shopify's approval first.",
                count=len(missing),
            )
        )
    if dead_events:
        plural = "s" if dead_events != 1 else ""
        alerts.append(
            Alert(
                "dead_events",
                f"{dead_events} dead event{plural}: failed on every attempt.",
                "Fix the cause, then replay them from the store's page.",
                count=dead_events,
            )
        )
    if silent_topics:
        alerts.append(
            Alert(
                "silent_topics",
                f"Silent for unusually long: {', '.join(silent_topics)}.",
                "Shopify may have stopped delivering; check the subscriptions:",
                count=len(silent_topics),
                command=f"shopify-receiver webhooks sync {shop}",
            )
        )
    if sync is not None and sync.status == SyncStatus.FAILED:
        alerts.append(
            Alert(
                "sync_failed",
                f"The last backfill (#{sync.job_id}) failed.",
                "See its error on the store's page, then run it again.",
            )
        )
    return alerts


async def store_overviews(
    session: AsyncSession, tenants: list[Tenant], now: datetime
) -> list[StoreOverview]:
    """One overview per store, in the given order; `tenants` are those the caller may see."""
    if not tenants:
        return []
    ids = [tenant.id for tenant in tenants]
    await use_all_tenants(session)
    revenue = await _revenue(session, ids, now)
    webhooks = await _webhooks(session, ids, now)
    dead = await _dead_events(session, ids)
    syncs = await _latest_syncs(session, ids)
    overviews = []
    for tenant in tenants:
        health = await delivery_health(session, tenant.id, now)
        silent = health["silent_topics"]
        sync = syncs.get(tenant.id)
        overviews.append(
            StoreOverview(
                shop_domain=tenant.shop_domain,
                status=tenant.status,
                has_token=bool(tenant.access_token_encrypted),
                revenue_today=revenue[tenant.id][0],
                revenue_month=revenue[tenant.id][1],
                webhooks=webhooks[tenant.id],
                sync=sync,
                dead_events=dead.get(tenant.id, 0),
                silent_topics=silent,
                alerts=store_alerts(tenant, dead.get(tenant.id, 0), silent, sync),
            )
        )
    return overviews


# -- the admin page's lists ---------------------------------------------------------------


@dataclass(frozen=True)
class UserRow:
    email: str
    is_admin: bool
    stores: list[str]
    last_login_at: datetime | None
    disabled: bool


@dataclass(frozen=True)
class TokenRow:
    name: str
    read_only: bool
    stores: list[str]  # empty: every store
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


async def _store_names(session: AsyncSession) -> dict[int, str]:
    rows = await session.execute(select(Tenant.id, Tenant.shop_domain))
    return {tenant_id: domain for tenant_id, domain in rows}


async def list_users(session: AsyncSession) -> list[UserRow]:
    """Every dashboard user and the stores a viewer may see (admins see all)."""
    await use_all_tenants(session)
    names = await _store_names(session)
    access: dict[int, list[str]] = {}
    for user_id, tenant_id in await session.execute(
        select(UserTenant.user_id, UserTenant.tenant_id)
    ):
        access.setdefault(user_id, []).append(names.get(tenant_id, "?"))
    users = await session.scalars(select(User).order_by(User.email))
    return [
        UserRow(
            user.email,
            user.is_admin,
            sorted(access.get(user.id, [])),
            user.last_login_at,
            user.disabled_at is not None,
        )
        for user in users
    ]


async def list_tokens(session: AsyncSession) -> list[TokenRow]:
    """Every API token (never its value: only a hash is stored) and its scope."""
    await use_all_tenants(session)
    names = await _store_names(session)
    scopes: dict[int, list[str]] = {}
    for token_id, tenant_id in await session.execute(
        select(ApiTokenTenant.api_token_id, ApiTokenTenant.tenant_id)
    ):
        scopes.setdefault(token_id, []).append(names.get(tenant_id, "?"))
    tokens = await session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id))
    return [
        TokenRow(
            token.name,
            token.read_only,
            sorted(scopes.get(token.id, [])),
            token.created_at,
            token.last_used_at,
            token.revoked_at is not None,
        )
        for token in tokens
    ]
