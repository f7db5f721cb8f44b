"""The dashboard's numbers for one store, and `GET /api/stats?shop=`.

Every query is filtered by the store's `tenant_id` and runs unchanged on PostgreSQL and SQLite,
except two small dialect switches: summing money (SQLite keeps it as decimal text, and its SUM
would go through floats) and truncating a timestamp to its UTC day.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import (
    BigInteger,
    Date,
    Float,
    Text,
    and_,
    case,
    cast,
    func,
    literal_column,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from handlers.dispatch import last_received
from handlers.resources import RESOURCES, Resource
from models import (
    InventoryLevel,
    Order,
    OrderLineItem,
    OrderRefund,
    Product,
    ProductVariant,
    ReconcileRun,
    ShopRecord,
    SyncJob,
    Tenant,
    WebhookEvent,
    WebhookSubscription,
    utcnow,
)
from models.statuses import EventStatus
from models.tenancy import of_store, use_tenant
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


class DateRange(TypedDict):
    key: str
    label: str
    # Inclusive start (None for "all") and exclusive end, ISO 8601 UTC.
    start: str | None
    end: str
    # The chart's step: "day" or "month" (UTC), and the first bucket of the chart.
    bucket: str
    first_bucket: str | None


class CurrencySales(TypedDict):
    currency: str | None
    orders: int
    gross: str
    refunds: str
    net: str


class SeriesForCurrency(TypedDict):
    currency: str | None
    orders: list[int]
    revenue: list[str]


class Sales(TypedDict):
    # Orders placed in the range (not deleted; cancelled ones included: they were placed).
    orders: int
    by_currency: list[CurrencySales]
    # One entry per bucket (its first day, ISO date), then one series per currency.
    buckets: list[str]
    series: list[SeriesForCurrency]
    # The store's newest and oldest order at any time: the empty states say why nothing shows.
    newest_order_at: str | None
    oldest_order_at: str | None


class TopItem(TypedDict):
    product_shopify_id: int | None
    variant_shopify_id: int | None
    title: str | None
    variant_title: str | None
    currency: str | None
    units: int
    revenue: str


class LowStock(TypedDict):
    variant_shopify_id: int
    product_title: str | None
    variant_title: str | None
    sku: str | None
    available: int
    locations: int


class StoreStats(TypedDict):
    shop: str
    tenant_id: int
    status: str
    generated_at: str
    counts: Counts
    webhooks_24h: Webhooks
    lag_ms: Lag
    failed_events: list[FailedEvent]
    retries: EventRetries
    recent_orders: list[RecentOrder]
    sync_jobs: list[dict[str, Any]]
    delivery_health: DeliveryHealth
    last_reconcile: LastReconcile | None
    range: DateRange
    sales: Sales
    top_products: list[TopItem]
    top_variants: list[TopItem]
    low_stock: list[LowStock]
    low_stock_threshold: int


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


def money_sum(session: AsyncSession, amount: ColumnElement[Any]) -> ColumnElement[Any]:
    if _is_sqlite(session):
        # Text -> REAL -> rounded to an integer count of 1/10000: exact for any amount under
        # about 9e11, and SQLite sums integers exactly.
        return func.sum(cast(func.round(cast(amount, Float) * MONEY_SCALE), BigInteger))
    return func.sum(amount)


def money_value(session: AsyncSession, value: Any) -> Decimal:
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
        .where(of_store(model.tenant_id, tenant_id), model.deleted_at.is_(None))
    )
    return int(total or 0)


async def _webhooks(session: AsyncSession, tenant_id: int, now: datetime) -> Webhooks:
    rows = await session.execute(
        select(WebhookEvent.topic, WebhookEvent.status, func.count())
        .where(
            of_store(WebhookEvent.tenant_id, tenant_id),
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
            of_store(WebhookEvent.tenant_id, tenant_id),
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
            of_store(WebhookEvent.tenant_id, tenant_id),
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
                of_store(WebhookEvent.tenant_id, tenant_id),
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
    # The newest by processed_at, and the newest of those without one by created_at, each
    # read backwards off its index, then merged: no sort of the store's orders.
    live = (of_store(Order.tenant_id, tenant_id), Order.deleted_at.is_(None))
    candidates: list[Order] = []
    for column, which in _HALVES:
        candidates += await session.scalars(
            select(Order).where(*live, which).order_by(column.desc()).limit(RECENT_ORDERS)
        )
    timed = [(_happened(order), order) for order in candidates]
    newest = sorted(
        ((when, order) for when, order in timed if when is not None),
        key=lambda pair: pair[0],
        reverse=True,
    )[:RECENT_ORDERS]
    return [
        {
            "name": order.name,
            "total_price": money_str(order.total_price) if order.total_price is not None else None,
            "currency": order.currency,
            "financial_status": order.financial_status,
            "cancelled": order.cancelled_at is not None,
            "happened_at": when.isoformat(),
        }
        for when, order in newest
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
        .where(of_store(WebhookEvent.tenant_id, tenant_id), WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.topic)
    )
    week = {
        topic: (int(total), int(failures or 0), int(duplicates or 0), first)
        for topic, total, failures, duplicates, first in rows
    }
    subscriptions = (
        await session.scalars(
            select(WebhookSubscription).where(of_store(WebhookSubscription.tenant_id, tenant_id))
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


def compared(resource: str, entry: dict[str, Any], started: datetime) -> str:
    """What a reconcile line compared: every record, or (orders without `read_all_orders`,
    which Shopify shows only for 60 days) those created since a moment."""
    since = entry.get("compared_since")
    if not isinstance(since, str):
        return f"all {resource}"
    try:
        moment = datetime.fromisoformat(since)
    except ValueError:
        return f"{resource} created since {since}"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    days = round((started - moment).total_seconds() / 86400)
    return f"{resource} of the last {days} days (since {moment.date().isoformat()})"


def format_money(amount: str | Decimal | None, currency: str | None) -> str:
    """`'5240764.97', 'USD'` -> `'USD 5,240,764.97'`: thousands separators, at least two
    decimals, the currency first so amounts of several currencies never read as one (the store
    page's script replaces it with Intl.NumberFormat's localised form; this is what shows
    without script, and on the home page)."""
    if amount is None:
        return "—"
    grouped = format(Decimal(money_str(Decimal(amount))), ",f")
    return f"{currency} {grouped}" if currency else grouped


async def last_reconcile(session: AsyncSession, tenant_id: int) -> LastReconcile | None:
    run = await session.scalar(
        select(ReconcileRun)
        .where(of_store(ReconcileRun.tenant_id, tenant_id))
        .order_by(ReconcileRun.started_at.desc(), ReconcileRun.id.desc())
        .limit(1)
    )
    if run is None:
        return None
    resources = []
    for name, entry in sorted((run.report or {}).items()):
        if isinstance(entry, dict):
            resources.append(
                {"resource": name, "compared": compared(name, entry, run.started_at)} | entry
            )
    return {
        "id": run.id,
        "status": run.status,
        "trigger": run.trigger,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error,
        "resources": resources,
    }


async def _sync_jobs(session: AsyncSession, tenant_id: int, now: datetime) -> list[dict[str, Any]]:
    jobs = await session.scalars(
        select(SyncJob)
        .where(of_store(SyncJob.tenant_id, tenant_id))
        .order_by(SyncJob.created_at.desc(), SyncJob.id.desc())
        .limit(SYNC_JOBS)
    )
    documents = [job_document(job) for job in jobs]
    return [document | {"summary": job_summary(document, now)} for document in documents]


# The date ranges the store page offers (query parameter `range`), with their label and length
# in whole UTC days; "12m" runs from the first day of the month eleven months back and "all"
# from the store's oldest order, both charted by month.
RANGES: dict[str, tuple[str, int | None]] = {
    "7d": ("Last 7 days", 7),
    "30d": ("Last 30 days", 30),
    "90d": ("Last 90 days", 90),
    "12m": ("Last 12 months", None),
    "all": ("All time", None),
}
DEFAULT_RANGE = "30d"
MONTHLY = ("12m", "all")
TOP_ITEMS = 10
# Top products over 90 days or more read every line item of the range (2,000,000 for a store
# of 1M orders over three years: seconds, not milliseconds). They move slowly, so each app
# process keeps them this long per store and range instead of re-reading them on every 3 s
# poll of every open page; shorter ranges are always read fresh.
TOP_ITEMS_TTL_S = 60.0
TOP_ITEMS_CACHED = ("90d", "12m", "all")
TOP_ITEMS_CACHE_SIZE = 256
LOW_STOCK = 5
LOW_STOCK_ROWS = 10


def range_key(value: str | None) -> str:
    """The range a request names, or the default for anything else (never an error: a
    hand-edited URL still shows the page)."""
    return value if value in RANGES else DEFAULT_RANGE


def _month_start(moment: datetime) -> datetime:
    return _day_start(moment).replace(day=1)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=index // 12, month=index % 12 + 1, day=1)


def date_range(key: str, now: datetime, oldest: datetime | None) -> DateRange:
    """The window a range key covers at `now`: whole UTC days (or months), today included."""
    label, days = RANGES[key]
    end = _day_start(now) + timedelta(days=1)
    start: datetime | None
    first_bucket: datetime | None
    if days is not None:
        start = first_bucket = _day_start(now) - timedelta(days=days - 1)
    elif key == "12m":
        start = first_bucket = _add_months(_month_start(now), -11)
    else:
        start = None
        first_bucket = _month_start(oldest) if oldest is not None else None
    return {
        "key": key,
        "label": label,
        "start": start.isoformat() if start else None,
        "end": end.isoformat(),
        "bucket": "month" if key in MONTHLY else "day",
        "first_bucket": first_bucket.date().isoformat() if first_bucket else None,
    }


def bucket_dates(window: DateRange, now: datetime) -> list[str]:
    """Every bucket's first day from the range's first bucket to now, oldest first."""
    if window["first_bucket"] is None:
        return []
    first = datetime.fromisoformat(window["first_bucket"]).replace(tzinfo=UTC)
    if window["bucket"] == "day":
        days = (_day_start(now) - first).days + 1
        return [(first + timedelta(days=offset)).date().isoformat() for offset in range(days)]
    last = _month_start(now)
    months = (last.year - first.year) * 12 + last.month - first.month + 1
    return [_add_months(first, offset).date().isoformat() for offset in range(months)]


def _utc_month(session: AsyncSession, moment: ColumnElement[datetime]) -> ColumnElement[Any]:
    if _is_sqlite(session):
        return func.strftime("%Y-%m-01", moment)
    return cast(
        func.date_trunc(literal_column("'month'"), func.timezone(literal_column("'UTC'"), moment)),
        Date,
    )


# A nullable timestamp column of a mapped table.
Moment = QueryableAttribute[datetime | None]


def _bounds(column: Moment, window: DateRange) -> list[ColumnElement[bool]]:
    terms = [column < datetime.fromisoformat(window["end"])]
    if window["start"] is not None:
        terms.append(column >= datetime.fromisoformat(window["start"]))
    return terms


def _happened_in(processed: Moment, created: Moment, window: DateRange) -> ColumnElement[bool]:
    """processed_at, else created_at, within the window, written as plain column comparisons:
    under row-level security PostgreSQL uses only leakproof conditions as index conditions,
    and COALESCE(...) is not one, so `COALESCE(a, b) >= x` would read every order of the
    store. These use ix_orders_tenant_processed and ix_orders_tenant_created_unprocessed."""
    return or_(
        and_(*_bounds(processed, window)),
        and_(processed.is_(None), *_bounds(created, window)),
    )


def _happened(order: Order) -> datetime | None:
    return order.processed_at or order.shopify_created_at


# The two halves of "when an order happened" and the index each reads (see _happened_in).
_HALVES: tuple[tuple[Moment, ColumnElement[bool]], ...] = (
    (Order.processed_at, Order.processed_at.is_not(None)),
    (Order.shopify_created_at, Order.processed_at.is_(None)),
)


async def _order_span(
    session: AsyncSession, tenant_id: int
) -> tuple[datetime | None, datetime | None]:
    """The store's newest and oldest order time: index probes, not a scan."""
    live = (of_store(Order.tenant_id, tenant_id), Order.deleted_at.is_(None))
    newest: list[datetime] = []
    oldest: list[datetime] = []
    for column, which in _HALVES:
        query = select(column).where(*live, which, column.is_not(None)).limit(1)
        last = await session.scalar(query.order_by(column.desc()))
        first = await session.scalar(query.order_by(column))
        newest += [last] if last is not None else []
        oldest += [first] if first is not None else []
    return (max(newest) if newest else None, min(oldest) if oldest else None)


async def _sales(
    session: AsyncSession,
    tenant_id: int,
    window: DateRange,
    now: datetime,
    span: tuple[datetime | None, datetime | None],
) -> Sales:
    happened = order_time()
    bucket = (
        _utc_month(session, happened)
        if window["bucket"] == "month"
        else _utc_day(session, happened)
    ).label("bucket")
    counted = case(
        (Order.cancelled_at.is_(None), Order.total_price),
    )
    rows = await session.execute(
        select(bucket, Order.currency, func.count(), money_sum(session, counted).label("gross"))
        .where(
            of_store(Order.tenant_id, tenant_id),
            Order.deleted_at.is_(None),
            _happened_in(Order.processed_at, Order.shopify_created_at, window),
        )
        .group_by(bucket, Order.currency)
    )
    buckets = bucket_dates(window, now)
    position = {date: index for index, date in enumerate(buckets)}
    orders: dict[str | None, list[int]] = {}
    revenue: dict[str | None, list[Decimal]] = {}
    for day, currency, total, gross in rows:
        index = position.get(str(day)[:10])
        if index is None:  # an order dated in the future: counted, not charted
            continue
        orders.setdefault(currency, [0] * len(buckets))[index] += int(total)
        revenue.setdefault(currency, [Decimal(0)] * len(buckets))[index] += money_value(
            session, gross
        )
    refunds = await _refunds(session, tenant_id, window)
    currencies = sorted(set(orders) | set(refunds), key=lambda code: code or "")
    by_currency: list[CurrencySales] = []
    for currency in currencies:
        gross_total = sum(revenue.get(currency, []), Decimal(0))
        refunded = refunds.get(currency, Decimal(0))
        by_currency.append(
            {
                "currency": currency,
                "orders": sum(orders.get(currency, [])),
                "gross": money_str(gross_total),
                "refunds": money_str(refunded),
                "net": money_str(gross_total - refunded),
            }
        )
    newest, oldest = span
    return {
        "orders": sum(sum(counts) for counts in orders.values()),
        "by_currency": by_currency,
        "buckets": buckets,
        "series": [
            {
                "currency": currency,
                "orders": orders[currency],
                "revenue": [money_str(amount) for amount in revenue[currency]],
            }
            for currency in sorted(orders, key=lambda code: code or "")
        ],
        "newest_order_at": newest.isoformat() if newest else None,
        "oldest_order_at": oldest.isoformat() if oldest else None,
    }


async def _refunds(
    session: AsyncSession, tenant_id: int, window: DateRange
) -> dict[str | None, Decimal]:
    """Money refunded in the range per currency, by when the refund happened."""
    rows = await session.execute(
        select(OrderRefund.currency, money_sum(session, OrderRefund.total_refunded.expression))
        .where(
            of_store(OrderRefund.tenant_id, tenant_id),
            OrderRefund.deleted_at.is_(None),
            _happened_in(OrderRefund.processed_at, OrderRefund.shopify_created_at, window),
        )
        .group_by(OrderRefund.currency)
    )
    return {currency: money_value(session, total) for currency, total in rows}


def _line_revenue(session: AsyncSession) -> ColumnElement[Any]:
    """A line's revenue: price times quantity less its discounts."""
    discount = func.coalesce(OrderLineItem.total_discount, 0)
    if _is_sqlite(session):
        return cast(OrderLineItem.price, Float) * OrderLineItem.quantity - cast(discount, Float)
    return OrderLineItem.price * OrderLineItem.quantity - discount


async def _top_items(
    session: AsyncSession, tenant_id: int, window: DateRange
) -> tuple[list[TopItem], list[TopItem]]:
    """Products by revenue and variants by units sold in the range's orders (cancelled and
    deleted ones left out), from their line items. One statement: the line items are read and
    summed per variant once, and both lists are cut from that."""
    currency = func.coalesce(OrderLineItem.currency, Order.currency)
    sold = (
        select(
            OrderLineItem.product_shopify_id.label("product"),
            OrderLineItem.variant_shopify_id.label("variant"),
            currency.label("currency"),
            func.max(OrderLineItem.title).label("title"),
            func.max(OrderLineItem.variant_title).label("variant_title"),
            func.sum(func.coalesce(OrderLineItem.quantity, 0)).label("units"),
            money_sum(session, _line_revenue(session)).label("revenue"),
        )
        .join(
            Order,
            (Order.tenant_id == OrderLineItem.tenant_id)
            & (Order.shopify_id == OrderLineItem.order_shopify_id),
        )
        .where(
            of_store(OrderLineItem.tenant_id, tenant_id),
            OrderLineItem.deleted_at.is_(None),
            of_store(Order.tenant_id, tenant_id),
            Order.deleted_at.is_(None),
            Order.cancelled_at.is_(None),
            _happened_in(Order.processed_at, Order.shopify_created_at, window),
        )
        .group_by(OrderLineItem.product_shopify_id, OrderLineItem.variant_shopify_id, currency)
        .cte("sold")
    )
    units = func.sum(sold.c.units).label("units")
    revenue = func.sum(sold.c.revenue).label("revenue")
    products = (
        select(
            literal_column("'product'").label("kind"),
            sold.c.product,
            cast(null(), BigInteger).label("variant"),
            sold.c.currency,
            func.max(sold.c.title).label("title"),
            cast(null(), Text).label("variant_title"),
            units,
            revenue,
        )
        .group_by(sold.c.product, sold.c.currency)
        .order_by(revenue.desc(), sold.c.product)
        .limit(TOP_ITEMS)
        .subquery()
    )
    variants = (
        select(
            literal_column("'variant'").label("kind"),
            sold.c.product,
            sold.c.variant,
            sold.c.currency,
            sold.c.title,
            sold.c.variant_title,
            sold.c.units,
            sold.c.revenue,
        )
        .order_by(sold.c.units.desc(), sold.c.product, sold.c.variant)
        .limit(TOP_ITEMS)
        .subquery()
    )
    rows = (await session.execute(union_all(select(products), select(variants)))).all()
    lists: dict[str, list[TopItem]] = {"product": [], "variant": []}
    for row in rows:
        lists[row.kind].append(
            {
                "product_shopify_id": row.product,
                "variant_shopify_id": row.variant,
                "title": row.title,
                "variant_title": row.variant_title,
                "currency": row.currency,
                "units": int(row.units or 0),
                "revenue": money_str(money_value(session, row.revenue)),
            }
        )
    # A union keeps no order: each list is sorted again as its query cut it.
    lists["product"].sort(
        key=lambda item: (-Decimal(item["revenue"]), item["product_shopify_id"] or 0)
    )
    lists["variant"].sort(
        key=lambda item: (
            -item["units"],
            item["product_shopify_id"] or 0,
            item["variant_shopify_id"] or 0,
        )
    )
    return lists["product"], lists["variant"]


async def _low_stock(session: AsyncSession, tenant_id: int) -> list[LowStock]:
    """Variants whose stock available over all their locations is at or under LOW_STOCK,
    lowest first (a snapshot of now: stock has no history to range over)."""
    available = func.sum(func.coalesce(InventoryLevel.available, 0)).label("available")
    rows = await session.execute(
        select(
            ProductVariant.shopify_id,
            func.max(Product.title).label("product_title"),
            func.max(ProductVariant.title).label("variant_title"),
            func.max(ProductVariant.sku).label("sku"),
            available,
            func.count(InventoryLevel.id).label("locations"),
        )
        .join(
            InventoryLevel,
            (InventoryLevel.tenant_id == ProductVariant.tenant_id)
            & (
                InventoryLevel.inventory_item_shopify_id == ProductVariant.inventory_item_shopify_id
            ),
        )
        .outerjoin(
            Product,
            (Product.tenant_id == ProductVariant.tenant_id)
            & (Product.shopify_id == ProductVariant.product_shopify_id),
        )
        .where(
            of_store(ProductVariant.tenant_id, tenant_id),
            ProductVariant.deleted_at.is_(None),
            InventoryLevel.deleted_at.is_(None),
            Product.deleted_at.is_(None),
        )
        .group_by(ProductVariant.shopify_id)
        .having(available <= LOW_STOCK)
        .order_by(available, ProductVariant.shopify_id)
        .limit(LOW_STOCK_ROWS)
    )
    return [
        {
            "variant_shopify_id": row.shopify_id,
            "product_title": row.product_title,
            "variant_title": row.variant_title,
            "sku": row.sku,
            "available": int(row.available or 0),
            "locations": int(row.locations),
        }
        for row in rows
    ]


TopLists = tuple[list[TopItem], list[TopItem]]


class TopItemsCache:
    """Per app process: (store, range, window) -> top products and variants, for a while."""

    def __init__(
        self, ttl_s: float = TOP_ITEMS_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.entries: dict[tuple[int, str, str | None, str], tuple[float, TopLists]] = {}

    async def get(self, session: AsyncSession, tenant_id: int, window: DateRange) -> TopLists:
        if window["key"] not in TOP_ITEMS_CACHED:
            return await _top_items(session, tenant_id, window)
        key = (tenant_id, window["key"], window["start"], window["end"])
        hit = self.entries.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        lists = await _top_items(session, tenant_id, window)
        if len(self.entries) >= TOP_ITEMS_CACHE_SIZE:
            self.entries.pop(min(self.entries, key=lambda k: self.entries[k][0]))
        self.entries[key] = (self.clock() + self.ttl_s, lists)
        return lists


def top_items_cache(request: Request) -> TopItemsCache:
    """The app's cache, made on first use (nothing is built at import)."""
    state = request.app.state
    cache = getattr(state, "top_items_cache", None)
    if not isinstance(cache, TopItemsCache):
        cache = TopItemsCache()
        state.top_items_cache = cache
    return cache


def _passed(moment: str, now: datetime) -> bool:
    try:
        when = datetime.fromisoformat(moment)
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) <= now


def job_summary(document: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A job's progress over all its resources: records, Shopify's total when every resource
    has one (a finished resource's count is its total), percent, rate and ETA, and a rate-limit
    wait when the runner records one (`throttled_until` or `waiting` in the progress)."""
    progress = document.get("progress") or {}
    count, total, known = 0, 0, True
    throttled: Any = progress.get("throttled_until") or progress.get("waiting")
    for name in document.get("resources") or []:
        state = progress.get(name) or {}
        if not isinstance(state, dict):
            continue
        count += int(state.get("count") or 0)
        if state.get("done"):
            total += int(state.get("count") or 0)
        elif isinstance(state.get("total"), int):
            total += max(int(state["total"]), int(state.get("count") or 0))
        else:
            known = False
        throttled = throttled or state.get("throttled_until") or state.get("waiting")
    started = document.get("started_at")
    finished = document.get("finished_at")
    elapsed = None
    if started:
        stop = datetime.fromisoformat(finished) if finished else now
        elapsed = max(0.0, (stop - datetime.fromisoformat(started)).total_seconds())
    rate = count / elapsed if elapsed and count else None
    percent = None
    if known and total:
        percent = min(100.0, round(count / total * 100, 1))
    elif document.get("status") == "succeeded":
        percent = 100.0
    eta = None
    if document.get("status") == "running" and known and rate and total > count:
        eta = round((total - count) / rate)
    if isinstance(throttled, str) and _passed(throttled, now):
        throttled = None  # a wait that is over is no wait
    return {
        "count": count,
        "total": total if known else None,
        "percent": percent,
        "rate_per_s": round(rate, 1) if rate else None,
        "elapsed_s": round(elapsed) if elapsed is not None else None,
        "eta_s": eta,
        "throttled": throttled if isinstance(throttled, str | int | float | dict) else None,
    }


async def store_stats(
    session: AsyncSession,
    tenant: Tenant,
    now: datetime,
    range_name: str = DEFAULT_RANGE,
    cache: TopItemsCache | None = None,
) -> StoreStats:
    """Everything the store page shows, as JSON-ready values.

    - counts: live rows (`deleted_at` is null) of each resource the registry counts.
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
    - range: the date range (`RANGES`) the figures below cover, and the chart's step.
    - sales: in the range, orders placed and per currency the gross (as revenue), refunds
      (`order_refunds` by when they happened) and net; a per-bucket series of orders and
      revenue per currency; the store's newest and oldest order for the empty states.
    - top_products / top_variants: from the range's line items (price x quantity less
      discounts), products by revenue and variants by units.
    - low_stock: variants with at most LOW_STOCK available over all locations, now.
    """
    await use_tenant(session, tenant.id)
    counts: Counts = {
        resource.name: await _count(session, resource.model, tenant.id)
        for resource in counted_resources()
    }
    span = await _order_span(session, tenant.id)
    window = date_range(range_key(range_name), now, span[1])
    top_products, top_variants = await (cache or TopItemsCache(0)).get(session, tenant.id, window)
    return {
        "shop": tenant.shop_domain,
        "tenant_id": tenant.id,
        "status": tenant.status,
        "generated_at": now.astimezone(UTC).isoformat(),
        "counts": counts,
        "webhooks_24h": await _webhooks(session, tenant.id, now),
        "lag_ms": await _lag(session, tenant.id, now),
        "failed_events": await _failed_events(session, tenant.id),
        "retries": await _retries(session, tenant.id),
        "recent_orders": await _recent_orders(session, tenant.id),
        "sync_jobs": await _sync_jobs(session, tenant.id, now),
        "delivery_health": await delivery_health(session, tenant.id, now),
        "last_reconcile": await last_reconcile(session, tenant.id),
        "range": window,
        "sales": await _sales(session, tenant.id, window, now, span),
        "top_products": top_products,
        "top_variants": top_variants,
        "low_stock": await _low_stock(session, tenant.id),
        "low_stock_threshold": LOW_STOCK,
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
        stats = await store_stats(
            session,
            tenant,
            utcnow(),
            range_key(request.query_params.get("range")),
            top_items_cache(request),
        )
    return JSONResponse(stats, headers=NO_STORE)


__all__ = [
    "RANGES",
    "api_stats",
    "format_money",
    "money_str",
    "percentile",
    "range_key",
    "store_stats",
    "top_items_cache",
]
