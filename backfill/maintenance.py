"""The periodic checks that keep a store's copy complete without anyone watching: the
subscription watchdog and drift reconciliation; and the inbox's retention and partitions.

On PostgreSQL they are procrastinate periodic tasks (see backfill.queue): every worker
schedules them, procrastinate defers one job per tick, and each store is claimed before it
is checked, so several workers never check one store at once. On the embedded SQLite default
`MaintenanceLoop` runs the same ticks inside the `serve` process.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import null, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.reconcile import reconcile_due_stores
from backfill.redactions import complete_all_redactions
from backfill.refetch import complete_all_refetches
from backfill.retries import RetryOutcome, retry_due_events
from backfill.runner import BackfillEnvironment
from backfill.watchdog import WatchdogResult, watch_due_stores
from handlers import inbox
from handlers.errors import error_text, may_quote_data
from handlers.retries import DEFAULT_MAX_ATTEMPTS
from models import WebhookEvent, utcnow
from models.statuses import EventStatus
from models.tenancy import cross_store_transaction
from models.upsert import affected_rows

log = logging.getLogger("shopify_receiver.backfill.maintenance")

TICK_SECONDS = 60.0


@dataclass(frozen=True)
class Maintenance:
    """What the periodic checks need beyond the backfill environment (from Settings)."""

    webhook_url: str | None
    watchdog_interval: timedelta
    reconcile_interval: timedelta
    event_max_attempts: int = DEFAULT_MAX_ATTEMPTS


async def watchdog_tick(env: BackfillEnvironment, maintenance: Maintenance) -> list[WatchdogResult]:
    if maintenance.webhook_url is None:
        log.debug("watchdog.skipped reason=PUBLIC_URL not set")
        return []
    return await watch_due_stores(env, maintenance.webhook_url, maintenance.watchdog_interval)


async def reconcile_tick(env: BackfillEnvironment, maintenance: Maintenance) -> list[int]:
    return await reconcile_due_stores(env, maintenance.reconcile_interval)


async def retry_tick(env: BackfillEnvironment, maintenance: Maintenance) -> list[RetryOutcome]:
    return await retry_due_events(env.sessions, max_attempts=maintenance.event_max_attempts)


async def refetch_tick(env: BackfillEnvironment, maintenance: Maintenance) -> int:
    return await complete_all_refetches(env)


async def redaction_tick(env: BackfillEnvironment, maintenance: Maintenance) -> int:
    # In-process jobs (SQLite): a redaction a crash interrupted is carried out inline.
    return await complete_all_redactions(env.sessions)


class MaintenanceLoop:
    """SQLite: the periodic checks as a task of the serving process."""

    def __init__(self, env: BackfillEnvironment, maintenance: Maintenance) -> None:
        self.env = env
        self.maintenance = maintenance
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maintenance")

    async def tick(self) -> None:
        # Each check on its own: one failing (Shopify down, say) must not starve the other.
        for name, check in (
            ("watchdog", lambda: watchdog_tick(self.env, self.maintenance)),
            ("reconcile", lambda: reconcile_tick(self.env, self.maintenance)),
            ("retries", lambda: retry_tick(self.env, self.maintenance)),
            ("redactions", lambda: redaction_tick(self.env, self.maintenance)),
            ("refetches", lambda: refetch_tick(self.env, self.maintenance)),
            ("partitions", lambda: partition_tick(self.env, self.maintenance)),
        ):
            try:
                await check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error(
                    "maintenance.failed check=%s error=%s",
                    name,
                    error_text(exc),
                    exc_info=not may_quote_data(exc),
                )

    async def _run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


@dataclass(frozen=True)
class PruneReport:
    deleted: int  # events removed
    emptied: int  # events whose raw payload was emptied


async def prune_events(
    sessions: async_sessionmaker[AsyncSession],
    *,
    older_than: timedelta | None = None,
    payloads_older_than: timedelta | None = None,
    include_failed: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Delete processed and ignored events received over `older_than` ago, and empty the
    payloads of those received over `payloads_older_than` ago, in one transaction.

    On PostgreSQL the months wholly past `older_than` are dropped as partitions rather than
    deleted row by row (handlers.inbox); either way an event's dedupe key goes with it, so a
    redelivery of a pruned event is stored anew.

    Failed (and dead) events are kept whole unless `include_failed`: their payload is what a
    replay applies. Emptied events keep their row (ids, topic, times) for dedupe and audit.
    """
    now = now or utcnow()
    statuses = [EventStatus.PROCESSED, EventStatus.IGNORED]
    if include_failed:
        # A dead event is a failed one past its last automatic attempt.
        statuses += [EventStatus.FAILED, EventStatus.DEAD]
    deleted = emptied = 0
    # Retention is the same for every store.
    async with cross_store_transaction(sessions) as session:
        if older_than is not None:
            horizon = now - older_than
            # PostgreSQL: whole months before the horizon go as partitions (their failed
            # events kept unless include_failed); the month at the horizon, the DEFAULT
            # partition and SQLite's plain table row by row, so `older_than` means the same.
            deleted = await inbox.drop_months(session, horizon, keep_failed=not include_failed)
            deleted += await inbox.delete_events(session, horizon, statuses)
        if payloads_older_than is not None:
            result = await session.execute(
                update(WebhookEvent)
                .where(
                    WebhookEvent.received_at < now - payloads_older_than,
                    WebhookEvent.status.in_(statuses),
                    WebhookEvent.payload.is_not(None),
                )
                .values(payload=null())
                .execution_options(synchronize_session=False)
            )
            emptied = affected_rows(result)
    return PruneReport(deleted, emptied)


async def partition_tick(env: BackfillEnvironment, maintenance: Maintenance) -> list[datetime]:
    """Make this month's and next month's inbox partitions ahead of time (PostgreSQL; nothing
    on SQLite); the months made."""
    async with cross_store_transaction(env.sessions) as session:
        made = await inbox.add_months(session)
    for month in made:
        log.info("inbox.partition_created month=%s", month.strftime("%Y-%m"))
    return made
