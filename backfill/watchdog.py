"""The watchdog: Shopify deletes a subscription after repeated failed deliveries and never
says so. Every few minutes each active store's subscriptions are compared with the intended
ones; missing ones are registered again, then the gap they left is closed in two steps:

1. an incremental backfill of the affected resources from the last event we received for
   them (creates and updates made while nobody listened);
2. a reconcile of those resources, because an incremental pull cannot see what was deleted
   meanwhile: the count comparison finds the windows with deletions and tombstones them.

Both run inline, in the worker (or the serving process on SQLite) that runs the check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backfill.credentials import callable_store
from backfill.reconcile import finished_sync, reconcile
from backfill.runner import BackfillEnvironment, run_sync_job
from backfill.subscriptions import SubscriptionReport, sync_subscriptions, topic_resource
from backfill.sync import StoreInactive, StoreUnknown, SyncAlreadyRunning, start_sync
from handlers import handled_topics
from handlers.dispatch import last_received
from handlers.errors import error_text
from handlers.resources import reconciled_names_for
from models import Tenant, utcnow
from models.statuses import ReconcileTrigger, SyncMode, SyncStatus, SyncTrigger
from models.tenancy import tenant_transaction

log = logging.getLogger("shopify_receiver.backfill.watchdog")

# Events are stamped with our receipt time; Shopify's updated_at of the same change is a
# little earlier, and deliveries already in flight when the subscription vanished may land
# late. The gap pull starts this much before the last event received.
GAP_OVERLAP = timedelta(minutes=15)


@dataclass
class WatchdogResult:
    shop: str
    subscriptions: SubscriptionReport | None = None
    # The incremental job started for the gap, or the active one that already covers it.
    gap_job_id: int | None = None
    gap_since: datetime | None = None
    gap_resources: list[str] = field(default_factory=list)
    gap_status: str | None = None  # the gap job's outcome
    reconcile_run_id: int | None = None
    reconcile_status: str | None = None
    note: str | None = None
    error: str | None = None


async def last_event_received(
    session: AsyncSession, tenant_id: int, resource: str
) -> datetime | None:
    """When we last heard of this resource, by any of its topics."""
    times = [
        await last_received(session, tenant_id, topic)
        for topic in handled_topics()
        if topic_resource(topic) == resource
    ]
    return max((moment for moment in times if moment is not None), default=None)


async def _gap_since(
    env: BackfillEnvironment, tenant_id: int, resources: list[str], result: WatchdogResult
) -> tuple[bool, datetime | None]:
    """Whether a gap pull makes sense, and from when."""
    async with tenant_transaction(env.sessions, tenant_id) as session:
        if not await session.scalar(select(finished_sync(tenant_id))):
            # Nothing to keep in step yet: the initial backfill will bring everything.
            result.note = "no finished backfill yet; run the initial backfill"
            return False, None
        lasts = [await last_event_received(session, tenant_id, name) for name in resources]
    # A resource we never heard of by webhook: fall back to the last finished sync.
    since = None if None in lasts else min(v for v in lasts if v is not None) - GAP_OVERLAP
    return True, since


async def _start_gap_backfill(
    env: BackfillEnvironment, tenant_id: int, resources: list[str], result: WatchdogResult
) -> int | None:
    wanted, since = await _gap_since(env, tenant_id, resources, result)
    if not wanted:
        return None
    try:
        started = await start_sync(
            env.sessions,
            tenant_id,
            SyncMode.INCREMENTAL,
            resources,
            since=since,
            trigger=SyncTrigger.WATCHDOG,
        )
    except SyncAlreadyRunning as exc:
        active = exc.job
        covers = active.mode != SyncMode.INCREMENTAL or (
            active.until is None
            and (active.since is None or (since is not None and active.since <= since))
        )
        result.gap_job_id = active.id if covers else None
        result.note = (
            f"sync job {active.id} already running covers the gap"
            if covers
            else f"sync job {active.id} is running; the gap is left to reconcile"
        )
        return None
    except (StoreUnknown, StoreInactive) as exc:
        # Uninstalled (or removed) since it was claimed: nothing to pull.
        result.note = str(exc)
        return None
    result.gap_job_id = started.job.id
    result.gap_since = started.job.since
    result.gap_resources = list(resources)
    return started.job.id


async def watch_store(env: BackfillEnvironment, tenant_id: int, uri: str) -> WatchdogResult:
    """Re-register missing subscriptions of one store and close the gap they left."""
    async with tenant_transaction(env.sessions, tenant_id) as session:
        tenant = await session.get_one(Tenant, tenant_id)
        result = WatchdogResult(shop=tenant.shop_domain)
    try:
        report = await sync_subscriptions(env, tenant_id, uri)
    except Exception as exc:  # one store's trouble must not stop the others' checks
        result.error = error_text(exc)
        log.warning("watchdog.failed shop=%s error=%s", result.shop, result.error)
        return result
    result.subscriptions = report
    missing = report.missing_resources()
    if not missing:
        return result
    log.warning(
        "watchdog.restored shop=%s missing=%s created=%s",
        result.shop,
        ",".join(report.missing),
        ",".join(report.created),
    )
    job_id = await _start_gap_backfill(env, tenant_id, missing, result)
    if job_id is None:
        return result
    result.gap_status = await run_sync_job(env, job_id)
    if result.gap_status != SyncStatus.SUCCEEDED:
        result.note = f"gap sync job {job_id} ended {result.gap_status}; reconcile will retry"
        return result
    run = await reconcile(
        env,
        tenant_id,
        # products' gap covers their variants, inventory items' their levels.
        resources=reconciled_names_for(missing),
        trigger=ReconcileTrigger.WATCHDOG,
    )
    result.reconcile_run_id, result.reconcile_status = run.id, run.status
    log.info(
        "watchdog.gap_closed shop=%s job=%s since=%s reconcile=%s",
        result.shop,
        job_id,
        result.gap_since.isoformat() if result.gap_since else None,
        run.status,
    )
    return result


async def claim_due_stores(
    env: BackfillEnvironment, interval: timedelta, now: datetime | None = None
) -> list[int]:
    """Active stores whose last check is older than `interval`, each claimed by stamping it:
    of several workers ticking at once, one checks a given store."""
    now = now or utcnow()
    async with env.sessions() as session, session.begin():
        # tenants carries no tenant_id column of its own, so no row-level policy applies.
        rows = await session.scalars(
            update(Tenant)
            .where(
                callable_store(),
                or_(
                    Tenant.watchdog_checked_at.is_(None),
                    Tenant.watchdog_checked_at < now - interval,
                ),
            )
            .values(watchdog_checked_at=now)
            .returning(Tenant.id)
            .execution_options(synchronize_session=False)
        )
        return sorted(rows)


async def watch_due_stores(
    env: BackfillEnvironment, uri: str, interval: timedelta, now: datetime | None = None
) -> list[WatchdogResult]:
    return [
        await watch_store(env, tenant_id, uri)
        for tenant_id in await claim_due_stores(env, interval, now)
    ]
