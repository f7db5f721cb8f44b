"""Drift reconciliation: compare Shopify's counts and updated_at watermarks with ours, localise
any difference by bisecting updated_at windows, and repair only the windows that differ.

Webhooks can be lost (a subscription removed after failed deliveries, an outage longer than
Shopify's retries), and rows can be damaged by hand. Totals and newest timestamps alone miss
drift that cancels out or sits in the middle of the history, so the whole updated_at span is
cut into windows whose live counts are compared on both sides: Shopify answers a count for any
`updated_at` range cheaply (`ordersCount(query:, limit: null)`, about one point each, many per
request through aliases), the database counts the same ranges in one scan. Windows that agree
are taken as clean; the others are split until they are small, then repaired by pulling that
window from Shopify and checking, by id, the rows we hold in it that Shopify did not list.

Not detected: a row altered without its count or window changing (a field edited in the
database while `shopify_updated_at` stays put, or a lost create and a lost delete in the same
window). `full=True` compares every record instead of counts.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, TypedDict, cast

from sqlalchemy import ColumnElement, and_, exists, func, or_, select, true, update

from backfill.client import AdminClient, BackfillError, CredentialsInvalid, QueryTooCostly
from backfill.credentials import callable_store
from backfill.queries import RESOURCES, Resource
from backfill.runner import (
    BackfillEnvironment,
    admin_client_for,
    normalize_node,
    page_cost,
    page_size_for,
)
from handlers import upsert_records
from handlers.errors import error_text, may_quote_data
from handlers.normalize import Record, parse_timestamp
from handlers.records import replace_record, tombstone
from handlers.resources import parse_resource_names, reconciled_names
from models import ReconcileRun, ShopRecord, SyncJob, Tenant, utcnow
from models.statuses import ReconcileStatus, ReconcileTrigger, SyncStatus, TenantStatus
from models.tenancy import cross_store_transaction, tenant_transaction

log = logging.getLogger("shopify_receiver.reconcile")

# The first cut of the whole span, always compared: drift that cancels out over the whole
# store (one lost create, one lost delete) rarely cancels inside one of these as well.
INITIAL_WINDOWS = 16
# Children per drifted window and level; one request counts a whole level.
FANOUT = 8
# A drifted window with at most this many records on either side is repaired as it is: one
# page of most resources, cheaper than counting its parts.
LEAF_RECORDS = 250
# Count fields per GraphQL request (aliases); each costs about one point.
WINDOWS_PER_REQUEST = 50
# Count requests per comparison of one resource; windows still drifted when it is spent are
# repaired whole (a larger pull, never a missed window).
MAX_COUNT_REQUESTS = 25
# Repair, then count again; a window still off is repaired once more, then reported.
MAX_PASSES = 2
# A value this close to the moment we read Shopify may be a webhook newer than that read, or a
# write Shopify does not show yet ("A write may not be reflected instantaneously"): left alone.
IN_FLIGHT = timedelta(minutes=5)

# Without the read_all_orders scope Shopify shows only orders created in the last 60 days,
# and answers null for older ones by id: those must never read as deleted. A day of margin
# keeps an order that turns 60 days old during the run out of the comparison.
RECENT_ORDERS = timedelta(days=59)
STATUSES = tuple(ReconcileStatus)


# A drifted window as a report lists it (`from` is a keyword, hence the functional form).
WindowReport = TypedDict("WindowReport", {"from": str, "to": str, "shopify": int, "db": int})


class ResourceReportDocument(TypedDict):
    """A ResourceReport as stored in `reconcile_runs.report` (JSON, keyed by resource)."""

    shopify_count: int | None
    count_precision: str | None
    db_count: int | None
    shopify_watermark: str | None
    db_watermark: str | None
    windows_compared: int
    drifted_windows: int
    repaired: int
    tombstoned: int
    deferred: int
    unstamped: int
    remaining_windows: int
    compared_since: str | None
    queries: int
    windows: list[WindowReport]


ReconcileReport = dict[str, ResourceReportDocument]


@dataclass
class Window:
    """Records with `start <= updated_at < end`, in whole epoch seconds (Shopify's precision)."""

    start: int
    end: int
    shopify: int = 0
    db: int = 0

    @property
    def search(self) -> str:
        return f"updated_at:>='{_iso(self.start)}' updated_at:<'{_iso(self.end)}'"

    @property
    def drifted(self) -> bool:
        return self.shopify != self.db

    def is_leaf(self) -> bool:
        larger = max(self.shopify, self.db)
        return (
            self.end - self.start <= 1
            or larger <= LEAF_RECORDS
            # Half the window or more is off: its parts would all be pulled anyway.
            or abs(self.shopify - self.db) * 2 >= larger
        )

    def split(self, parts: int) -> list[Window]:
        span = self.end - self.start
        bounds = sorted({self.start + span * k // parts for k in range(parts + 1)})
        return [Window(lo, hi) for lo, hi in pairwise(bounds)]

    def describe(self) -> WindowReport:
        return {
            "from": _iso(self.start),
            "to": _iso(self.end),
            "shopify": self.shopify,
            "db": self.db,
        }


@dataclass
class ResourceReport:
    """One resource's comparison and repair, as stored in `reconcile_runs.report`."""

    shopify_count: int | None = None
    count_precision: str | None = None
    db_count: int | None = None
    shopify_watermark: str | None = None
    db_watermark: str | None = None
    windows_compared: int = 0
    drifted_windows: int = 0
    # Rows written from Shopify's version (missing, stale, or wrong beyond the order guard).
    repaired: int = 0
    # Rows we held live that Shopify no longer has.
    tombstoned: int = 0
    # Rows too close to now to judge against our read of Shopify; the next run looks again.
    deferred: int = 0
    # Live rows without a shopify_updated_at: in no window, so checked by id.
    unstamped: int = 0
    # Windows still off after the repair passes (counted again after repairing).
    remaining_windows: int = 0
    # Only records created since then were compared (orders without read_all_orders).
    compared_since: str | None = None
    queries: int = 0
    # The first few drifted windows, for a person reading the report.
    windows: list[WindowReport] = field(default_factory=list)

    def as_json(self) -> ResourceReportDocument:
        # Same keys, same order as the dataclass's fields: stored reports stay byte-identical.
        return cast(ResourceReportDocument, asdict(self))


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _text(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- the documents (validated against Shopify's schema by the simulator's tests) --


def summary_query(resource: Resource) -> str:
    """Exact total (limit: null; the default stops at 10,000 with precision AT_LEAST) and the
    oldest and newest updatedAt, in one request."""
    return (
        "query ReconcileSummary($query: String) {\n"
        f"  total: {resource.count_field}(query: $query, limit: null) {{ count precision }}\n"
        f"  oldest: {resource.name}(first: 1, query: $query, sortKey: UPDATED_AT) "
        "{ nodes { id updatedAt } }\n"
        f"  newest: {resource.name}(first: 1, query: $query, sortKey: UPDATED_AT, reverse: true) "
        "{ nodes { id updatedAt } }\n"
        "}\n"
    )


SCOPES_QUERY = """
query ReconcileScopes {
  currentAppInstallation { accessScopes { handle } }
}
"""


def counts_query(resource: Resource, windows: int) -> str:
    """One count per window, as aliases `w0`, `w1`... of the resource's count field."""
    variables = ", ".join(f"$q{i}: String" for i in range(windows))
    fields = "\n".join(
        f"  w{i}: {resource.count_field}(query: $q{i}, limit: null) {{ count precision }}"
        for i in range(windows)
    )
    return f"query ReconcileCounts({variables}) {{\n{fields}\n}}\n"


def nodes_query(resource: Resource) -> str:
    return (
        "query ReconcileNodes($ids: [ID!]!) {\n"
        "  nodes(ids: $ids) {\n"
        f"    ... on {resource.typename} {{{resource.fields}    }}\n"
        "  }\n"
        "}\n"
    )


def validate_resources(resources: Iterable[str] | None) -> list[str]:
    chosen = list(resources) if resources is not None else None
    return parse_resource_names(chosen, among=reconciled_names())


def _differs(row: ShopRecord, record: Record) -> bool:
    """Does the stored row differ from Shopify's record in any column we keep (raw aside)?"""
    return any(getattr(row, name) != value for name, value in record.items() if name != "raw")


class _Reconciler:
    """One run over one store: an Admin client, the report of each resource."""

    def __init__(
        self, env: BackfillEnvironment, tenant: Tenant, *, repair: bool, full: bool
    ) -> None:
        self.env = env
        self.tenant_id = tenant.id
        self.repair = repair
        self.full = full
        self.client: AdminClient = admin_client_for(env, tenant)
        # Compare only records created at or after this (orders without read_all_orders).
        self.created_since: datetime | None = None

    # -- one resource --

    async def resource(self, resource: Resource, report: ResourceReport) -> None:
        model = resource.model
        requests_before = self.client.stats.requests
        try:
            self.created_since = None
            if resource.name == "orders":
                self.created_since = await self._orders_visible_since()
                report.compared_since = _text(self.created_since)
            initial, drifted = await self._compare(resource, report, first=True)
            report.drifted_windows = len(drifted)
            report.windows = [window.describe() for window in drifted[:20]]
            if not self.repair:
                report.remaining_windows = len(drifted)
                return
            # A full run re-pulls every window, so fields changed without a count or window
            # changing are found too.
            leaves = initial if self.full else drifted
            await self._check_unstamped(resource, model, report)
            for _ in range(MAX_PASSES):
                if not leaves:
                    break
                for window in leaves:
                    await self._repair_window(resource, model, window, report)
                _, leaves = await self._compare(resource, report, first=False)
            report.remaining_windows = len(leaves)
        finally:
            report.queries = self.client.stats.requests - requests_before

    async def _compare(
        self, resource: Resource, report: ResourceReport, *, first: bool
    ) -> tuple[list[Window], list[Window]]:
        """(the initial windows, the drifted leaf windows) after bisecting."""
        model = resource.model
        data = await self.client.execute(
            summary_query(resource), {"query": self._scope_search() or None}, cost=10
        )
        total = data.get("total") or {}
        oldest = _updated_at(data.get("oldest"))
        newest = _updated_at(data.get("newest"))
        db_total, db_oldest, db_newest, unstamped = await self._db_summary(model)
        if first:
            report.shopify_count = total.get("count")
            report.count_precision = total.get("precision")
            report.db_count = db_total
            report.shopify_watermark = _text(newest)
            report.db_watermark = _text(db_newest)
            report.unstamped = unstamped
        starts = [moment for moment in (oldest, db_oldest) if moment is not None]
        ends = [moment for moment in (newest, db_newest) if moment is not None]
        if not starts or not ends:
            return [], []  # nothing on either side
        whole = Window(_seconds(min(starts)), _seconds(max(ends)) + 1)
        initial = whole.split(INITIAL_WINDOWS)
        level = initial
        leaves: list[Window] = []
        requests = 0
        while level:
            requests += await self._count(resource, model, level)
            report.windows_compared += len(level)
            following: list[Window] = []
            for window in level:
                if not window.drifted:
                    continue
                if self.full or window.is_leaf() or requests >= MAX_COUNT_REQUESTS:
                    leaves.append(window)
                else:
                    following.extend(window.split(FANOUT))
            level = following
        return initial, leaves

    async def _count(
        self, resource: Resource, model: type[ShopRecord], windows: list[Window]
    ) -> int:
        """Fill in both sides' counts; returns the number of Shopify requests made."""
        requests = 0
        for offset in range(0, len(windows), WINDOWS_PER_REQUEST):
            chunk = windows[offset : offset + WINDOWS_PER_REQUEST]
            variables = {f"q{i}": self._search(window) for i, window in enumerate(chunk)}
            data = await self.client.execute(
                counts_query(resource, len(chunk)), variables, cost=len(chunk) + 1
            )
            requests += 1
            for i, window in enumerate(chunk):
                count = (data.get(f"w{i}") or {}).get("count")
                if not isinstance(count, int):
                    raise BackfillError(f"{resource.count_field} gave no count for {window.search}")
                window.shopify = count
            # Counted right after Shopify's, so that webhooks landing in between are rare; a
            # mismatch they cause costs one harmless re-pull, never a missed window.
            for window, count in zip(chunk, await self._db_counts(model, chunk), strict=True):
                window.db = count
        return requests

    async def _orders_visible_since(self) -> datetime | None:
        data = await self.client.execute(SCOPES_QUERY, cost=2)
        installation = data.get("currentAppInstallation") or {}
        handles = {scope.get("handle") for scope in installation.get("accessScopes") or []}
        return None if "read_all_orders" in handles else utcnow() - RECENT_ORDERS

    def _scope_search(self) -> str:
        if self.created_since is None:
            return ""
        return f"created_at:>='{_iso(_seconds(self.created_since))}'"

    def _search(self, window: Window) -> str:
        return " ".join(term for term in (window.search, self._scope_search()) if term)

    # -- the database side --

    def _live(self, model: type[ShopRecord]) -> Any:
        live = and_(model.tenant_id == self.tenant_id, model.deleted_at.is_(None))
        if self.created_since is None:
            return live
        return and_(live, model.shopify_created_at >= _moment(_seconds(self.created_since)))

    async def _db_summary(
        self, model: type[ShopRecord]
    ) -> tuple[int, datetime | None, datetime | None, int]:
        stamp = model.shopify_updated_at
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            row = (
                await session.execute(
                    select(
                        func.count(),
                        func.min(stamp),
                        func.max(stamp),
                        func.count().filter(stamp.is_(None)),
                    ).where(self._live(model))
                )
            ).one()
        return int(row[0]), row[1], row[2], int(row[3])

    async def _db_counts(self, model: type[ShopRecord], windows: Sequence[Window]) -> list[int]:
        stamp = model.shopify_updated_at
        columns = [
            func.count().filter(and_(stamp >= _moment(window.start), stamp < _moment(window.end)))
            for window in windows
        ]
        # The overall range lets deeper levels (narrow windows) read only their part of the
        # table when (tenant_id, shopify_updated_at) is indexed, and filter early when not.
        span = and_(
            stamp >= _moment(min(window.start for window in windows)),
            stamp < _moment(max(window.end for window in windows)),
        )
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            row = (await session.execute(select(*columns).where(self._live(model), span))).one()
        return [int(value) for value in row]

    async def _db_ids(self, model: type[ShopRecord], window: Window) -> set[int]:
        stamp = model.shopify_updated_at
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            ids = await session.scalars(
                select(model.shopify_id).where(
                    self._live(model),
                    stamp >= _moment(window.start),
                    stamp < _moment(window.end),
                )
            )
            return set(ids)

    # -- repairs --

    async def _repair_window(
        self, resource: Resource, model: type[ShopRecord], window: Window, report: ResourceReport
    ) -> None:
        """Pull the window from Shopify, write what differs, then check by id the rows we
        hold live in it that Shopify did not list (deleted there, or updated out of it)."""
        normalize = resource.normalize_node
        listed: set[int] = set()
        size = page_size_for(resource)
        after: str | None = None
        while True:
            read_at = utcnow()
            variables = {"first": size, "after": after, "query": self._search(window)}
            try:
                data = await self.client.execute(
                    resource.page_query, variables, cost=page_cost(resource, size)
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            connection = data.get(resource.field) or {}
            nodes = connection.get("nodes") or []
            records = [normalize_node(normalize, node, resource.name) for node in nodes]
            listed.update(record["shopify_id"] for record in records)
            await self._apply(model, records, read_at, report)
            page_info = connection.get("pageInfo") or {}
            if not page_info.get("hasNextPage"):
                break
            after = page_info.get("endCursor")
        unlisted = await self._db_ids(model, window) - listed
        await self._check_ids(resource, model, sorted(unlisted), report)

    async def _check_unstamped(
        self, resource: Resource, model: type[ShopRecord], report: ResourceReport
    ) -> None:
        if not report.unstamped:
            return
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            ids = list(
                await session.scalars(
                    select(model.shopify_id).where(
                        self._live(model), model.shopify_updated_at.is_(None)
                    )
                )
            )
        await self._check_ids(resource, model, ids, report)

    async def _check_ids(
        self, resource: Resource, model: type[ShopRecord], ids: list[int], report: ResourceReport
    ) -> None:
        """Ask Shopify for these records by id: a null means deleted there (tombstone it), a
        record means it moved out of the window (write Shopify's version)."""
        normalize = resource.normalize_node
        typename = resource.typename
        size = page_size_for(resource)
        position = 0
        while position < len(ids):
            chunk = ids[position : position + size]
            read_at = utcnow()
            try:
                data = await self.client.execute(
                    nodes_query(resource),
                    {"ids": [f"gid://shopify/{typename}/{shopify_id}" for shopify_id in chunk]},
                    # Priced as a page of that many records: Shopify may count each id.
                    cost=page_cost(resource, len(chunk)),
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            position += len(chunk)
            found = {
                record["shopify_id"]: record
                for record in (
                    normalize_node(normalize, node, resource.name)
                    for node in data.get("nodes") or []
                    if isinstance(node, dict) and node.get("id")
                )
            }
            await self._apply(model, list(found.values()), read_at, report)
            await self._tombstone(
                model,
                [shopify_id for shopify_id in chunk if shopify_id not in found],
                read_at,
                report,
            )

    async def _apply(
        self,
        model: type[ShopRecord],
        records: list[Record],
        read_at: datetime,
        report: ResourceReport,
    ) -> None:
        """Write Shopify's records (read at `read_at`) where our rows differ from them."""
        if not records:
            return
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            rows = {
                row.shopify_id: row
                for row in await session.scalars(
                    select(model).where(
                        model.tenant_id == self.tenant_id,
                        model.shopify_id.in_([record["shopify_id"] for record in records]),
                    )
                )
            }
            upserts: list[Record] = []
            for record in records:
                row = rows.get(record["shopify_id"])
                if row is None or (row.deleted_at is None and not _newer(row, record)):
                    if row is None or _differs(row, record):
                        upserts.append(record)
                    continue
                # The row is a tombstone of a record Shopify still has, or claims a newer
                # updated_at than Shopify's own: the order-safe upsert would refuse Shopify's
                # version forever. Overwrite it unless the value could be a webhook newer than
                # our read (or a write Shopify does not show yet).
                suspect = row.deleted_at if row.deleted_at is not None else row.shopify_updated_at
                if suspect is not None and _in_flight(suspect, read_at):
                    report.deferred += 1
                    continue
                if await replace_record(
                    session,
                    model,
                    self.tenant_id,
                    record,
                    seen_updated_at=row.shopify_updated_at,
                    seen_deleted_at=row.deleted_at,
                    source="reconcile",
                ):
                    report.repaired += 1
                else:
                    report.deferred += 1  # changed under us: a webhook got there first
            if upserts:
                await upsert_records(session, model, self.tenant_id, upserts, source="reconcile")
                report.repaired += len(upserts)

    async def _tombstone(
        self,
        model: type[ShopRecord],
        ids: list[int],
        read_at: datetime,
        report: ResourceReport,
    ) -> None:
        if not ids:
            return
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            rows = list(
                await session.scalars(
                    select(model).where(self._live(model), model.shopify_id.in_(ids))
                )
            )
            for row in rows:
                # A record created moments ago may not be visible to Shopify's reads yet
                # while its create webhook is already here: not a deletion.
                if row.shopify_updated_at is not None and _in_flight(
                    row.shopify_updated_at, read_at
                ):
                    report.deferred += 1
                    continue
                await tombstone(
                    session,
                    model,
                    self.tenant_id,
                    row.shopify_id,
                    deleted_at=utcnow(),
                    source="reconcile",
                )
                report.tombstoned += 1


def _updated_at(connection: Any) -> datetime | None:
    nodes = (connection or {}).get("nodes") or []
    if not nodes or not isinstance(nodes[0], dict):
        return None
    return parse_timestamp(nodes[0].get("updatedAt"), "updatedAt")


def _newer(row: ShopRecord, record: Record) -> bool:
    """Does the stored row claim a later updated_at than Shopify's current version?"""
    ours, theirs = row.shopify_updated_at, record.get("shopify_updated_at")
    return ours is not None and theirs is not None and ours > theirs


def _in_flight(value: datetime, read_at: datetime) -> bool:
    return read_at - IN_FLIGHT <= value <= utcnow() + IN_FLIGHT


def _status(reports: Iterable[ResourceReport], repair: bool) -> ReconcileStatus:
    reports = list(reports)
    if not repair:
        found = any(report.drifted_windows or report.unstamped for report in reports)
        return ReconcileStatus.DRIFT if found else ReconcileStatus.CLEAN
    if any(report.remaining_windows or report.deferred for report in reports):
        return ReconcileStatus.DRIFT
    if any(report.repaired or report.tombstoned for report in reports):
        return ReconcileStatus.REPAIRED
    return ReconcileStatus.CLEAN


# -- the public API --


async def reconcile(
    env: BackfillEnvironment,
    tenant_id: int,
    *,
    repair: bool = True,
    trigger: str = ReconcileTrigger.MANUAL,
    resources: Iterable[str] | None = None,
    full: bool = False,
) -> ReconcileRun:
    """Compare one store with Shopify and (unless `repair=False`) repair the drift found.

    Returns the stored ReconcileRun: status `clean`, `repaired`, `drift` (found and not
    repaired: a dry run, or rows still off after repairing) or `failed` (with `error`); its
    `report` holds a ResourceReport per resource. Shopify's errors end the run `failed`, they
    are not raised. `full=True` pulls every window instead of only the drifted ones, so it also
    repairs fields changed without their updated_at changing; it cannot be a dry run.
    Raises LookupError for an unknown store and ValueError for unknown resources.
    """
    chosen = validate_resources(resources)
    if full and not repair:
        raise ValueError("a full reconcile repairs what it pulls; it cannot be a dry run")
    # tenants has no tenant_id column, so the scope does not hide the store's own row.
    async with tenant_transaction(env.sessions, tenant_id) as session:
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None:
            raise LookupError(f"no store with id {tenant_id}")
        run = ReconcileRun(
            tenant_id=tenant_id,
            status=ReconcileStatus.RUNNING,
            trigger=trigger,
            report={},
            started_at=utcnow(),
        )
        session.add(run)
        await session.flush()
        run_id = run.id
    reports: dict[str, ResourceReport] = {}
    status, error = ReconcileStatus.FAILED, None
    log.info(
        "reconcile.started run=%s shop=%s trigger=%s repair=%s",
        run_id,
        tenant.shop_domain,
        trigger,
        repair,
    )
    try:
        if tenant.status != TenantStatus.ACTIVE:
            raise BackfillError(f"{tenant.shop_domain} is {tenant.status}")
        reconciler = _Reconciler(env, tenant, repair=repair, full=full)
        for name in chosen:
            reports[name] = ResourceReport()
            await reconciler.resource(RESOURCES[name], reports[name])
        status = _status(reports.values(), repair)
    except asyncio.CancelledError:
        await asyncio.shield(
            _finish(env, tenant_id, run_id, ReconcileStatus.FAILED, "cancelled", reports)
        )
        raise
    except CredentialsInvalid as exc:
        error = f"credentials: {exc}"
    except BackfillError as exc:
        error = str(exc)
    except Exception as exc:
        error = f"unexpected {error_text(exc)}"
        log.error(
            "reconcile.crashed run=%s error=%s", run_id, error, exc_info=not may_quote_data(exc)
        )
    finished = await _finish(env, tenant_id, run_id, status, error, reports)
    log.info("reconcile.finished run=%s shop=%s status=%s", run_id, tenant.shop_domain, status)
    return finished


async def _finish(
    env: BackfillEnvironment,
    tenant_id: int,
    run_id: int,
    status: str,
    error: str | None,
    reports: dict[str, ResourceReport],
) -> ReconcileRun:
    async with tenant_transaction(env.sessions, tenant_id) as session:
        await session.execute(
            update(ReconcileRun)
            .where(ReconcileRun.id == run_id)
            .values(
                status=status,
                error=error,
                report=_report_document(reports),
                finished_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return await session.get_one(ReconcileRun, run_id, populate_existing=True)


def _report_document(reports: dict[str, ResourceReport]) -> ReconcileReport:
    return {name: report.as_json() for name, report in reports.items()}


def finished_sync(tenant_id: Any) -> ColumnElement[bool]:
    """The store (an id, or a correlated Tenant.id) has a finished sync: before its initial
    backfill there is nothing to compare and no gap to close."""
    return exists().where(SyncJob.tenant_id == tenant_id, SyncJob.status == SyncStatus.SUCCEEDED)


async def due_store_ids(
    env: BackfillEnvironment, interval: timedelta, *, tenant_id: int | None = None
) -> list[int]:
    """Active stores with a usable token and a finished initial sync (before it there is
    nothing to compare) whose last reconcile started more than `interval` ago, or never
    (a running one counts: its row is written when it starts)."""
    last_run = (
        select(func.max(ReconcileRun.started_at))
        .where(ReconcileRun.tenant_id == Tenant.id)
        .scalar_subquery()
    )
    # the periodic sweep looks at every store
    async with cross_store_transaction(env.sessions) as session:
        return list(
            await session.scalars(
                select(Tenant.id)
                .where(
                    callable_store(),
                    finished_sync(Tenant.id),
                    or_(last_run.is_(None), last_run < utcnow() - interval),
                    true() if tenant_id is None else Tenant.id == tenant_id,
                )
                .order_by(Tenant.id)
            )
        )


async def reconcile_due_stores(env: BackfillEnvironment, interval: timedelta) -> list[int]:
    """Reconcile (and repair) every due store, one after the other; returns their ids.

    A store's failure is recorded in its own ReconcileRun and does not stop the others.
    """
    done: list[int] = []
    for tenant_id in await due_store_ids(env, interval):
        # Another process's sweep may have started this store since the list was read
        # (a long sweep overlaps the next tick): checking again keeps duplicates rare, and
        # a duplicate run is only wasted requests, never wrong data.
        if not await due_store_ids(env, interval, tenant_id=tenant_id):
            continue
        try:
            await reconcile(env, tenant_id, trigger=ReconcileTrigger.PERIODIC)
        except LookupError:
            continue  # deleted since the sweep read it
        except Exception as exc:
            log.error(
                "reconcile.periodic_failed tenant=%s error=%s",
                tenant_id,
                error_text(exc),
                exc_info=not may_quote_data(exc),
            )
        done.append(tenant_id)
    return done
