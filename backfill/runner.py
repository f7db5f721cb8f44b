"""Sync jobs: create, claim, run page by page with a checkpoint per page, resume after a crash."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.admin_base import AdminAddress, admin_address
from backfill.bulk_sql import SqlOrders, reads_in_sql, split_batch, write_orders
from backfill.client import (
    AdminClient,
    BackfillError,
    CredentialsInvalid,
    QueryTooCostly,
    RateLimitWait,
)
from backfill.credentials import AppCredentials, TenantCredentials
from backfill.metrics import RECORDS
from backfill.nested import BulkGroup, BulkGrouper, complete_children, fill_bulk_gaps
from backfill.queries import BULK_STATUS, RESOURCES, SHOP_ID, Resource, bulk_run_document
from handlers.children import (
    ReadRecords,
    read_with_children,
    write_read_records,
    write_with_children,
)
from handlers.errors import error_text, may_quote_data
from handlers.json_text import loads_json
from handlers.normalize import PayloadError, Record, parse_shopify_id
from handlers.resources import parse_resource_names
from handlers.shop_identity import ShopMismatch, record_shop_id
from models import SecretBox, ShopRecord, SyncJob, Tenant, utcnow
from models.statuses import SyncMode, SyncStatus, SyncTrigger, TenantStatus
from models.tenancy import cross_store_transaction, of_store, tenant_transaction
from models.upsert import affected_rows

log = logging.getLogger("shopify_receiver.backfill")

MODES = tuple(SyncMode)
# Asked for, never stored: `backfill.sync.start_sync` turns it into bulk or full from Shopify's
# counts before the job is created, so a job row always says how it ran.
AUTO_MODE = "auto"
REQUESTABLE_MODES = (AUTO_MODE, *MODES)
ACTIVE_STATUSES = (SyncStatus.QUEUED, SyncStatus.RUNNING)
SINGLE_QUERY_LIMIT = 1000
MAX_PAGE_SIZE = 250
BULK_BATCH = 1000
# Bulk result lines held before a write, children included: a product's thousands of
# variants still come as one group, but many small groups are written together.
BULK_BATCH_LINES = 5000
# Bulk batches written at once on PostgreSQL, each in its own transaction and connection.
BULK_WRITERS = 2
# Bulk batches made whole and normalised at once. A batch with refunds waits on their line
# items' Admin API reads most of its finishing time; one at a time, the writers waited on it.
BULK_FINISHING = 2


def bulk_batch_full(records: int, lines: int) -> bool:
    """A bulk batch of whole groups holding this many records and lines is cut here."""
    return records >= BULK_BATCH or lines >= BULK_BATCH_LINES


# A running job whose heartbeat is older than this was abandoned by a dead worker.
DEFAULT_LEASE = timedelta(seconds=60)
# A rate-limit wait this long is written into the job's progress (`waiting`) for the dashboard;
# shorter ones, most paced pages on a fast plan, only reach the progress callback.
RECORDED_WAIT = timedelta(seconds=1)
# Incremental pulls start this much before the previous sync started: our clock and Shopify's
# may disagree a little, and fetching a few records twice costs nothing (upserts are idempotent).
INCREMENTAL_OVERLAP = timedelta(minutes=5)


# Where each resource's backfilled nodes go, and what reads them (from the registry).
TARGETS: dict[str, tuple[type[ShopRecord], Callable[[Any], Record]]] = {
    name: (resource.model, resource.normalize_node) for name, resource in RESOURCES.items()
}


class RecordedWait(TypedDict):
    """A rate-limit wait under way: `points` short, refilled at `rate` a second, over at `until`."""

    points: int
    rate: float
    until: str


class ResourceProgress(TypedDict, total=False):
    """One resource's checkpoint in `sync_jobs.progress` (JSON, keyed by resource name).

    Keys appear as the job reaches them, so older rows without some of them still load."""

    cursor: str | None
    count: int
    done: bool
    # Shopify's count for the job's window, or None when it was not available.
    total: int | None
    pages: int
    # Set once a page proved too costly and was halved; resumed jobs keep the smaller size.
    page_size: int
    bulk_operation_id: str
    # JSONL lines of the bulk result already applied (a resumed job skips them).
    lines: int
    # Stored while the client sleeps for a rate-limit wait of at least RECORDED_WAIT (the
    # dashboard shows it); the next checkpoint removes it.
    waiting: RecordedWait
    # Only in what the progress callback receives, never stored: the client is sleeping for
    # Shopify's rate limit, `waiting_points` short, refilled at `restore_rate` points a second.
    waiting_points: float
    restore_rate: float
    waiting_seconds: float
    # Also only reported: the bulk operation Shopify is still running for this resource, and
    # the objects it has written so far.
    bulk_status: str
    bulk_objects: int


JobProgress = dict[str, ResourceProgress]


@dataclass(frozen=True)
class _BulkBatch:
    """Bulk records read and ready to write, and the last result line they end on."""

    nodes: list[dict[str, Any]]
    # The nodes normalised, with their children (read by the reader, written by the writer).
    read: ReadRecords
    last_line: int
    # The batch's other records, for PostgreSQL to read out of their lines (backfill.bulk_sql).
    sql: SqlOrders | None = None

    @property
    def records(self) -> int:
        return len(self.nodes) + (len(self.sql.orders) if self.sql is not None else 0)


@dataclass
class _ReadBatch:
    """Records grouped by the reading stage."""

    groups: list[BulkGroup]


class _BulkCommits:
    """A resource's bulk batches being written, in the order of the result's lines: which
    progress a batch's transaction may claim. Batches commit in any order (one at a time,
    under `turn`); the job's progress only ever counts an unbroken run of committed batches
    from the start. A batch is known by the ticket `start` gave it; only its last line and
    record count are kept, so a slow batch does not hold the ones committed after it."""

    def __init__(self, state: ResourceProgress) -> None:
        self._state = state
        self._lines = int(state.get("lines", 0))
        self._count = int(state.get("count", 0))
        # Batches not yet counted in (_lines, _count), in line order: ticket -> (last line,
        # records, committed). One that committed after a batch still being written waits.
        self._open: dict[int, tuple[int, int, bool]] = {}
        self._tickets = itertools.count()
        # Held from a batch's claim to its commit.
        self.turn = asyncio.Lock()

    def start(self, batch: _BulkBatch) -> int:
        ticket = next(self._tickets)
        self._open[ticket] = (batch.last_line, batch.records, False)
        return ticket

    def claim(self, ticket: int) -> ResourceProgress:
        """The resource's state should batch `ticket` commit now: the batches before it that
        committed, itself, and the committed ones right after it."""
        lines, count = self._lines, self._count
        for other, (last_line, records, committed) in self._open.items():
            if not committed and other != ticket:
                break
            lines, count = last_line, count + records
        claimed = ResourceProgress(**self._state)
        claimed["lines"], claimed["count"] = lines, count
        return claimed

    def committed(self, ticket: int) -> None:
        last_line, records, _ = self._open[ticket]
        self._open[ticket] = (last_line, records, True)
        for first, (last_line, records, done) in list(self._open.items()):
            if not done:
                break
            del self._open[first]
            self._lines, self._count = last_line, self._count + records

    def settled(self) -> ResourceProgress:
        """What has committed, counted from the start without a gap."""
        return ResourceProgress(lines=self._lines, count=self._count)


@dataclass(frozen=True)
class _BulkEnd:
    """The bulk result was read to its end."""


ProgressCallback = Callable[[str, ResourceProgress], None]


class SyncAlreadyRunning(Exception):
    def __init__(self, job: SyncJob) -> None:
        super().__init__(f"sync job {job.id} is already {job.status} for this store")
        self.job = job


class JobCancelled(Exception):
    pass


@dataclass(frozen=True)
class BackfillEnvironment:
    """What a job needs from the process running it."""

    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    box: SecretBox
    # SHOPIFY_ADMIN_BASE_URL: where stores without their own base go.
    admin_base_url: str
    api_version: str
    app: AppCredentials | None = None
    lease: timedelta = DEFAULT_LEASE
    bulk_poll_interval: float = 1.0
    client_options: dict[str, Any] = field(default_factory=dict)

    def address(self, tenant: Tenant) -> AdminAddress:
        """The one place a store's Admin API address is decided (backfill.admin_base)."""
        return admin_address(
            tenant.shop_domain,
            self.api_version,
            store_base=tenant.admin_base_url,
            global_base=self.admin_base_url,
        )


def admin_client_for(env: BackfillEnvironment, tenant: Tenant) -> AdminClient:
    """An Admin API client for one store, with its stored (and refreshable) token, addressed
    to the store's own base or the global one. Every Admin API call is made through one."""
    address = env.address(tenant)
    credentials = TenantCredentials(
        env.sessions,
        tenant.id,
        env.box,
        env.http,
        token_url=address.token_url,
        app=env.app,
    )
    return AdminClient(
        env.http,
        address.endpoint,
        credentials,
        shop=tenant.shop_domain,
        **env.client_options,
    )


def page_cost(resource: Resource, page_size: int) -> int:
    """Requested cost as Shopify computes it: the connection 2, pageInfo 1, then each node
    with the first of its children."""
    return 3 + page_size * resource.page_node_cost


def page_size_for(resource: Resource) -> int:
    """The largest page whose requested cost stays under Shopify's single-query limit."""
    return max(1, min(MAX_PAGE_SIZE, (SINGLE_QUERY_LIMIT - 3) // resource.page_node_cost))


def concurrent_bulk_operations(api_version: str) -> int:
    """Bulk query operations one app may run at once per shop: five from API version 2026-01
    (SHOPIFY.md), one before."""
    return 5 if api_version >= "2026-01" else 1


def validate_request(mode: str, resources: list[str] | None) -> list[str]:
    if mode not in REQUESTABLE_MODES:
        raise ValueError(f"mode must be one of {', '.join(REQUESTABLE_MODES)}, not {mode!r}")
    return parse_resource_names(resources)


async def shopify_count(client: AdminClient, resource: Resource, search: str | None) -> int | None:
    """Shopify's count of the resource (within `search`), or None when it has none for it or
    could not answer (the caller carries on without a total)."""
    if not resource.counted:
        return None
    try:
        data = await client.execute(resource.count_query, {"query": search}, cost=1)
    except BackfillError as exc:
        log.info("backfill.count_unavailable resource=%s error=%s", resource.name, exc)
        return None
    count = (data.get(resource.count_field) or {}).get("count")
    return int(count) if isinstance(count, int) else None


async def create_sync_job(
    session: AsyncSession,
    tenant: Tenant,
    mode: str,
    resources: list[str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    trigger: str = SyncTrigger.MANUAL,
) -> SyncJob:
    """Queue a job; raises SyncAlreadyRunning (with that job) if the store has one active.

    An incremental job pulls what changed since the last finished sync, unless `since` (and
    optionally `until`) name the window, as the watchdog and reconcile do for a known gap.
    """
    chosen = validate_request(mode, resources)
    if mode == AUTO_MODE:
        raise ValueError("mode 'auto' is decided by backfill.sync.start_sync, not stored")
    if (since is not None or until is not None) and mode != SyncMode.INCREMENTAL:
        raise ValueError("a since/until window needs mode 'incremental'")
    if mode == SyncMode.INCREMENTAL and since is None:
        last_start = await session.scalar(
            select(SyncJob.started_at)
            .where(of_store(SyncJob.tenant_id, tenant.id), SyncJob.status == SyncStatus.SUCCEEDED)
            .order_by(SyncJob.started_at.desc())
            .limit(1)
        )
        since = last_start - INCREMENTAL_OVERLAP if last_start else None
    job = SyncJob(
        tenant_id=tenant.id,
        mode=mode,
        status=SyncStatus.QUEUED,
        resources=chosen,
        progress={},
        since=since,
        until=until,
        trigger=trigger,
        attempts=0,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(job)
            await session.flush()
    except IntegrityError:
        running = await session.scalar(
            select(SyncJob).where(
                of_store(SyncJob.tenant_id, tenant.id), SyncJob.status.in_(ACTIVE_STATUSES)
            )
        )
        if running is None:
            raise
        raise SyncAlreadyRunning(running) from None
    return job


async def claim_job(
    sessions: async_sessionmaker[AsyncSession], job_id: int, lease: timedelta
) -> bool:
    """Take the job for this worker: queued, or running with a heartbeat older than the lease.

    One UPDATE decides, so two workers handed the same job never both run it.
    """
    now = utcnow()
    # a worker takes jobs of every store
    async with cross_store_transaction(sessions) as session:
        result = await session.execute(
            update(SyncJob)
            .where(
                SyncJob.id == job_id,
                or_(
                    SyncJob.status == SyncStatus.QUEUED,
                    and_(SyncJob.status == SyncStatus.RUNNING, SyncJob.heartbeat_at < now - lease),
                ),
            )
            .values(
                status=SyncStatus.RUNNING,
                started_at=func.coalesce(SyncJob.started_at, now),
                heartbeat_at=now,
                attempts=SyncJob.attempts + 1,
                error=None,
            )
            .execution_options(synchronize_session=False)
        )
        return affected_rows(result) == 1


async def claimable_job_ids(
    sessions: async_sessionmaker[AsyncSession], lease: timedelta
) -> list[int]:
    now = utcnow()
    # the queue sweep looks at every store's jobs
    async with cross_store_transaction(sessions) as session:
        rows = await session.scalars(
            select(SyncJob.id)
            .where(
                or_(
                    SyncJob.status == SyncStatus.QUEUED,
                    and_(SyncJob.status == SyncStatus.RUNNING, SyncJob.heartbeat_at < now - lease),
                )
            )
            .order_by(SyncJob.id)
        )
        return list(rows)


async def hold_shop_id(env: BackfillEnvironment, client: AdminClient, tenant: Tenant) -> None:
    """Ask Shopify for the store's shop id (`shop { id }`, cost 1) and hold it: destructive
    webhooks are checked on it. A held id that differs, or one another store holds, means the
    token or the Admin API address is not this store's: BackfillError, never an overwrite."""
    try:
        data = await client.execute(SHOP_ID, cost=1)
    except CredentialsInvalid:
        raise
    except BackfillError as exc:
        # Retried already; the work that follows fails the same way if Shopify is really
        # down, and the id is asked again next time.
        log.warning("backfill.shop_id_unavailable shop=%s error=%s", tenant.shop_domain, exc)
        return
    try:
        shop_id = parse_shopify_id((data.get("shop") or {}).get("id"), "shop.id")
    except PayloadError as exc:
        raise BackfillError(f"Shopify sent no usable shop id: {exc}") from exc
    async with tenant_transaction(env.sessions, tenant.id) as session:
        try:
            await record_shop_id(session, tenant.id, shop_id)
        except ShopMismatch as exc:
            raise BackfillError(str(exc)) from exc


class JobRun:
    """One attempt at one job; every page commits its records together with the checkpoint."""

    def __init__(
        self,
        env: BackfillEnvironment,
        job: SyncJob,
        tenant: Tenant,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.env = env
        self.job = job
        self.tenant = tenant
        self.progress: JobProgress = json.loads(json.dumps(job.progress or {}))
        self.on_progress = on_progress
        self.client = admin_client_for(env, tenant)
        self.client.on_wait = self._waiting
        # The resource being pulled, which a rate-limit wait is reported under.
        self.current: str | None = None

    @property
    def search(self) -> str | None:
        terms = []
        if self.job.since is not None:
            terms.append(f"updated_at:>='{self.job.since.isoformat()}'")
        if self.job.until is not None:
            terms.append(f"updated_at:<'{self.job.until.isoformat()}'")
        return " ".join(terms) or None

    async def run(self) -> None:
        await self._check_shop()
        if self.job.mode == SyncMode.BULK:
            await self._start_bulk_operations()
        for name in self.job.resources:
            state = self.progress.setdefault(
                name, ResourceProgress(cursor=None, count=0, done=False)
            )
            if state.get("done"):
                continue
            self.current = name
            if state.get("total") is None:
                state["total"] = await self._total(RESOURCES[name])
            if self.job.mode == SyncMode.BULK:
                await self._bulk(RESOURCES[name], state)
            else:
                await self._pages(RESOURCES[name], state)

    async def _check_shop(self) -> None:
        await hold_shop_id(self.env, self.client, self.tenant)

    async def _total(self, resource: Resource) -> int | None:
        return await shopify_count(self.client, resource, self.search)

    async def _start_bulk_operations(self) -> None:
        """Start the pending resources' bulk operations together, as many as Shopify lets
        one app run at once per shop: Shopify prepares them in parallel while the first
        result streams in. Each id is checkpointed, so a resumed job waits for the same ones."""
        room = concurrent_bulk_operations(self.env.api_version)
        running = [
            name
            for name in self.job.resources
            if not self.progress.get(name, {}).get("done")
            and self.progress.get(name, {}).get("bulk_operation_id")
        ]
        for name in self.job.resources:
            if len(running) >= room:
                return
            state = self.progress.setdefault(
                name, ResourceProgress(cursor=None, count=0, done=False)
            )
            if state.get("done") or state.get("bulk_operation_id"):
                continue
            await self._run_bulk_operation(RESOURCES[name], state)
            running.append(name)

    async def _run_bulk_operation(self, resource: Resource, state: ResourceProgress) -> None:
        document = bulk_run_document(self.env.api_version, grouped=bool(resource.children))
        data = await self.client.execute(
            document, {"query": resource.bulk_query(self.search)}, cost=10
        )
        result = data.get("bulkOperationRunQuery") or {}
        errors = result.get("userErrors") or []
        if errors:
            messages = "; ".join(str(error.get("message")) for error in errors)
            raise BackfillError(f"bulk operation refused: {messages}")
        state["bulk_operation_id"] = result["bulkOperation"]["id"]
        await self._checkpoint(resource, [])

    async def _pages(self, resource: Resource, state: ResourceProgress) -> None:
        page_size = int(state.get("page_size") or page_size_for(resource))
        expected_cost = float(page_cost(resource, page_size))
        while not state.get("done"):
            variables = {"first": page_size, "after": state.get("cursor"), "query": self.search}
            try:
                data = await self.client.execute(resource.page_query, variables, cost=expected_cost)
            except QueryTooCostly:
                if page_size == 1:
                    raise
                page_size = max(1, page_size // 2)
                state["page_size"] = page_size
                expected_cost = float(page_cost(resource, page_size))
                continue
            # Shopify's own figure for this query beats our estimate from the next page on.
            expected_cost = self.client.last_requested_cost or expected_cost
            connection = data.get(resource.field) or {}
            nodes = connection.get("nodes") or []
            page_info = connection.get("pageInfo") or {}
            # Records with more children than the page asked for get the rest first, so the
            # page is written whole (and its lists may tombstone what they no longer name).
            await complete_children(self.client, resource.typename, resource.children, nodes)
            state["cursor"] = page_info.get("endCursor") or state.get("cursor")
            state["count"] = int(state.get("count", 0)) + len(nodes)
            state["pages"] = int(state.get("pages", 0)) + 1
            state["done"] = not page_info.get("hasNextPage")
            await self._checkpoint(resource, nodes)
            self._report(resource.name, state)

    async def _bulk(self, resource: Resource, state: ResourceProgress) -> None:
        if not state.get("bulk_operation_id"):
            await self._run_bulk_operation(resource, state)
        url = await self._await_bulk(str(state["bulk_operation_id"]))
        if url:
            await self._stream_bulk(url, resource, state)
        state["done"] = True
        await self._checkpoint(resource, [])
        self._report(resource.name, state)

    async def _await_bulk(self, operation_id: str) -> str | None:
        while True:
            data = await self.client.execute(BULK_STATUS, {"id": operation_id}, cost=1)
            node = data.get("node") or {}
            status = node.get("status")
            if status == "COMPLETED":
                return node.get("url")
            if status in {"FAILED", "CANCELED", "CANCELING", "EXPIRED"}:
                raise BackfillError(
                    f"bulk operation {operation_id} ended {status}"
                    + (f" ({node['errorCode']})" if node.get("errorCode") else "")
                )
            self._bulk_running(str(status), node.get("objectCount"))
            await self._heartbeat()
            await asyncio.sleep(self.env.bulk_poll_interval)

    async def _stream_bulk(self, url: str, resource: Resource, state: ResourceProgress) -> None:
        """Stream the JSONL, writing each record with its children in batches; a resumed job
        skips the lines it applied (a batch ends where a record and its children end).

        Three stages overlap: reading (download, JSON, grouping), finishing (the refunds'
        line items asked of Shopify, normalising; `BULK_FINISHING` batches at once) and
        writing, where on PostgreSQL two batches are written at once, each in its own
        transaction with its checkpoint: one batch's rows are merged by PostgreSQL while the
        next one's are sent. The checkpoint a batch commits counts only the batches before it
        that had committed (`_BulkCommits`), so a crash never skips a line; a batch that
        committed past one that did not is written again on resume (the upserts are
        idempotent). Each stage hands a batch over and goes on only once the next took it, so
        at most `writers` + `BULK_FINISHING` + 1 batches are held. The second writer and the
        middle stage each moved nothing measurable alone: with one writer the writing bound
        the ingest, with the Admin API reads inside the reading stage the reading did. The
        reading's and finishing's CPU-bound steps run in threads, so the event loop is free
        for the writers' statements (see `_bulk_batch`)."""
        async with self.env.sessions() as session:
            dialect = session.get_bind().dialect.name
        # SQLite takes one writing transaction at a time.
        writers = BULK_WRITERS if dialect == "postgresql" else 1
        in_sql = reads_in_sql(resource, dialect)
        read: asyncio.Queue[_ReadBatch | _BulkEnd | BaseException] = asyncio.Queue(maxsize=1)
        handoff: asyncio.Queue[_BulkBatch | _BulkEnd | BaseException] = asyncio.Queue(maxsize=1)
        reader = asyncio.create_task(self._read_bulk(url, resource, state, read))
        finisher = asyncio.create_task(self._finish_bulk(resource, read, handoff, in_sql))
        commits = _BulkCommits(state)
        writing: list[asyncio.Task[None]] = []
        try:
            while True:
                item = await _taken(handoff, writing)
                if isinstance(item, _BulkBatch):
                    await _writes_down_to(writing, writers - 1)
                    ticket = commits.start(item)
                    if ticket % CYCLE_COLLECTION_BATCHES == 0:
                        _collect_young_cycles()
                    writing.append(
                        asyncio.create_task(
                            self._bulk_write(resource, item, ticket, state, commits)
                        )
                    )
                handoff.task_done()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, _BulkEnd):
                    break
            await _writes_down_to(writing, 0)
        finally:
            for task in (reader, finisher, *writing):
                task.cancel()
            await asyncio.gather(reader, finisher, *writing, return_exceptions=True)

    async def _read_bulk(
        self,
        url: str,
        resource: Resource,
        state: ResourceProgress,
        read: asyncio.Queue[_ReadBatch | _BulkEnd | BaseException],
    ) -> None:
        """The reading stage of `_stream_bulk`: puts each batch of records read with their
        children (then the end, or what went wrong) into `read`, and waits for the next
        stage to take it before reading on."""
        try:
            reading = _BulkReading(resource, int(state.get("lines", 0)))
            try:
                async with self.env.http.stream("GET", url) as response:
                    if response.status_code != 200:
                        raise BackfillError(f"bulk result download answered {response.status_code}")
                    async for lines in _jsonl_runs(response):
                        # Parsing and grouping in a thread: on the event loop, each run of
                        # lines held up the writers' next statements while it was read.
                        for ready in await asyncio.to_thread(reading.take, lines):
                            await _hand_over(read, ready)
            except httpx.TransportError as exc:
                raise BackfillError(f"bulk result download broke off: {exc}") from exc
            last = reading.finish()
            if last is not None:
                await _hand_over(read, last)
        except Exception as exc:
            await _hand_over(read, exc)
            return
        await _hand_over(read, _BulkEnd())

    async def _finish_bulk(
        self,
        resource: Resource,
        read: asyncio.Queue[_ReadBatch | _BulkEnd | BaseException],
        handoff: asyncio.Queue[_BulkBatch | _BulkEnd | BaseException],
        in_sql: bool,
    ) -> None:
        """The middle stage of `_stream_bulk`: each batch read is made whole (the refunds'
        line items asked of Shopify) and normalised, then put into `handoff` for the writers
        in the order it was read. `BULK_FINISHING` batches are finished at once, so one's
        Admin API reads (`fill_bulk_gaps`) overlap another's; a batch is taken from the
        reader only when one of them is handed over."""
        slots = asyncio.Semaphore(BULK_FINISHING)
        started: asyncio.Queue[asyncio.Task[_BulkBatch] | _BulkEnd | BaseException]
        started = asyncio.Queue()

        async def start() -> None:
            while True:
                await slots.acquire()
                item = await read.get()
                read.task_done()
                if not isinstance(item, _ReadBatch):
                    started.put_nowait(item)
                    return
                started.put_nowait(asyncio.create_task(self._bulk_batch(resource, item, in_sql)))
                # The task holds the batch until it is finished, and only what it returns after.
                del item

        starter = asyncio.create_task(start())
        entry: asyncio.Task[_BulkBatch] | _BulkEnd | BaseException | None = None
        try:
            while True:
                entry = await started.get()
                finished: _BulkBatch | _BulkEnd | BaseException
                if isinstance(entry, asyncio.Task):
                    try:
                        finished = await entry
                    except Exception as exc:
                        finished = exc
                else:
                    finished = entry
                entry = None
                await _hand_over(handoff, finished)
                slots.release()
                if not isinstance(finished, _BulkBatch):
                    return
        finally:
            unfinished: list[asyncio.Task[Any]] = [starter]
            if isinstance(entry, asyncio.Task):
                unfinished.append(entry)
            while not started.empty():
                waiting = started.get_nowait()
                if isinstance(waiting, asyncio.Task):
                    unfinished.append(waiting)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _bulk_batch(self, resource: Resource, batch: _ReadBatch, in_sql: bool) -> _BulkBatch:
        """A batch ready to write: its records whole (the refunds' line items read by id),
        normalised but for those PostgreSQL reads out of their JSON (`in_sql`: see
        backfill.bulk_sql). The CPU-bound steps run
        in a thread: done on the event loop, each held up the writers' statements for tens of
        milliseconds a batch (a writer's next statement waits for the loop)."""
        last_line = batch.groups[-1].last_line
        # Before the split: PostgreSQL's orders carry their refunds' line items too.
        await fill_bulk_gaps(self.client, resource.children, [g.node for g in batch.groups])
        groups, sql = await asyncio.to_thread(_split_read, batch, in_sql)
        nodes = [group.node for group in groups]
        try:
            read = await asyncio.to_thread(
                read_with_children, resource.children, resource.normalize_node, nodes, graphql=True
            )
        except PayloadError as exc:
            raise _unreadable(resource, exc) from exc
        return _BulkBatch(nodes, read, last_line, sql)

    async def _bulk_write(
        self,
        resource: Resource,
        batch: _BulkBatch,
        ticket: int,
        state: ResourceProgress,
        commits: _BulkCommits,
    ) -> None:
        """One batch and the progress it may claim, in one transaction. Batches write their
        records at once but claim and commit one at a time, so the last to commit claims
        every batch committed before it: the job's progress row is always what has
        committed without a gap from the start."""
        claiming = False
        try:
            async with tenant_transaction(self.env.sessions, self.tenant.id) as session:
                await self._write_records(session, resource, batch.nodes, batch.read)
                if batch.sql is not None:
                    await self._write_in_sql(session, resource, batch.sql)
                await commits.turn.acquire()
                claiming = True
                await self._save_progress(session, resource, commits.claim(ticket))
            commits.committed(ticket)
        finally:
            if claiming:
                commits.turn.release()
        state.update(commits.settled())
        self._report(resource.name, state)

    async def _write_in_sql(
        self, session: AsyncSession, resource: Resource, sql: SqlOrders
    ) -> None:
        """Records PostgreSQL reads out of their JSON; by the Python path if it cannot."""
        if await write_orders(session, self.tenant.id, sql, source="backfill"):
            RECORDS.labels(resource.table, self.job.mode).inc(len(sql.orders))
        else:
            await self._write_records(session, resource, sql.nodes(), None)

    async def _checkpoint(
        self,
        resource: Resource,
        nodes: list[dict[str, Any]],
        advance: ResourceProgress | None = None,
        read: ReadRecords | None = None,
    ) -> None:
        """Records (with their children) and progress in one transaction: after a crash, both
        or neither happened. `advance`, the resource's state once these records are in, is
        written with them and only then becomes the job's (a progress row written meanwhile,
        by a rate-limit wait of a bulk stream, still says what had committed). `read`: the
        nodes already normalised (`read_with_children`)."""
        async with tenant_transaction(self.env.sessions, self.tenant.id) as session:
            await self._write_records(session, resource, nodes, read)
            await self._save_progress(session, resource, advance)
        if advance is not None:
            self.progress[resource.name].update(advance)

    async def _write_records(
        self,
        session: AsyncSession,
        resource: Resource,
        nodes: list[dict[str, Any]],
        read: ReadRecords | None,
    ) -> None:
        if not nodes:
            return
        RECORDS.labels(resource.table, self.job.mode).inc(len(nodes))
        try:
            if read is not None:
                await write_read_records(
                    session,
                    resource.model,
                    resource.children,
                    self.tenant.id,
                    read,
                    source="backfill",
                )
            else:
                await write_with_children(
                    session,
                    resource.model,
                    resource.children,
                    resource.normalize_node,
                    self.tenant.id,
                    nodes,
                    graphql=True,
                    source="backfill",
                )
        except PayloadError as exc:
            raise _unreadable(resource, exc) from exc

    async def _save_progress(
        self, session: AsyncSession, resource: Resource, advance: ResourceProgress | None
    ) -> None:
        """The job's progress, with `advance` as the resource's, in the caller's transaction;
        JobCancelled when the job is no longer running (the transaction's writes then roll
        back with it)."""
        for state in self.progress.values():
            state.pop("waiting", None)  # a page came through: the wait is over
        progress = self.progress
        if advance is not None:
            advance.pop("waiting", None)
            progress = {**self.progress, resource.name: advance}
        result = await session.execute(
            update(SyncJob)
            .where(SyncJob.id == self.job.id, SyncJob.status == SyncStatus.RUNNING)
            .values(progress=progress, heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if affected_rows(result) != 1:
            raise JobCancelled(f"sync job {self.job.id} is no longer running")

    async def _heartbeat(self) -> None:
        async with tenant_transaction(self.env.sessions, self.tenant.id) as session:
            await session.execute(
                update(SyncJob)
                .where(SyncJob.id == self.job.id, SyncJob.status == SyncStatus.RUNNING)
                .values(heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )

    def _report(self, name: str, state: ResourceProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(name, ResourceProgress(**state))

    def _bulk_running(self, status: str, objects: Any) -> None:
        if self.on_progress is None or self.current is None:
            return
        state = self.progress.get(self.current) or ResourceProgress(count=0)
        try:
            counted = int(objects)
        except (TypeError, ValueError):  # Shopify sends the count as a string, or none yet
            counted = 0
        self.on_progress(
            self.current, ResourceProgress(**state, bulk_status=status, bulk_objects=counted)
        )

    async def _waiting(self, wait: RateLimitWait) -> None:
        if self.current is None:
            return
        state = self.progress.get(self.current)
        if state is None:
            return
        if self.on_progress is not None:
            self.on_progress(
                self.current,
                ResourceProgress(
                    **state,
                    waiting_points=wait.points,
                    restore_rate=wait.restore_rate,
                    waiting_seconds=wait.seconds,
                ),
            )
        if wait.seconds < RECORDED_WAIT.total_seconds():
            return
        until = utcnow() + timedelta(seconds=wait.seconds)
        state["waiting"] = RecordedWait(
            points=round(wait.points), rate=wait.restore_rate, until=until.isoformat()
        )
        # Only the progress (and the heartbeat): no records, so the cursor it carries is the
        # last checkpoint's. A job no longer running is left to the next checkpoint to notice.
        async with tenant_transaction(self.env.sessions, self.tenant.id) as session:
            await session.execute(
                update(SyncJob)
                .where(SyncJob.id == self.job.id, SyncJob.status == SyncStatus.RUNNING)
                .values(progress=self.progress, heartbeat_at=utcnow())
                .execution_options(synchronize_session=False)
            )


class _BulkReading:
    """The reading stage's state over one bulk result: lines counted, those a resumed job
    applied skipped, parsed and grouped, and cut into batches (`bulk_batch_full`). One run
    of lines at a time, in whatever thread `take` is called from."""

    def __init__(self, resource: Resource, applied: int) -> None:
        self.name = resource.name
        self.applied = applied
        self.line_number = 0
        self.grouper = BulkGrouper(resource.children)
        self.batch: list[BulkGroup] = []
        self.flushed = applied

    def take(self, lines: list[bytes]) -> list[_ReadBatch]:
        """The batches these lines complete."""
        ready: list[_ReadBatch] = []
        for line in lines:
            if not line.strip():
                continue
            self.line_number += 1
            if self.line_number <= self.applied:
                continue
            try:
                finished = list(self.grouper.feed(loads_json(line), self.line_number))
            except (ValueError, RecursionError) as exc:
                raise BackfillError(f"bulk result for {self.name}: {exc}") from exc
            self.batch.extend(finished)
            if self.batch and bulk_batch_full(
                len(self.batch), self.batch[-1].last_line - self.flushed
            ):
                ready.append(self._cut())
        return ready

    def _cut(self) -> _ReadBatch:
        """The batch read so far (the group still open stays)."""
        cut = _ReadBatch(self.batch)
        self.flushed, self.batch = self.batch[-1].last_line, []
        return cut

    def finish(self) -> _ReadBatch | None:
        """The last batch: the records after the last full one, the last group included."""
        self.batch.extend(self.grouper.finish())
        if not self.batch:
            return None
        return _ReadBatch(self.batch)


def _unreadable(resource: Resource, error: PayloadError) -> BackfillError:
    return BackfillError(f"{resource.name}: Shopify sent a record we cannot read: {error}")


def _split_read(batch: _ReadBatch, in_sql: bool) -> tuple[list[BulkGroup], SqlOrders | None]:
    """`batch`'s groups the Python path writes, and the rest for PostgreSQL to read out of
    their JSON (`split_batch`). `batch` gives them up, so the objects PostgreSQL's share was
    parsed into are freed where this runs (a thread), not on the event loop."""
    groups = batch.groups
    batch.groups = []
    if not in_sql:
        return groups, None
    return split_batch(groups)


async def _hand_over(queue: asyncio.Queue[Any], item: Any) -> None:
    """Put `item` into a one-place `queue` and wait until the next stage took it."""
    await queue.put(item)
    await queue.join()


def _reap(writing: list[asyncio.Task[None]]) -> None:
    """Take the finished writes out of `writing` (in the order they began); raises what the
    first failed one raised, or CancelledError for one cancelled (its batch is not in: the
    job must not go on as if it were). Every failure is retrieved."""
    done = [task for task in writing if task.done()]
    writing[:] = [task for task in writing if not task.done()]
    failures = [asyncio.CancelledError() if task.cancelled() else task.exception() for task in done]
    for failure in failures:
        if failure is not None:
            raise failure


async def _writes_down_to(writing: list[asyncio.Task[None]], most: int) -> None:
    """Wait until at most `most` of `writing` still run (the caller cancels the rest when
    this raises what a write raised)."""
    while True:
        _reap(writing)
        if len(writing) <= most:
            return
        await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)


async def _taken(queue: asyncio.Queue[Any], writing: list[asyncio.Task[None]]) -> Any:
    """The next item of `queue`; raises what a write raised as soon as it does, rather
    than when the stage before has a whole batch to hand over."""
    getter = asyncio.ensure_future(queue.get())
    try:
        while True:
            await asyncio.wait([getter, *writing], return_when=asyncio.FIRST_COMPLETED)
            _reap(writing)
            if getter.done():
                return getter.result()
    finally:
        getter.cancel()


# Bulk batches between two collections of reference cycles (`_collect_young_cycles`). Each
# collection walks the objects of the batches in flight, about 22 ms of CPU: once a batch
# that was 1.9 s of part 1's job; the cycles eight batches leave are about a megabyte.
CYCLE_COLLECTION_BATCHES = 8


def _collect_young_cycles() -> None:
    """Collect the two younger generations' reference cycles, every few bulk batches. A job
    process's collector runs a young collection only after 200,000 more container objects
    were made than freed (`receiver.runtime.JOB_GC_THRESHOLDS`), and a stream's batches free
    what they make, so for minutes none ran while cycles piled up: an httpx response and its
    stream are one, and the refunds' line items are Admin API reads. A 200,000-order job's
    memory grew by 35 MiB of them (malloc's bytes in use, 43 to 80 MiB; a full collection
    every 10 s held them at 45-57)."""
    gc.collect(1)


async def _jsonl_runs(response: httpx.Response) -> AsyncIterator[list[bytes]]:
    """The lines of a JSONL download as bytes, in runs: the lines each chunk ends (a last
    line may lack its newline). JSON is read from bytes, so decoding each line to text first
    would only cost time. A line's pieces are joined once it ends: gluing each chunk onto
    the unfinished line would copy a long line once per chunk."""
    pieces: list[bytes] = []  # the unfinished line
    async for chunk in response.aiter_bytes():
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            pieces.append(chunk)
            continue
        pieces.append(lines[0])
        lines[0] = b"".join(pieces)
        pieces = [lines.pop()]
        yield lines
    rest = b"".join(pieces)
    if rest:
        yield [rest]


def normalize_node(normalize: Callable[[Any], Record], node: Any, name: str) -> Record:
    try:
        return normalize(node)
    except PayloadError as exc:
        node_id = node.get("id") if isinstance(node, dict) else None
        raise BackfillError(
            f"{name} {node_id}: Shopify sent a record we cannot read: {exc}"
        ) from exc


async def _beat(env: BackfillEnvironment, job_id: int) -> None:
    interval = env.lease.total_seconds() / 3
    while True:
        await asyncio.sleep(interval)
        try:
            # by the job's id, which this worker holds
            async with cross_store_transaction(env.sessions) as session:
                await session.execute(
                    update(SyncJob)
                    .where(SyncJob.id == job_id, SyncJob.status == SyncStatus.RUNNING)
                    .values(heartbeat_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
        except Exception:  # a missed beat is retried; the job itself reports real failures
            log.warning("backfill.heartbeat_failed job=%s", job_id, exc_info=True)


async def _finish(
    sessions: async_sessionmaker[AsyncSession], job_id: int, status: str, error: str | None
) -> None:
    # by the job's id, which this worker holds
    async with cross_store_transaction(sessions) as session:
        await session.execute(
            update(SyncJob)
            .where(SyncJob.id == job_id, SyncJob.status == SyncStatus.RUNNING)
            .values(status=status, error=error, finished_at=utcnow(), heartbeat_at=utcnow())
            .execution_options(synchronize_session=False)
        )


async def _release(sessions: async_sessionmaker[AsyncSession], job_id: int) -> None:
    """Interrupted on purpose (shutdown, cancelled task): queued again, checkpoint kept."""
    # by the job's id, which this worker holds
    async with cross_store_transaction(sessions) as session:
        await session.execute(
            update(SyncJob)
            .where(SyncJob.id == job_id, SyncJob.status == SyncStatus.RUNNING)
            .values(status=SyncStatus.QUEUED)
            .execution_options(synchronize_session=False)
        )


async def run_sync_job(
    env: BackfillEnvironment, job_id: int, *, on_progress: ProgressCallback | None = None
) -> str:
    """Claim and run a job to its end; returns the job's final status ("skipped" if another
    worker holds it or it already ended)."""
    if not await claim_job(env.sessions, job_id, env.lease):
        return "skipped"
    # the job was claimed by id just above
    async with cross_store_transaction(env.sessions) as session:
        job = await session.get_one(SyncJob, job_id)
        tenant = await session.get_one(Tenant, job.tenant_id)
    if tenant.status != TenantStatus.ACTIVE:
        await _finish(env.sessions, job_id, SyncStatus.CANCELLED, f"store is {tenant.status}")
        return SyncStatus.CANCELLED
    run = JobRun(env, job, tenant, on_progress)
    log.info("backfill.started job=%s shop=%s mode=%s", job_id, tenant.shop_domain, job.mode)
    # Beat while alive, also through long pacing or bulk waits: only a dead worker's job
    # goes stale and gets taken over.
    beating = asyncio.create_task(_beat(env, job_id))
    try:
        await run.run()
    except asyncio.CancelledError:
        await asyncio.shield(_release(env.sessions, job_id))
        raise
    except JobCancelled:
        return SyncStatus.CANCELLED
    except CredentialsInvalid as exc:
        await _finish(env.sessions, job_id, SyncStatus.FAILED, f"credentials: {exc}")
        return SyncStatus.FAILED
    except BackfillError as exc:
        await _finish(env.sessions, job_id, SyncStatus.FAILED, str(exc))
        return SyncStatus.FAILED
    except Exception as exc:
        error = error_text(exc)
        log.error(
            "backfill.crashed job=%s error=%s", job_id, error, exc_info=not may_quote_data(exc)
        )
        await _finish(env.sessions, job_id, SyncStatus.FAILED, f"unexpected {error}")
        return SyncStatus.FAILED
    finally:
        # Awaited, so no heartbeat write outlives the job (it would touch a row by id after
        # whoever awaited the job moved on).
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)
    await _finish(env.sessions, job_id, SyncStatus.SUCCEEDED, None)
    log.info("backfill.succeeded job=%s shop=%s", job_id, tenant.shop_domain)
    return SyncStatus.SUCCEEDED
