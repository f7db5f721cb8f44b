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
window; a variant's inventoryQuantity, which follows its levels without its updatedAt moving).
`full=True` compares every record instead of counts.

What is compared comes from the registry (handlers.resources.RECONCILE_TARGETS): each
resource, and the children Shopify also lists on QueryRoot (`productVariants`, counted by
`productVariantsCount`). A connection without an UPDATED_AT sort (variants) gives no oldest
and newest updatedAt: its windows span ours, plus one back to the epoch and one on to a day
past now. Resources Shopify neither sorts nor counts by updated_at (locations: few) or does
not count at all (inventory items) are re-read whole with their children (levels) and
compared row by row; what the read no longer lists is asked for by id, and tombstoned.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, TypedDict, cast

from sqlalchemy import ColumnElement, Table, and_, exists, func, or_, select, true, update

from backfill.client import AdminClient, BackfillError, CredentialsInvalid, QueryTooCostly
from backfill.credentials import callable_store
from backfill.nested import MAX_PAGE, SINGLE_QUERY_LIMIT, complete_children
from backfill.runner import BackfillEnvironment, admin_client_for, normalize_node
from handlers import upsert_records
from handlers.children import ChildList, ChildSet, forget_references, tombstone_children
from handlers.errors import error_text, may_quote_data
from handlers.normalize import PayloadError, Record, parse_timestamp
from handlers.records import RowModel, record_key, replace_record
from handlers.resources import (
    RECONCILE_TARGETS,
    RESOURCES,
    ReconcileBy,
    ReconcileTarget,
    Resource,
    parse_resource_names,
    reconciled_names,
)
from models import ReconcileRun, ShopRecord, SyncJob, Tenant, utcnow
from models.statuses import ReconcileStatus, ReconcileTrigger, SyncStatus, TenantStatus
from models.tenancy import cross_store_transaction, of_store, tenant_transaction
from models.upsert import affected_rows

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
# Without Shopify's newest updatedAt, windows reach this far past now: past any clock skew
# between us and Shopify, and past a write Shopify shows before its webhook reaches us.
OPEN_HORIZON = timedelta(days=1)
# `count_precision` of a count made by reading every record (no count field to ask).
LISTED = "LISTED"
# Parent ids per query when looking for orphaned children.
MAX_IDS_PER_QUERY = 5000


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


def _resource_of(model: Any) -> Resource | None:
    return next((r for r in RESOURCES.values() if r.model is model), None)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(moment: datetime) -> int:
    return math.floor(moment.timestamp())


def _moment(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _text(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- the documents (validated against Shopify's schema by the simulator's tests) --


def summary_query(resource: ReconcileTarget) -> str:
    """Exact total (limit: null; the default stops at 10,000 with precision AT_LEAST) and the
    oldest and newest updatedAt, in one request."""
    return (
        "query ReconcileSummary($query: String) {\n"
        f"  total: {resource.count_field}(query: $query, limit: null) {{ count precision }}\n"
        f"  oldest: {resource.field}(first: 1, query: $query, sortKey: UPDATED_AT) "
        "{ nodes { id updatedAt } }\n"
        f"  newest: {resource.field}(first: 1, query: $query, sortKey: UPDATED_AT, reverse: true) "
        "{ nodes { id updatedAt } }\n"
        "}\n"
    )


SCOPES_QUERY = """
query ReconcileScopes {
  currentAppInstallation { accessScopes { handle } }
}
"""


def counts_query(resource: ReconcileTarget, windows: int) -> str:
    """One count per window, as aliases `w0`, `w1`... of the resource's count field."""
    variables = ", ".join(f"$q{i}: String" for i in range(windows))
    fields = "\n".join(
        f"  w{i}: {resource.count_field}(query: $q{i}, limit: null) {{ count precision }}"
        for i in range(windows)
    )
    return f"query ReconcileCounts({variables}) {{\n{fields}\n}}\n"


def nodes_query(resource: ReconcileTarget) -> str:
    return resource.nodes_query


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

    async def target(self, target: ReconcileTarget, reports: dict[str, ResourceReport]) -> None:
        """Compare (and repair) one target; its report, and its children's, go in `reports`."""
        report = reports.setdefault(target.name, ResourceReport())
        children = {
            child.table: reports.setdefault(child.table, ResourceReport())
            for child in target.children
        }
        requests_before = self.client.stats.requests
        try:
            self.created_since = None
            if target.by is ReconcileBy.READ:
                await self._read_whole(target, report, children)
            else:
                await self._windows(target, report)
        finally:
            report.queries = self.client.stats.requests - requests_before

    async def _windows(self, target: ReconcileTarget, report: ResourceReport) -> None:
        model = target.model
        if target.name == "orders":
            self.created_since = await self._orders_visible_since()
            report.compared_since = _text(self.created_since)
        initial, drifted = await self._compare(target, report, first=True)
        report.drifted_windows = len(drifted)
        report.windows = [window.describe() for window in drifted[:20]]
        if not self.repair:
            report.remaining_windows = len(drifted)
            return
        # A full run re-pulls every window, so fields changed without a count or window
        # changing are found too.
        leaves = initial if self.full else drifted
        await self._check_unstamped(target, model, report)
        for _ in range(MAX_PASSES):
            if not leaves:
                break
            for window in leaves:
                await self._repair_window(target, model, window, report)
            _, leaves = await self._compare(target, report, first=False)
        report.remaining_windows = len(leaves)

    async def _compare(
        self, target: ReconcileTarget, report: ResourceReport, *, first: bool
    ) -> tuple[list[Window], list[Window]]:
        """(the initial windows, the drifted leaf windows) after bisecting."""
        model = target.model
        oldest = newest = None
        if target.updated_at_sort:
            data = await self.client.execute(
                summary_query(target), {"query": self._scope_search() or None}, cost=10
            )
            total = data.get("total") or {}
            oldest = _updated_at(data.get("oldest"))
            newest = _updated_at(data.get("newest"))
        else:
            data = await self.client.execute(
                target.count_query, {"query": self._scope_search() or None}, cost=2
            )
            total = data.get(target.count_field) or {}
        db_total, db_oldest, db_newest, unstamped = await self._db_summary(model)
        if first:
            report.shopify_count = total.get("count")
            report.count_precision = total.get("precision")
            report.db_count = db_total
            report.shopify_watermark = _text(newest)
            report.db_watermark = _text(db_newest)
            report.unstamped = unstamped
        if target.updated_at_sort:
            starts = [moment for moment in (oldest, db_oldest) if moment is not None]
            ends = [moment for moment in (newest, db_newest) if moment is not None]
            if not starts or not ends:
                return [], []  # nothing on either side
            whole = Window(_seconds(min(starts)), _seconds(max(ends)) + 1)
            initial = whole.split(INITIAL_WINDOWS)
        else:
            initial = _open_windows(db_oldest, db_newest)
        level = initial
        leaves: list[Window] = []
        requests = 0
        while level:
            requests += await self._count(target, model, level)
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
        self, target: ReconcileTarget, model: type[ShopRecord], windows: list[Window]
    ) -> int:
        """Fill in both sides' counts; returns the number of Shopify requests made."""
        requests = 0
        for offset in range(0, len(windows), WINDOWS_PER_REQUEST):
            chunk = windows[offset : offset + WINDOWS_PER_REQUEST]
            variables = {f"q{i}": self._search(window) for i, window in enumerate(chunk)}
            data = await self.client.execute(
                counts_query(target, len(chunk)), variables, cost=len(chunk) + 1
            )
            requests += 1
            for i, window in enumerate(chunk):
                count = (data.get(f"w{i}") or {}).get("count")
                if not isinstance(count, int):
                    raise BackfillError(f"{target.count_field} gave no count for {window.search}")
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

    # -- a whole re-read --

    async def _read_whole(
        self,
        target: ReconcileTarget,
        report: ResourceReport,
        children: Mapping[str, ResourceReport],
    ) -> None:
        """Read every record Shopify lists, with all of its children, and compare them row by
        row; rows we hold live that the read did not list are asked for by id (deleted there,
        or not listed: a deactivated location), and children of a listed record missing from
        its complete list, or of a record no longer listed, are tombstoned."""
        model = target.model
        if target.counted:
            data = await self.client.execute(target.count_query, {"query": None}, cost=2)
            total = data.get(target.count_field) or {}
            report.shopify_count = total.get("count")
            report.count_precision = total.get("precision")
        # Rows without an updated_at are compared like the others here: nothing to report.
        db_total, _, db_newest, _ = await self._db_summary(model)
        report.db_count, report.db_watermark = db_total, _text(db_newest)
        for child in target.children:
            _, _, child_newest, _ = await self._db_summary(child.model)
            children[child.table].db_count = await self._db_live_count(child.model)
            children[child.table].db_watermark = _text(child_newest)
        listed: set[int] = set()
        newest: datetime | None = None
        differing = {target.name: 0} | {child.table: 0 for child in target.children}
        child_listed = {child.table: 0 for child in target.children}
        child_newest_read: dict[str, datetime | None] = {
            child.table: None for child in target.children
        }
        size = min(MAX_PAGE, max(1, (SINGLE_QUERY_LIMIT - 3) // target.node_cost))
        after: str | None = None
        read_at = utcnow()
        while True:
            read_at = utcnow()
            try:
                data = await self.client.execute(
                    target.page_query,
                    {"first": size, "after": after, "query": None},
                    cost=3 + size * target.node_cost,
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            connection = data.get(target.field) or {}
            nodes = connection.get("nodes") or []
            # Items with more levels than the page asked for get the rest first: a whole list
            # is what tells a removed level apart from one not read yet.
            await complete_children(self.client, target.typename, target.children, nodes)
            records = [normalize_node(target.normalize, node, target.name) for node in nodes]
            listed.update(record["shopify_id"] for record in records)
            newest = _latest(newest, records)
            differing[target.name] += await self._apply(model, records, read_at, report)
            for child in target.children:
                lists = _child_lists(child, nodes, records)
                found = [record for listed_ in lists.values() for record in listed_.records]
                child_listed[child.table] += len(found)
                child_newest_read[child.table] = _latest(child_newest_read[child.table], found)
                child_report = children[child.table]
                differing[child.table] += await self._apply(
                    child.model, found, read_at, child_report
                )
                differing[child.table] += await self._tombstone_missing_children(
                    child, lists, read_at, child_report
                )
            page_info = connection.get("pageInfo") or {}
            if not page_info.get("hasNextPage"):
                break
            after = page_info.get("endCursor")
        unlisted = await self._db_all_ids(model) - listed
        differing[target.name] += await self._check_ids(target, model, sorted(unlisted), report)
        for child in target.children:
            differing[child.table] += await self._tombstone_orphans(
                child, listed, read_at, children[child.table]
            )
        if not target.counted:
            report.shopify_count, report.count_precision = len(listed), LISTED
        report.shopify_watermark = _text(newest)
        for child in target.children:
            child_report = children[child.table]
            child_report.shopify_count = child_listed[child.table]
            child_report.count_precision = LISTED
            child_report.shopify_watermark = _text(child_newest_read[child.table])
        for name, found_report in ((target.name, report), *children.items()):
            # A re-read is one window: the whole store.
            found_report.windows_compared = 1
            found_report.drifted_windows = int(differing[name] > 0 or found_report.deferred > 0)
            if not self.repair:
                found_report.remaining_windows = found_report.drifted_windows

    async def _tombstone_missing_children(
        self,
        child: ChildSet,
        lists: Mapping[int, ChildList],
        read_at: datetime,
        report: ResourceReport,
    ) -> int:
        """Tombstone the live children of these parents that their complete lists no longer
        name (a level by its location)."""
        complete = {parent: listed for parent, listed in lists.items() if listed.complete}
        if not complete:
            return 0
        parent_column = getattr(child.model, child.parent_key)
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            rows = list(
                await session.scalars(
                    select(child.model).where(
                        of_store(child.model.tenant_id, self.tenant_id),
                        child.model.deleted_at.is_(None),
                        parent_column.in_(list(complete)),
                    )
                )
            )
        stale = [
            row
            for row in rows
            if getattr(row, child.child_key)
            not in complete[getattr(row, child.parent_key)].given(child.child_key)
        ]
        return await self._tombstone_rows(child.model, stale, read_at, report)

    async def _tombstone_orphans(
        self, child: ChildSet, parents: set[int], read_at: datetime, report: ResourceReport
    ) -> int:
        """Tombstone live children whose parent the whole read did not list (deleted there:
        its own tombstone, checked by id, may have been deferred, and then so are these)."""
        parent_column = getattr(child.model, child.parent_key)
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            held = set(
                await session.scalars(
                    select(parent_column)
                    .where(
                        of_store(child.model.tenant_id, self.tenant_id),
                        child.model.deleted_at.is_(None),
                    )
                    .distinct()
                )
            )
        gone = sorted(held - parents)
        differing = 0
        for offset in range(0, len(gone), MAX_IDS_PER_QUERY):
            async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
                rows = list(
                    await session.scalars(
                        select(child.model).where(
                            of_store(child.model.tenant_id, self.tenant_id),
                            child.model.deleted_at.is_(None),
                            parent_column.in_(gone[offset : offset + MAX_IDS_PER_QUERY]),
                        )
                    )
                )
            differing += await self._tombstone_rows(child.model, rows, read_at, report)
        return differing

    # -- the database side --

    def _live(self, model: RowModel) -> Any:
        live = and_(of_store(model.tenant_id, self.tenant_id), model.deleted_at.is_(None))
        if self.created_since is None:
            return live
        return and_(live, model.shopify_created_at >= _moment(_seconds(self.created_since)))

    async def _db_summary(
        self, model: RowModel
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

    async def _db_live_count(self, model: RowModel) -> int:
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            return int(await session.scalar(select(func.count()).where(self._live(model))) or 0)

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

    async def _db_all_ids(self, model: type[ShopRecord]) -> set[int]:
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            return set(await session.scalars(select(model.shopify_id).where(self._live(model))))

    # -- repairs --

    async def _repair_window(
        self,
        target: ReconcileTarget,
        model: type[ShopRecord],
        window: Window,
        report: ResourceReport,
    ) -> None:
        """Pull the window from Shopify, write what differs, then check by id the rows we
        hold live in it that Shopify did not list (deleted there, or updated out of it)."""
        listed: set[int] = set()
        size = min(MAX_PAGE, max(1, (SINGLE_QUERY_LIMIT - 3) // target.node_cost))
        after: str | None = None
        while True:
            read_at = utcnow()
            variables = {"first": size, "after": after, "query": self._search(window)}
            try:
                data = await self.client.execute(
                    target.page_query, variables, cost=3 + size * target.node_cost
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            connection = data.get(target.field) or {}
            nodes = connection.get("nodes") or []
            records = [normalize_node(target.normalize, node, target.name) for node in nodes]
            listed.update(record["shopify_id"] for record in records)
            await self._apply(model, records, read_at, report)
            page_info = connection.get("pageInfo") or {}
            if not page_info.get("hasNextPage"):
                break
            after = page_info.get("endCursor")
        unlisted = await self._db_ids(model, window) - listed
        await self._check_ids(target, model, sorted(unlisted), report)

    async def _check_unstamped(
        self, target: ReconcileTarget, model: type[ShopRecord], report: ResourceReport
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
        await self._check_ids(target, model, ids, report)

    async def _check_ids(
        self,
        target: ReconcileTarget,
        model: type[ShopRecord],
        ids: list[int],
        report: ResourceReport,
    ) -> int:
        """Ask Shopify for these records by id: a null means deleted there (tombstone it), a
        record means it moved out of the window (write Shopify's version). Returns the rows
        found to differ."""
        typename = target.typename
        size = min(MAX_PAGE, max(1, (SINGLE_QUERY_LIMIT - 3) // target.node_cost))
        position = 0
        differing = 0
        while position < len(ids):
            chunk = ids[position : position + size]
            read_at = utcnow()
            try:
                data = await self.client.execute(
                    target.nodes_query,
                    {"ids": [f"gid://shopify/{typename}/{shopify_id}" for shopify_id in chunk]},
                    # Priced as a page of that many records: Shopify may count each id.
                    cost=3 + len(chunk) * target.node_cost,
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            position += len(chunk)
            nodes = [
                node
                for node in data.get("nodes") or []
                if isinstance(node, dict) and node.get("id")
            ]
            await complete_children(self.client, target.typename, target.children, nodes)
            found = {
                record["shopify_id"]: record
                for record in (
                    normalize_node(target.normalize, node, target.name) for node in nodes
                )
            }
            differing += await self._apply(model, list(found.values()), read_at, report)
            async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
                gone = list(
                    await session.scalars(
                        select(model).where(
                            self._live(model),
                            model.shopify_id.in_([i for i in chunk if i not in found]),
                        )
                    )
                )
            differing += await self._tombstone_rows(model, gone, read_at, report)
        return differing

    async def _apply(
        self,
        model: RowModel,
        records: list[Record],
        read_at: datetime,
        report: ResourceReport,
    ) -> int:
        """Write Shopify's records (read at `read_at`) where our rows differ from them (in a
        dry run, only count them). Returns the rows found to differ."""
        if not records:
            return 0
        keys = [name for name in model.conflict_key if name != "tenant_id"]
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            # Rows of a ShopRecord table or of inventory_levels: both carry the columns used.
            rows: dict[tuple[Any, ...], Any] = {
                tuple(getattr(row, name) for name in keys): row
                for row in await session.scalars(
                    select(model).where(
                        of_store(model.tenant_id, self.tenant_id),
                        # The key's first column narrows it (a level's item); the rest is
                        # matched here.
                        getattr(model, keys[0]).in_({record[keys[0]] for record in records}),
                    )
                )
            }
            upserts: list[Record] = []
            replacements: list[tuple[Record, Any]] = []
            for record in records:
                row = rows.get(record_key(model, record))
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
                replacements.append((record, row))
            if not self.repair:
                return len(upserts) + len(replacements)
            for record, row in replacements:
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
        return len(upserts) + len(replacements)

    async def _tombstone_rows(
        self, model: RowModel, rows: Sequence[Any], read_at: datetime, report: ResourceReport
    ) -> int:
        """Tombstone these live rows, which Shopify no longer has (in a dry run, only count
        them). Returns the rows found to differ."""
        if not rows:
            return 0
        keys = [name for name in model.conflict_key if name != "tenant_id"]
        table = cast(Table, model.__table__)
        differing = 0
        async with tenant_transaction(self.env.sessions, self.tenant_id) as session:
            for row in rows:
                # A record created moments ago may not be visible to Shopify's reads yet
                # while its create webhook is already here: not a deletion.
                if row.shopify_updated_at is not None and _in_flight(
                    row.shopify_updated_at, read_at
                ):
                    report.deferred += 1
                    continue
                differing += 1
                if not self.repair:
                    continue
                # Only the row as read: a webhook that wrote it since knows better than our
                # read of Shopify (an update, or a reconnected level).
                now = utcnow()
                result = await session.execute(
                    update(table)
                    .where(
                        of_store(table.c.tenant_id, self.tenant_id),
                        *(table.c[name] == getattr(row, name) for name in keys),
                        table.c.deleted_at.is_(None),
                        _unchanged(table.c.shopify_updated_at, row.shopify_updated_at),
                    )
                    .values(deleted_at=now, synced_at=now, source="reconcile")
                    .execution_options(synchronize_session=False)
                )
                if affected_rows(result) == 1:
                    report.tombstoned += 1
                    owner = _resource_of(model)
                    if owner is not None:
                        # Its children go with it, as with a delete webhook.
                        await tombstone_children(
                            session,
                            owner.child_sets,
                            self.tenant_id,
                            row.shopify_id,
                            deleted_at=now,
                            source="reconcile",
                        )
                        await forget_references(
                            session, owner.referenced_as, self.tenant_id, [row.shopify_id]
                        )
                else:
                    report.deferred += 1
        return differing


def _open_windows(db_oldest: datetime | None, db_newest: datetime | None) -> list[Window]:
    """Windows without Shopify's oldest and newest updatedAt (no UPDATED_AT sort): our own
    span cut as usual, and one window on each side of it, back to the epoch and on to a day
    past now, where Shopify may hold records we lack (the newer one is the watermark check:
    nothing of Shopify's updated after our newest)."""
    horizon = _seconds(utcnow() + OPEN_HORIZON)
    if db_oldest is None or db_newest is None:
        return [Window(0, horizon)]
    start, end = _seconds(db_oldest), _seconds(db_newest) + 1
    windows = [Window(0, start), *Window(start, end).split(INITIAL_WINDOWS - 2)]
    windows.append(Window(end, max(horizon, end + 1)))
    return [window for window in windows if window.start < window.end]


def _child_lists(
    child: ChildSet, nodes: Sequence[Any], records: Sequence[Record]
) -> dict[int, ChildList]:
    lists: dict[int, ChildList] = {}
    for node, record in zip(nodes, records, strict=True):
        try:
            found = child.read(node, record["shopify_id"], graphql=True)
        except PayloadError as exc:
            raise BackfillError(
                f"{child.table} of {record['shopify_id']}: Shopify sent a record we cannot "
                f"read: {exc}"
            ) from exc
        if found is not None:
            lists[record["shopify_id"]] = found
    return lists


def _unchanged(column: Any, value: datetime | None) -> ColumnElement[bool]:
    return cast(ColumnElement[bool], column.is_(None) if value is None else column == value)


def _latest(current: datetime | None, records: Iterable[Record]) -> datetime | None:
    stamps = [record.get("shopify_updated_at") for record in records]
    found = [stamp for stamp in stamps if isinstance(stamp, datetime)]
    if current is not None:
        found.append(current)
    return max(found, default=None)


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
            await reconciler.target(RECONCILE_TARGETS[name], reports)
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
