"""Starting a sync: the one service behind `POST /api/sync`, the store page's backfill button,
`shopify-receiver backfill` and the watchdog's gap pull. Callers choose how the job then runs
(queued, or inline) and how each refusal is shown."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.runner import SyncAlreadyRunning, create_sync_job
from models import SyncJob, Tenant
from models.statuses import SyncTrigger, TenantStatus
from models.tenancy import tenant_transaction

if TYPE_CHECKING:
    # Only the protocol: backfill.queue imports procrastinate and, through maintenance, the
    # watchdog, which starts syncs here.
    from backfill.queue import JobQueue

__all__ = [
    "NoToken",
    "StartedSync",
    "StoreInactive",
    "StoreUnknown",
    "SyncAlreadyRunning",
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
class StartedSync:
    job: SyncJob
    shop_domain: str


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
) -> StartedSync:
    """Create the store's sync job (committed), and hand it to `queue` when one is given.

    Raises StoreUnknown, StoreInactive, NoToken (only with `require_token`: a queued job of a
    store without a token fails on its own, with the same message), SyncAlreadyRunning (with
    the active job) and ValueError for a mode or resources `validate_request` refuses.
    """
    async with tenant_transaction(sessions, tenant_id) as session:
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None:
            raise StoreUnknown(tenant_id)
        if tenant.status != TenantStatus.ACTIVE:
            raise StoreInactive(tenant.shop_domain, tenant.status)
        if require_token and not tenant.access_token_encrypted:
            raise NoToken(tenant.shop_domain)
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
    started = StartedSync(job, tenant.shop_domain)
    if queue is not None:
        await queue.enqueue(job.id)
    return started


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
