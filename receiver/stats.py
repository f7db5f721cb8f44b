"""The dashboard's numbers for one store, and `GET /api/stats?shop=`.

Every query is filtered by the store's `tenant_id` and runs unchanged on PostgreSQL and SQLite,
except two small dialect switches: summing money (SQLite keeps it as decimal text, and its SUM
would go through floats) and truncating a timestamp to its UTC day.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import BigInteger, Date, Float, case, cast, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from handlers.dispatch import last_received
from handlers.resources import RESOURCES, Resource
from models import (
    Order,
    ReconcileRun,
    ShopRecord,
    SyncJob,
    Tenant,
    WebhookEvent,
    WebhookSubscription,
    utcnow,
)
from models.statuses import EventStatus
from models.tenancy import use_all_tenants, use_tenant
from receiver.api import job_document, tenant_for_shop
from receiver.auth import authenticate
from receiver.errors import ApiError
from receiver.services import Services

# The document `GET /api/stats` answers and the store page renders: one typed shape, so a
# renamed or missing key is a type error, not a blank cell on the dashboard.
# Live rows per resource the registry marks as counted on the dashboard (by resource name).
Counts = dict[str, int]


def counted_resources() -> list[Resource]:
    """The resources whose live rows the dashboard counts, in registry order."""
    return [resource for resource in RESOURCES.values() if resource.dashboard is not None]


class OrdersOnDay(TypedDict):
    date: str
    count: int


class TopicWebhooks(TypedDict):
    topic: str
    total: int
    by_status: dict[str, int]


class Webhooks(TypedDict):
    total: int
    by_status: dict[str, int]
    by_topic: list[TopicWebhooks]


class Lag(TypedDict):
    samples: int
    p50: int | None
    p95: int | None


class FailedEvent(TypedDict):
    id: int
    topic: str
    status: str  # failed (retried on its own) or dead (replayed only by hand)
    received_at: str
    attempts: int
    next_attempt_at: str | None
    error: str | None


class EventRetries(TypedDict):
    # Failed events waiting for their next attempt, and the soonest of those attempts.
    waiting: int
    next_attempt_at: str | None
    # Events past their last attempt: nothing retries them until someone replays them.
    dead: int


class RecentOrder(TypedDict):
    name: str | None
    total_price: str | None
    currency: str | None
    financial_status: str | None
    cancelled: bool
    happened_at: str | None


class Silence(TypedDict):
    silent: bool
    usual_gap_s: int | None
    judged: bool


class TopicHealth(TypedDict):
    topic: str
    subscribed: bool
    last_delivery_at: str | None
    deliveries_7d: int
    failed_7d: int
    dedupe_hits_7d: int
    usual_gap_s: int | None
    silent: bool


class DeliveryHealth(TypedDict):
    subscriptions_checked_at: str | None
    silent_topics: list[str]
    topics: list[TopicHealth]


class LastReconcile(TypedDict):
    id: int
    status: str
    trigger: str
    started_at: str
    finished_at: str | None
    error: str | None
    # Per resource: {"resource": name} and the run's report entry (counts, watermarks, ...).
    resources: list[dict[str, Any]]


class StoreStats(TypedDict):
    shop: str
    tenant_id: int
    status: str
    generated_at: str
    counts: Counts
    # Per currency: {"currency": code} and a decimal string per REVENUE_WINDOWS label.
    revenue: list[dict[str, str | None]]
    orders_per_day: list[OrdersOnDay]
    webhooks_24h: Webhooks
    lag_ms: Lag
    failed_events: list[FailedEvent]
    retries: EventRetries
    recent_orders: list[RecentOrder]
    sync_jobs: list[dict[str, Any]]
    delivery_health: DeliveryHealth
    last_reconcile: LastReconcile | None


CHART_DAYS = 30
LAG_WINDOW = timedelta(hours=24)
WEBHOOK_WINDOW = timedelta(hours=24)
LAG_SAMPLE = 5000
FAILED_EVENTS = 20
SYNC_JOBS = 10
RECENT_ORDERS = 5
# Money is stored exactly as sent (up to 20 decimals). PostgreSQL sums it exactly; SQLite has
# no decimal arithmetic, so there each amount is summed as a whole number of ten-thousandths
# (exact for amounts with at most four decimals under about 9e11, which is what shops send).
MONEY_SCALE = 10_000
REVENUE_WINDOWS = {"all_time": None, "last_7_days": 7, "last_30_days": 30}
NO_STORE = {"Cache-Control": "no-store"}
# Delivery health judges each topic against its own last week.
HEALTH_WINDOW = timedelta(days=7)
# A topic is "silent" when its quiet spell is this many times its usual gap between deliveries
# (for evenly random traffic, a gap that long happens about once in 3,000 gaps)...
SILENCE_FACTOR = 8
# ...and at least this long, so a busy topic's short lull is not an alarm...
SILENCE_FLOOR = timedelta(hours=1)
# ...and only with enough deliveries in the window to know what usual is.
SILENCE_MIN_DELIVERIES = 3


def money_str(amount: Decimal | None) -> str:
    """`Decimal('150.5000')` -> `'150.50'`: at least two decimals, no trailing noise."""
    value = (amount or Decimal(0)).normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        value = value.quantize(Decimal("0.01"))
    return format(value, "f")


def percentile(sorted_values: list[int], p: float) -> int | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def order_time() -> ColumnElement[datetime]:
    """When an order happened: Shopify's processed_at, else its created_at."""
    return func.coalesce(Order.processed_at, Order.shopify_created_at)


def _is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _money_sum(session: AsyncSession, amount: ColumnElement[Any]) -> ColumnElement[Any]:
    if _is_sqlite(session):
        # Text -> REAL -> rounded to an integer count of 1/10000: exact for any amount under
        # about 9e11, and SQLite sums integers exactly.
        return func.sum(cast(func.round(cast(amount, Float) * MONEY_SCALE), BigInteger))
    return func.sum(amount)


def _money_value(session: AsyncSession, value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    if _is_sqlite(session):
        return Decimal(int(value)) / MONEY_SCALE
    return Decimal(str(value))


def _utc_day(session: AsyncSession, moment: ColumnElement[datetime]) -> ColumnElement[Any]:
    if _is_sqlite(session):
        return func.date(moment)  # stored as naive UTC text: 'YYYY-MM-DD HH:MM:SS...'
    # A literal zone, not a bind parameter, so GROUP BY sees the same expression as SELECT.
    return cast(func.timezone(literal_column("'UTC'"), moment), Date)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def _count(session: AsyncSession, model: type[ShopRecord], tenant_id: int) -> int:
    total = await session.scalar(
        select(func.count())
        .select_from(model)
        .where(model.tenant_id == tenant_id, model.deleted_at.is_(None))
    )
    return int(total or 0)


async def counts_by_tenant(
    session: AsyncSession, tenant_ids: list[int]
) -> dict[int, dict[str, int]]:
    """Live (not tombstoned) rows of each counted resource for several stores at once, and
    their dead events (the home page flags those stores)."""
    counted = counted_resources()
    counts = {
        tenant_id: {**dict.fromkeys((r.name for r in counted), 0), "dead_events": 0}
        for tenant_id in tenant_ids
    }
    if not tenant_ids:
        return counts
    # One query for several stores; the ids were already filtered to what the caller may see.
    await use_all_tenants(session)
    for resource in counted:
        name, model = resource.name, resource.model
        rows = await session.execute(
            select(model.tenant_id, func.count())
            .where(model.tenant_id.in_(tenant_ids), model.deleted_at.is_(None))
            .group_by(model.tenant_id)
        )
        for tenant_id, total in rows:
            counts[tenant_id][name] = int(total)
    dead = await session.execute(
        select(WebhookEvent.tenant_id, func.count())
        .where(WebhookEvent.tenant_id.in_(tenant_ids), WebhookEvent.status == EventStatus.DEAD)
        .group_by(WebhookEvent.tenant_id)
    )
    for dead_tenant, total in dead:
        if dead_tenant is not None:
            counts[dead_tenant]["dead_events"] = int(total)
    return counts


async def _revenue(
    session: AsyncSession, tenant_id: int, now: datetime
) -> list[dict[str, str | None]]:
    happened = order_time()
    columns = []
    for label, days in REVENUE_WINDOWS.items():
        amount: ColumnElement[Any] = Order.total_price.expression
        if days is not None:
            amount = case((happened >= now - timedelta(days=days), Order.total_price))
        columns.append(_money_sum(session, amount).label(label))
    rows = await session.execute(
        select(Order.currency, *columns)
        .where(
            Order.tenant_id == tenant_id,
            Order.deleted_at.is_(None),
            Order.cancelled_at.is_(None),
            Order.total_price.is_not(None),
        )
        .group_by(Order.currency)
        .order_by(Order.currency)
    )
    revenue = []
    for row in rows:
        entry: dict[str, str | None] = {"currency": row.currency}
        for label in REVENUE_WINDOWS:
            entry[label] = money_str(_money_value(session, getattr(row, label)))
        revenue.append(entry)
    return revenue


async def _orders_per_day(
    session: AsyncSession, tenant_id: int, now: datetime
) -> list[OrdersOnDay]:
    first_day = _day_start(now) - timedelta(days=CHART_DAYS - 1)
    end = _day_start(now) + timedelta(days=1)
    day = _utc_day(session, order_time()).label("day")
    rows = await session.execute(
        select(day, func.count())
        .where(
            Order.tenant_id == tenant_id,
            Order.deleted_at.is_(None),
            order_time() >= first_day,
            order_time() < end,
        )
        .group_by(day)
    )
    per_day = {str(value)[:10]: int(total) for value, total in rows}
    days = [(first_day + timedelta(days=offset)).date().isoformat() for offset in range(CHART_DAYS)]
    return [{"date": date, "count": per_day.get(date, 0)} for date in days]


async def _webhooks(session: AsyncSession, tenant_id: int, now: datetime) -> Webhooks:
    rows = await session.execute(
        select(WebhookEvent.topic, WebhookEvent.status, func.count())
        .where(
            WebhookEvent.tenant_id == tenant_id,
            WebhookEvent.received_at >= now - WEBHOOK_WINDOW,
        )
        .group_by(WebhookEvent.topic, WebhookEvent.status)
    )
    by_status: dict[str, int] = {}
    topics: dict[str, dict[str, int]] = {}
    for topic, status, total in rows:
        by_status[status] = by_status.get(status, 0) + int(total)
        topics.setdefault(topic, {})[status] = int(total)
    return {
        "total": sum(by_status.values()),
        "by_status": dict(sorted(by_status.items())),
        "by_topic": [
            {
                "topic": topic,
                "total": sum(statuses.values()),
                "by_status": dict(sorted(statuses.items())),
            }
            for topic, statuses in sorted(topics.items())
        ],
    }


async def _lag(session: AsyncSession, tenant_id: int, now: datetime) -> Lag:
    rows = await session.execute(
        select(WebhookEvent.received_at, WebhookEvent.triggered_at)
        .where(
            WebhookEvent.tenant_id == tenant_id,
            WebhookEvent.received_at >= now - LAG_WINDOW,
            WebhookEvent.triggered_at.is_not(None),
        )
        .order_by(WebhookEvent.received_at.desc())
        .limit(LAG_SAMPLE)
    )
    lags = sorted(
        round((received - triggered).total_seconds() * 1000)
        for received, triggered in rows
        if triggered is not None  # the query filtered them out; this tells the type checker
    )
    return {"samples": len(lags), "p50": percentile(lags, 50), "p95": percentile(lags, 95)}


async def _failed_events(session: AsyncSession, tenant_id: int) -> list[FailedEvent]:
    events = await session.scalars(
        select(WebhookEvent)
        .where(
            WebhookEvent.tenant_id == tenant_id,
            WebhookEvent.status.in_([EventStatus.FAILED, EventStatus.DEAD]),
        )
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
        .limit(FAILED_EVENTS)
    )
    return [
        {
            "id": event.id,
            "topic": event.topic,
            "status": event.status,
            "received_at": event.received_at.isoformat(),
            "attempts": event.attempts,
            "next_attempt_at": event.next_attempt_at.isoformat() if event.next_attempt_at else None,
            "error": event.error,
        }
        for event in events
    ]


async def _retries(session: AsyncSession, tenant_id: int) -> EventRetries:
    failed = WebhookEvent.status == EventStatus.FAILED
    row = (
        await session.execute(
            select(
                func.sum(case((failed, 1), else_=0)),
                func.min(case((failed, WebhookEvent.next_attempt_at))),
                func.sum(case((WebhookEvent.status == EventStatus.DEAD, 1), else_=0)),
            ).where(
                WebhookEvent.tenant_id == tenant_id,
                WebhookEvent.status.in_([EventStatus.FAILED, EventStatus.DEAD]),
            )
        )
    ).one()
    waiting, soonest, dead = row
    return {
        "waiting": int(waiting or 0),
        "next_attempt_at": soonest.isoformat() if soonest else None,
        "dead": int(dead or 0),
    }


async def _recent_orders(session: AsyncSession, tenant_id: int) -> list[RecentOrder]:
    happened = order_time().label("happened")
    rows = await session.execute(
        select(Order, happened)
        .where(Order.tenant_id == tenant_id, Order.deleted_at.is_(None))
        .order_by(happened.desc().nulls_last(), Order.id.desc())
        .limit(RECENT_ORDERS)
    )
    return [
        {
            "name": order.name,
            "total_price": money_str(order.total_price) if order.total_price is not None else None,
            "currency": order.currency,
            "financial_status": order.financial_status,
            "cancelled": order.cancelled_at is not None,
            "happened_at": when.isoformat() if when else None,
        }
        for order, when in rows
    ]


def silence(
    now: datetime, last: datetime | None, deliveries: int, first_in_window: datetime | None
) -> Silence:
    """Whether a subscribed topic has been quiet for unusually long, judged by its own week."""
    if last is None:
        return {"silent": False, "usual_gap_s": None, "judged": False}
    if deliveries < SILENCE_MIN_DELIVERIES or first_in_window is None:
        return {"silent": False, "usual_gap_s": None, "judged": False}
    usual_gap = (now - first_in_window) / deliveries
    limit = max(SILENCE_FLOOR, usual_gap * SILENCE_FACTOR)
    return {
        "silent": now - last > limit,
        "usual_gap_s": round(usual_gap.total_seconds()),
        "judged": True,
    }


async def delivery_health(session: AsyncSession, tenant_id: int, now: datetime) -> DeliveryHealth:
    """Per topic: subscribed or not, last delivery, the week's deliveries, failures and dedupe
    hits, and a warning when a subscribed topic has gone quiet for unusually long."""
    since = now - HEALTH_WINDOW
    failed = func.sum(case((WebhookEvent.status == EventStatus.FAILED, 1), else_=0))
    rows = await session.execute(
        select(
            WebhookEvent.topic,
            func.count(),
            failed,
            func.sum(WebhookEvent.duplicate_count),
            func.min(WebhookEvent.received_at),
        )
        .where(WebhookEvent.tenant_id == tenant_id, WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.topic)
    )
    week = {
        topic: (int(total), int(failures or 0), int(duplicates or 0), first)
        for topic, total, failures, duplicates, first in rows
    }
    subscriptions = (
        await session.scalars(
            select(WebhookSubscription).where(WebhookSubscription.tenant_id == tenant_id)
        )
    ).all()
    subscribed = {subscription.topic for subscription in subscriptions}
    checked_at = await session.scalar(
        select(Tenant.watchdog_checked_at).where(Tenant.id == tenant_id)
    )
    topics: list[TopicHealth] = []
    for topic in sorted(subscribed | set(week)):
        total, failures, duplicates, first = week.get(topic, (0, 0, 0, None))
        last = await last_received(session, tenant_id, topic)
        quiet = silence(now, last, total, first)
        topics.append(
            {
                "topic": topic,
                "subscribed": topic in subscribed,
                "last_delivery_at": last.isoformat() if last else None,
                "deliveries_7d": total,
                "failed_7d": failures,
                "dedupe_hits_7d": duplicates,
                "usual_gap_s": quiet["usual_gap_s"],
                "silent": quiet["silent"] and topic in subscribed,
            }
        )
    return {
        "subscriptions_checked_at": checked_at.isoformat() if checked_at else None,
        "silent_topics": [row["topic"] for row in topics if row["silent"]],
        "topics": topics,
    }


async def last_reconcile(session: AsyncSession, tenant_id: int) -> LastReconcile | None:
    run = await session.scalar(
        select(ReconcileRun)
        .where(ReconcileRun.tenant_id == tenant_id)
        .order_by(ReconcileRun.started_at.desc(), ReconcileRun.id.desc())
        .limit(1)
    )
    if run is None:
        return None
    resources = []
    for name, entry in sorted((run.report or {}).items()):
        if isinstance(entry, dict):
            resources.append({"resource": name} | entry)
    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
        "resources": resources,
    }


async def _sync_jobs(session: AsyncSession, tenant_id: int) -> list[dict[str, Any]]:
    jobs = await session.scalars(
        select(SyncJob)
        .where(SyncJob.tenant_id == tenant_id)
        .order_by(SyncJob.created_at.desc(), SyncJob.id.desc())
        .limit(SYNC_JOBS)
    )
    return [job_document(job) for job in jobs]


async def store_stats(session: AsyncSession, tenant: Tenant, now: datetime) -> StoreStats:
    """Everything the store page shows, as JSON-ready values.

    - counts: live rows (`deleted_at` is null) of each resource the registry counts.
    - revenue: per currency, SUM(total_price) of orders that are neither deleted nor cancelled
      (`cancelled_at` is null), gross: refunds are not subtracted. Windows (all time, last 7
      and 30 days, measured back from `now`) use `processed_at`, falling back to
      `shopify_created_at`. Amounts are Decimal throughout and serialised as strings.
    - orders_per_day: the last 30 UTC days, oldest first, zeros filled in; every order that is
      not deleted counts, cancelled ones included (they were placed that day).
    - webhooks_24h: events received in the last 24 hours, by status and by topic and status.
    - lag_ms: `received_at - triggered_at` in milliseconds over the most recent (at most 5,000)
      events of the last 24 hours that carry Shopify's trigger time; nearest-rank p50 and p95.
    - failed_events: the 20 most recent failed or dead events; sync_jobs: the 10 most recent
      jobs. retries: failed events waiting for their next attempt (and the soonest), and dead
      ones (past EVENT_MAX_ATTEMPTS, replayed only by hand).
    - delivery_health: per topic subscribed or seen in the last 7 days, its last delivery,
      the week's deliveries, failures and dedupe hits, and `silent` when a subscribed topic
      has been quiet for over 8 times its usual gap (and over an hour).
    - last_reconcile: the newest reconcile run and its per-resource report, or null.
    """
    await use_tenant(session, tenant.id)
    counts: Counts = {
        resource.name: await _count(session, resource.model, tenant.id)
        for resource in counted_resources()
    }
    return {
        "shop": tenant.shop_domain,
        "tenant_id": tenant.id,
        "status": tenant.status,
        "generated_at": now.astimezone(UTC).isoformat(),
        "counts": counts,
        "revenue": await _revenue(session, tenant.id, now),
        "orders_per_day": await _orders_per_day(session, tenant.id, now),
        "webhooks_24h": await _webhooks(session, tenant.id, now),
        "lag_ms": await _lag(session, tenant.id, now),
        "failed_events": await _failed_events(session, tenant.id),
        "retries": await _retries(session, tenant.id),
        "recent_orders": await _recent_orders(session, tenant.id),
        "sync_jobs": await _sync_jobs(session, tenant.id),
        "delivery_health": await delivery_health(session, tenant.id, now),
        "last_reconcile": await last_reconcile(session, tenant.id),
    }


async def api_stats(request: Request) -> Response:
    """`GET /api/stats?shop=NAME.myshopify.com`: 401 unauthenticated, 400 bad shop, 404 a store
    that is unknown or that the caller may not see."""
    services: Services = request.state.services
    async with services.sessions() as session, session.begin():
        principal = await authenticate(session, request)
        shop = request.query_params.get("shop")
        if not shop:
            raise ApiError("give the store as ?shop=NAME.myshopify.com")
        tenant = await tenant_for_shop(session, shop, principal)
        stats = await store_stats(session, tenant, utcnow())
    return JSONResponse(stats, headers=NO_STORE)


__all__ = ["api_stats", "counts_by_tenant", "money_str", "percentile", "store_stats"]
