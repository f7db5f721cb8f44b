"""Starting a sync: the one service behind `POST /api/sync`, the store page's backfill button,
`shopify-receiver backfill` and the watchdog's gap pull. Callers choose how the job then runs
(queued, or inline) and how each refusal is shown."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.client import BackfillError
from backfill.queries import RESOURCES
from backfill.runner import (
    AUTO_MODE,
    BackfillEnvironment,
    SyncAlreadyRunning,
    admin_client_for,
    create_sync_job,
    shopify_count,
    validate_request,
)
from models import SyncJob, Tenant
from models.statuses import SyncMode, SyncTrigger, TenantStatus
from models.tenancy import tenant_transaction

if TYPE_CHECKING:
    # Only the protocol: backfill.queue imports procrastinate and, through maintenance, the
    # watchdog, which starts syncs here.
    from backfill.queue import JobQueue

log = logging.getLogger("shopify_receiver.backfill.sync")

# `auto` picks bulk from this many records (Shopify's counts of the chosen resources, added).
# Paged at a Standard plan's 100 points/s with their children, orders come at 1-3 a second and
# customers at about 7 (measured against the simulator: README, Backfill), so 500 records take
# minutes; a bulk operation's start and polls cost seconds, its download and gap queries then
# run faster than pages (20,000 orders: 12 minutes in bulk, over 4 hours paged).
AUTO_BULK_MIN_RECORDS = 500
# `auto` asks Shopify before the job exists, also inside `POST /api/sync`: counts that do not
# come back by then (a throttled bucket, Shopify down) choose full, which suits any size.
AUTO_COUNT_TIMEOUT_SECONDS = 5.0

__all__ = [
    "AUTO_BULK_MIN_RECORDS",
    "ModeChoice",
    "NoToken",
    "StartedSync",
    "StoreInactive",
    "StoreUnknown",
    "SyncAlreadyRunning",
    "choose_mode",
    "start_sync",
]


class StoreUnknown(LookupError):
    def __init__(self, tenant_id: int) -> None:
        super().__init__(f"no store with tenantId {tenant_id}")
        self.tenant_id = tenant_id


class StoreInactive(Exception):
    """The store is uninstalled (or redacted): nothing may be pulled until it is reinstalled."""

    def __init__(self, shop_domain: str, status: str) -> None:
        super().__init__(f"{shop_domain} is {status}; reinstall before syncing")
        self.shop_domain = shop_domain
        self.status = status


class NoToken(Exception):
    def __init__(self, shop_domain: str) -> None:
        super().__init__(
            f"{shop_domain}: no access token; set one with "
            "`shopify-receiver tenants add --shop ... --access-token ...`"
        )
        self.shop_domain = shop_domain


@dataclass(frozen=True)
class ModeChoice:
    """What `auto` became and why: Shopify's record count (None when it gave none in time)."""

    mode: str
    records: int | None


@dataclass(frozen=True)
class StartedSync:
    job: SyncJob
    shop_domain: str
    # Set when the caller asked for `auto`.
    choice: ModeChoice | None = None


async def choose_mode(
    env: BackfillEnvironment,
    tenant: Tenant,
    resources: list[str],
) -> ModeChoice:
    """Bulk for a store with at least AUTO_BULK_MIN_RECORDS records of the chosen resources
    (by Shopify's counts), full otherwise or when the counts are not to be had."""
    client = admin_client_for(env, tenant)
    counts: list[int] = []
    try:
        async with asyncio.timeout(AUTO_COUNT_TIMEOUT_SECONDS):
            for name in resources:
                count = await shopify_count(client, RESOURCES[name], None)
                if count is not None:
                    counts.append(count)
    except TimeoutError:
        log.warning("backfill.auto_counts_late shop=%s: choosing full", tenant.shop_domain)
        return ModeChoice(SyncMode.FULL, None)
    except BackfillError as exc:  # credentials refused: the job will say so in its own words
        log.warning("backfill.auto_counts_failed shop=%s error=%s", tenant.shop_domain, exc)
        return ModeChoice(SyncMode.FULL, None)
    if not counts:
        return ModeChoice(SyncMode.FULL, None)
    records = sum(counts)
    return ModeChoice(SyncMode.BULK if records >= AUTO_BULK_MIN_RECORDS else SyncMode.FULL, records)


async def start_sync(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: int,
    mode: str,
    resources: list[str] | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    trigger: str = SyncTrigger.MANUAL,
    require_token: bool = False,
    queue: JobQueue | None = None,
    backfill: BackfillEnvironment | None = None,
) -> StartedSync:
    """Create the store's sync job (committed), and hand it to `queue` when one is given.

    Mode `auto` needs `backfill` (to ask Shopify's counts, see `choose_mode`); the job is
    created with the mode it chose.

    Raises StoreUnknown, StoreInactive, NoToken (only with `require_token`: a queued job of a
    store without a token fails on its own, with the same message), SyncAlreadyRunning (with
    the active job) and ValueError for a mode or resources `validate_request` refuses.
    """
    choice: ModeChoice | None = None
    if mode == AUTO_MODE:
        chosen = validate_request(mode, resources)
        if backfill is None:
            raise ValueError("mode 'auto' needs the backfill environment to ask Shopify's counts")
        async with tenant_transaction(sessions, tenant_id) as session:
            tenant = await _startable(session, tenant_id, require_token)
        # Outside any transaction: no database connection waits on Shopify.
        choice = await choose_mode(backfill, tenant, chosen)
        mode = choice.mode
    async with tenant_transaction(sessions, tenant_id) as session:
        tenant = await _startable(session, tenant_id, require_token)
        running: SyncAlreadyRunning | None = None
        try:
            job = await create_sync_job(
                session, tenant, mode, resources, since=since, until=until, trigger=trigger
            )
        except SyncAlreadyRunning as exc:
            # Raised once the transaction has ended (nothing was written): a rollback would
            # expire the running job the caller shows.
            running = exc
    if running is not None:
        raise running
    started = StartedSync(job, tenant.shop_domain, choice)
    if queue is not None:
        await queue.enqueue(job.id)
    return started


async def _startable(session: AsyncSession, tenant_id: int, require_token: bool) -> Tenant:
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        raise StoreUnknown(tenant_id)
    if tenant.status != TenantStatus.ACTIVE:
        raise StoreInactive(tenant.shop_domain, tenant.status)
    if require_token and not tenant.access_token_encrypted:
        raise NoToken(tenant.shop_domain)
    return tenant


@dataclass(frozen=True)
class JobOutcome:
    status: str
    error: str | None


async def job_outcome(
    sessions: async_sessionmaker[AsyncSession], tenant_id: int, job_id: int
) -> JobOutcome:
    """Where one of the store's jobs stands (after running it in the foreground, say)."""
    async with tenant_transaction(sessions, tenant_id) as session:
        job = await session.get_one(SyncJob, job_id)
        return JobOutcome(job.status, job.error)
