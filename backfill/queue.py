"""Where sync jobs run: procrastinate workers on PostgreSQL, an in-process runner on SQLite.

Both call `run_sync_job`, whose claim makes a job run in one place at a time, and both pick
up jobs that were interrupted (queued again, or running with a stale heartbeat).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from sqlalchemy.engine import make_url

from backfill.maintenance import (
    Maintenance,
    partition_tick,
    reconcile_tick,
    refetch_tick,
    retry_tick,
    watchdog_tick,
)
from backfill.redactions import complete_redactions, pending_redaction_stores
from backfill.runner import BackfillEnvironment, claimable_job_ids, run_sync_job
from handlers.errors import error_text

log = logging.getLogger("shopify_receiver.backfill.queue")

QUEUE = "backfill"
# procrastinate's workers beat every 10 s; one silent for this long died with its jobs.
STALLED_AFTER_SECONDS = 30.0


class JobQueue(Protocol):
    async def enqueue(self, sync_job_id: int) -> None: ...

    async def enqueue_redactions(self, tenant_id: int) -> None:
        """Carry out the store's recorded customers/redact requests soon. Never raises: the
        request is already durable, and the sweep queues it again if this is lost."""


class InProcessRunner:
    """The embedded default: jobs run as tasks of this process (the web server or the CLI)."""

    def __init__(self, env: BackfillEnvironment) -> None:
        self.env = env
        self.tasks: dict[int, asyncio.Task[str]] = {}
        # Redaction jobs, by store: one that is running may already have passed a request
        # committed after it looked, so a new one always starts (the work is idempotent).
        self.redactions: set[asyncio.Task[int]] = set()

    async def enqueue(self, sync_job_id: int) -> None:
        if sync_job_id in self.tasks:
            return
        task = asyncio.create_task(run_sync_job(self.env, sync_job_id))
        self.tasks[sync_job_id] = task
        task.add_done_callback(lambda _: self.tasks.pop(sync_job_id, None))

    async def enqueue_redactions(self, tenant_id: int) -> None:
        task = asyncio.create_task(self._redact(tenant_id))
        self.redactions.add(task)
        task.add_done_callback(self.redactions.discard)

    async def _redact(self, tenant_id: int) -> int:
        try:
            return await complete_redactions(self.env.sessions, tenant_id)
        except Exception as exc:  # the request stays open; the sweep or next start retries
            log.error("redaction.failed tenant=%s error=%s", tenant_id, error_text(exc))
            return 0

    async def resume_interrupted(self) -> list[int]:
        job_ids = await claimable_job_ids(self.env.sessions, self.env.lease)
        for job_id in job_ids:
            await self.enqueue(job_id)
        for tenant_id in await pending_redaction_stores(self.env.sessions):
            await self.enqueue_redactions(tenant_id)
        return job_ids

    def _running(self) -> list[asyncio.Task[str] | asyncio.Task[int]]:
        return [*self.tasks.values(), *self.redactions]

    async def drain(self) -> None:
        """Return once no job runs here, each having ended on its own (also jobs enqueued
        meanwhile). Cancelling this wait leaves the jobs running."""
        while running := self._running():
            await asyncio.wait(running)

    async def idle(self) -> None:
        """Cancel the jobs running here and return once none is left, their last writes done;
        each puts itself back in the queue with its checkpoint. The runner still takes jobs
        afterwards (tests settle the served app between tests with this)."""
        # Again while any is left: a job enqueued while we waited is cancelled too.
        while tasks := self._running():
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        await self.idle()


def psycopg_conninfo(database_url: str) -> str:
    """SQLAlchemy's `postgresql+asyncpg://...` as the libpq URL psycopg expects."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


NAMESPACE = "shopify_receiver"
RUN_BACKFILL = f"{NAMESPACE}:run_backfill"
SWEEP = f"{NAMESPACE}:sweep_backfills"
WATCHDOG = f"{NAMESPACE}:watch_subscriptions"
RECONCILE = f"{NAMESPACE}:reconcile_stores"
COMPLETE_REDACTIONS = f"{NAMESPACE}:complete_redactions"
RETRY_EVENTS = f"{NAMESPACE}:retry_events"
REFETCH_CUT_LISTS = f"{NAMESPACE}:refetch_cut_lists"


class JobBusy(Exception):
    """Another worker holds the job's lease; try again once it may have expired."""


async def run_backfill(context: procrastinate.JobContext, sync_job_id: int) -> None:
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    outcome = await run_sync_job(env, sync_job_id)
    if outcome == "skipped" and sync_job_id in await claimable_job_ids(env.sessions, env.lease):
        raise JobBusy(f"sync job {sync_job_id} became claimable while we looked")


async def sweep_backfills(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every minute: retry jobs of dead workers and re-queue sync jobs nobody is running."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    app: procrastinate.App = context.app
    await requeue_abandoned(app, env)
    await requeue_redactions(app, env)


async def run_redactions(context: procrastinate.JobContext, tenant_id: int) -> None:
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    await complete_redactions(env.sessions, tenant_id)


async def retry_events(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every minute: apply again the failed events whose next attempt is due."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    maintenance: Maintenance | None = context.additional_context.get("maintenance")
    if maintenance is not None:
        await retry_tick(env, maintenance)


async def watch_subscriptions(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every minute: check the subscriptions of stores not checked for WATCHDOG_INTERVAL."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    maintenance: Maintenance | None = context.additional_context.get("maintenance")
    if maintenance is not None:
        await watchdog_tick(env, maintenance)


async def reconcile_stores(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every minute: reconcile the stores not reconciled for RECONCILE_INTERVAL."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    maintenance: Maintenance | None = context.additional_context.get("maintenance")
    if maintenance is not None:
        await reconcile_tick(env, maintenance)


async def refetch_cut_lists(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every minute: read whole the records whose webhook cut a child list short."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    maintenance: Maintenance | None = context.additional_context.get("maintenance")
    if maintenance is not None:
        await refetch_tick(env, maintenance)


async def make_inbox_partitions(context: procrastinate.JobContext, timestamp: int) -> None:
    """Every hour: make this month's and next month's inbox partitions if missing."""
    env: BackfillEnvironment = context.additional_context["backfill_env"]
    maintenance: Maintenance | None = context.additional_context.get("maintenance")
    if maintenance is not None:
        await partition_tick(env, maintenance)


def _blueprint() -> procrastinate.Blueprint:
    """Fresh task objects for each app: procrastinate binds a task to the app that registers
    it (its `configure` and the periodic deferrer defer through that app), and renames the
    blueprint's tasks in place, so one module-level blueprint cannot serve two apps."""
    tasks = procrastinate.Blueprint()
    tasks.task(
        name="run_backfill",
        queue=QUEUE,
        pass_context=True,
        retry=procrastinate.RetryStrategy(max_attempts=40, wait=15, retry_exceptions={JobBusy}),
    )(run_backfill)
    tasks.task(name="complete_redactions", queue=QUEUE, pass_context=True)(run_redactions)
    for name, function, periodic_id in (
        ("sweep_backfills", sweep_backfills, "sweep"),
        ("watch_subscriptions", watch_subscriptions, "watchdog"),
        ("reconcile_stores", reconcile_stores, "reconcile"),
        ("retry_events", retry_events, "retries"),
        ("refetch_cut_lists", refetch_cut_lists, "refetches"),
    ):
        task = tasks.task(name=name, queue=QUEUE, pass_context=True)(function)
        tasks.periodic(cron="* * * * *", periodic_id=periodic_id)(task)
    partitions = tasks.task(name="make_inbox_partitions", queue=QUEUE, pass_context=True)(
        make_inbox_partitions
    )
    tasks.periodic(cron="7 * * * *", periodic_id="partitions")(partitions)
    return tasks


async def requeue_abandoned(app: procrastinate.App, env: BackfillEnvironment) -> int:
    stalled = list(
        await app.job_manager.get_stalled_jobs(
            queue=QUEUE, seconds_since_heartbeat=STALLED_AFTER_SECONDS
        )
    )
    for job in stalled:
        await app.job_manager.retry_job(job)
    requeued = 0
    for sync_job_id in await claimable_job_ids(env.sessions, env.lease):
        try:
            await defer_backfill(app, sync_job_id)
            requeued += 1
        except AlreadyEnqueued:
            pass
    return requeued + len(stalled)


async def requeue_redactions(app: procrastinate.App, env: BackfillEnvironment) -> int:
    """Queue a redaction job for each store with an open customers/redact request: the job
    of a crashed worker, or one whose deferral was lost, is not waited for."""
    requeued = 0
    for tenant_id in await pending_redaction_stores(env.sessions):
        try:
            await defer_redactions(app, tenant_id)
            requeued += 1
        except AlreadyEnqueued:
            pass
    return requeued


async def defer_redactions(app: procrastinate.App, tenant_id: int) -> None:
    # The queueing lock keeps one waiting job per store; one already running may have
    # looked before the newest request was committed, so a second may queue behind it.
    await app.configure_task(
        COMPLETE_REDACTIONS, queueing_lock=f"redact-tenant-{tenant_id}", queue=QUEUE
    ).defer_async(tenant_id=tenant_id)


async def defer_backfill(app: procrastinate.App, sync_job_id: int) -> None:
    # No procrastinate `lock`: a dead worker's job would hold it until stall detection ran.
    # Exclusivity comes from run_sync_job's claim (a lease on the sync_jobs row) instead.
    await app.configure_task(
        RUN_BACKFILL, queueing_lock=f"sync-job-{sync_job_id}", queue=QUEUE
    ).defer_async(sync_job_id=sync_job_id)


def procrastinate_app(database_url: str) -> procrastinate.App:
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=psycopg_conninfo(database_url))
    )
    app.add_tasks_from(_blueprint(), namespace=NAMESPACE)
    return app


class ProcrastinateQueue:
    """PostgreSQL: a job row in procrastinate's queue, picked up by any `worker` process.

    The connection pool opens on first use, so a web process starts (and answers 503 to
    webhooks) while the database is still down.
    """

    def __init__(self, app: procrastinate.App) -> None:
        self.app = app
        self._opened = False
        self._lock = asyncio.Lock()

    async def enqueue(self, sync_job_id: int) -> None:
        await self._open()
        try:
            await defer_backfill(self.app, sync_job_id)
        except AlreadyEnqueued:
            log.info("backfill.already_enqueued job=%s", sync_job_id)

    async def enqueue_redactions(self, tenant_id: int) -> None:
        try:
            await self._open()
            await defer_redactions(self.app, tenant_id)
        except AlreadyEnqueued:
            pass
        except Exception as exc:  # durable already; the worker's sweep queues it again
            log.warning("redaction.enqueue_failed tenant=%s error=%s", tenant_id, error_text(exc))

    async def _open(self) -> None:
        async with self._lock:
            if not self._opened:
                await self.app.open_async()
                self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.app.close_async()
            self._opened = False


async def run_worker(
    app: procrastinate.App,
    env: BackfillEnvironment,
    *,
    concurrency: int,
    wait: bool = True,
    maintenance: Maintenance | None = None,
) -> None:
    """A worker: first re-queue what dead workers left, then run jobs until stopped.

    With `maintenance`, the worker also runs the periodic watchdog and reconcile ticks.
    """
    await requeue_abandoned(app, env)
    await requeue_redactions(app, env)
    await app.run_worker_async(
        queues=[QUEUE],
        concurrency=concurrency,
        wait=wait,
        additional_context={"backfill_env": env, "maintenance": maintenance},
        install_signal_handlers=wait,
    )
