"""Issue #6: PostgreSQL crashes and restarts while webhooks stream in.

The database runs in a throwaway cluster of this test's own (tests/pgcluster.py), so crashing
it leaves the shared server other test sessions use alone. Several senders post correctly
signed order deliveries over real HTTP; once enough are acknowledged the cluster is stopped
with `-m immediate` (every server process gone at once, no checkpoint) and started again,
which replays the WAL. The served app is never restarted.

What must hold, from DESIGN.md's "Webhook responses" and "Behaviour that must hold":
- every delivery gets a 2xx or a 503 with Retry-After within Shopify's 5 s, never a 500;
- a 2xx means committed: its event is in webhook_events after the crash;
- the service recovers by itself once the database is back;
- after Shopify-style retries of everything not acknowledged, every event is stored exactly
  once and each order holds its newest version.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from models import Order, WebhookEvent, create_engine, create_session_factory
from models import migrate as migrations
from tests.conftest import APP_ROLE, ServedApp, settings_for
from tests.factories import create_tenant, delivery, order_version
from tests.pgcluster import PostgresCluster

OWNER_ROLE = "receiver_owner"
DATABASE = "receiver"
STORE_SECRET = "shpss_store_secret_for_the_restart_test"
SENDERS = 8
ORDERS = 12
FIRST_ORDER_ID = 820_000_000_000
UPDATE_TOPICS = ("orders/updated", "orders/paid", "orders/fulfilled")
# Enough traffic on either side of the crash that it lands mid-stream, not before or after.
ACKS_BEFORE_CRASH = 60
ACKS_AFTER_RESTART = 60
# Shopify abandons a delivery after 5 s; an answer later than that is as bad as none.
SHOPIFY_TIMEOUT_SECONDS = 5.0
# Bound each phase, so that a service that never recovers fails the test well within a
# minute instead of hanging it. A healthy run streams for about 3 s and retries for about 1 s.
STREAM_DEADLINE_SECONDS = 20.0
RETRY_DEADLINE_SECONDS = 15.0
RETRY_ROUNDS = 5


@dataclass(frozen=True)
class Planned:
    """One delivery as Shopify would send it, every retry byte-for-byte the same."""

    event_id: str
    order_id: int
    version: int
    topic: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Attempt:
    planned: Planned
    phase: str  # "before crash", "during restart", "after restart" or "retry"
    status: int | None  # None: no HTTP answer at all
    error: str | None
    seconds: float
    retry_after: str | None
    outcome: str | None = None  # the body's "status" on a 2xx: processed, duplicate, ...

    @property
    def acknowledged(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        outcome = self.status if self.status is not None else self.error
        return (
            f"{self.planned.topic} order {self.planned.order_id} v{self.planned.version} "
            f"({self.phase}): {outcome} after {self.seconds:.2f} s"
        )


@dataclass
class Plan:
    """Deliveries planned on demand, cycling through the orders so that several versions of
    each order are in flight at once (and therefore arrive out of order)."""

    versions: dict[int, int] = field(default_factory=dict)
    planned: list[Planned] = field(default_factory=list)
    _order_ids: Iterator[int] = field(
        default_factory=lambda: itertools.cycle(range(FIRST_ORDER_ID, FIRST_ORDER_ID + ORDERS))
    )

    def new_delivery(self) -> Planned:
        order_id = next(self._order_ids)
        version = self.versions.get(order_id, -1) + 1
        self.versions[order_id] = version
        topic = "orders/create" if version == 0 else UPDATE_TOPICS[version % len(UPDATE_TOPICS)]
        body, headers = delivery(topic, order_version(order_id, version), secret=STORE_SECRET)
        planned = Planned(headers["X-Shopify-Event-Id"], order_id, version, topic, body, headers)
        self.planned.append(planned)
        return planned


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    # The cluster is stopped and its directory removed however the test ends.
    with PostgresCluster() as running:
        yield running


async def prepare_database(cluster: PostgresCluster) -> str:
    """README's "Database roles" on the throwaway cluster, then `migrate` as the owner.

    Returns the owner's URL; settings_for() turns it into the app role's for the service."""
    admin = create_engine(cluster.admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            for statement in (
                f"CREATE ROLE {OWNER_ROLE} LOGIN",
                f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS",
                f"CREATE DATABASE {DATABASE} OWNER {OWNER_ROLE}",
            ):
                await connection.execute(text(statement))
    finally:
        await admin.dispose()
    owner_url = cluster.url(OWNER_ROLE, DATABASE)
    owner = create_engine(owner_url, isolation_level="AUTOCOMMIT")
    try:
        async with owner.connect() as connection:
            for grant in (
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}",
                f"GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}",
                f"GRANT EXECUTE ON FUNCTIONS TO {APP_ROLE}",
            ):
                await connection.execute(
                    text(f"ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public {grant}")
                )
    finally:
        await owner.dispose()
    await asyncio.to_thread(migrations.upgrade, owner_url)
    return owner_url


async def post(http: httpx.AsyncClient, url: str, planned: Planned, phase: str) -> Attempt:
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    outcome: str | None = None
    try:
        # httpx's timeout bounds each read, not the whole exchange; Shopify's limit is total.
        async with asyncio.timeout(SHOPIFY_TIMEOUT_SECONDS):
            response = await http.post(url, content=planned.body, headers=planned.headers)
        status, retry_after = response.status_code, response.headers.get("retry-after")
        if response.is_success:
            outcome = response.json().get("status")
    except (TimeoutError, httpx.TimeoutException):
        error = f"no answer within Shopify's {SHOPIFY_TIMEOUT_SECONDS:.0f} s"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - started
    return Attempt(planned, phase, status, error, seconds, retry_after, outcome)


def misbehaviour(attempts: list[Attempt]) -> list[str]:
    """Answers DESIGN.md does not allow for a delivery while the database restarts."""
    wrong: list[str] = []
    for attempt in attempts:
        if attempt.acknowledged:
            continue
        if attempt.status != 503:
            wrong.append(attempt.describe())
        elif not attempt.retry_after:
            wrong.append(f"{attempt.describe()} without Retry-After")
    return wrong


async def stored_events(engine: AsyncEngine) -> dict[str, tuple[int, set[str]]]:
    """Event id -> (rows, statuses), read as the owner, which row-level security does not bind."""
    async with engine.connect() as connection:
        rows = (await connection.execute(select(WebhookEvent.event_id, WebhookEvent.status))).all()
    counts = Counter(event_id for event_id, _ in rows)
    statuses: dict[str, set[str]] = {}
    for event_id, status in rows:
        statuses.setdefault(event_id, set()).add(status)
    return {event_id: (counts[event_id], statuses[event_id]) for event_id in counts}


@dataclass
class Stream:
    """What the senders saw while the database crashed and came back."""

    plan: Plan
    attempts: list[Attempt]
    crashed: bool
    acked_before_crash: int
    acked_after_restart: int
    timings: dict[str, float]

    def summary(self) -> str:
        outcomes = Counter((a.phase, str(a.status or a.error)) for a in self.attempts)
        return ", ".join(
            f"{phase} {outcome}: {n}" for (phase, outcome), n in sorted(outcomes.items())
        )


async def stream_through_crash(
    cluster: PostgresCluster, http: httpx.AsyncClient, url: str
) -> Stream:
    """SENDERS concurrent senders post new deliveries; after ACKS_BEFORE_CRASH are acknowledged
    the database crashes and restarts; they stop once ACKS_AFTER_RESTART deliveries sent after
    the restart are acknowledged, or at the deadline."""
    stream = Stream(Plan(), [], False, 0, 0, {})
    crash_now = asyncio.Event()
    restarting = asyncio.Event()
    restarted = asyncio.Event()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_DEADLINE_SECONDS

    def phase() -> str:
        if restarted.is_set():
            return "after restart"
        return "during restart" if restarting.is_set() else "before crash"

    async def sender() -> None:
        # The loop ends early only if the service recovers by itself: nothing restarts it.
        while stream.acked_after_restart < ACKS_AFTER_RESTART and loop.time() < deadline:
            sent_in = phase()
            attempt = await post(http, url, stream.plan.new_delivery(), sent_in)
            stream.attempts.append(attempt)
            if not attempt.acknowledged:
                continue
            if sent_in == "before crash":
                stream.acked_before_crash += 1
                if stream.acked_before_crash >= ACKS_BEFORE_CRASH:
                    crash_now.set()
            elif sent_in == "after restart":
                stream.acked_after_restart += 1

    async def restarter() -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await crash_now.wait()
        if not crash_now.is_set():
            return  # the assertions after the stream say why
        restarting.set()
        started = time.perf_counter()
        await asyncio.to_thread(cluster.crash)
        stream.crashed = True
        stream.timings["stop -m immediate"] = time.perf_counter() - started
        # pg_ctl start replays the WAL, then pg_isready confirms connections are accepted.
        await asyncio.to_thread(cluster.start)
        stream.timings["database down"] = time.perf_counter() - started
        restarted.set()

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(restarter())
        for _ in range(SENDERS):
            tasks.create_task(sender())
    stream.timings["stream"] = time.perf_counter() - started
    return stream


async def retry_until_accepted(
    http: httpx.AsyncClient, url: str, pending: list[Planned]
) -> tuple[list[Attempt], list[Planned]]:
    """Shopify's retries: the same bytes again until a 2xx; returns every retry and what is
    still not accepted after RETRY_ROUNDS rounds or the deadline."""
    retries: list[Attempt] = []
    semaphore = asyncio.Semaphore(SENDERS)

    async def retry(planned: Planned) -> Attempt:
        async with semaphore:
            return await post(http, url, planned, "retry")

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(RETRY_DEADLINE_SECONDS):
            for _ in range(RETRY_ROUNDS):
                if not pending:
                    break
                answered = await asyncio.gather(*(retry(planned) for planned in pending))
                retries.extend(answered)
                pending = [attempt.planned for attempt in answered if not attempt.acknowledged]
    return retries, pending


@dataclass
class Store:
    """The service on the throwaway cluster, and the owner's engine to read the evidence with
    (row-level security binds only the app's role)."""

    engine: AsyncEngine
    served: ServedApp
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def serving(cluster: PostgresCluster) -> AsyncIterator[Store]:
    owner_url = await prepare_database(cluster)
    engine = create_engine(owner_url)
    try:
        await create_tenant(create_session_factory(engine), webhook_secrets=[STORE_SECRET])
        settings = settings_for(owner_url, database_pool_size=SENDERS)
        assert f"//{APP_ROLE}@" in settings.database_url  # served as the app role, not the owner
        limits = httpx.Limits(max_connections=SENDERS * 2)
        with ServedApp(settings) as served:
            async with httpx.AsyncClient(timeout=SHOPIFY_TIMEOUT_SECONDS, limits=limits) as http:
                yield Store(engine, served, http)
    finally:
        await engine.dispose()


async def test_service_rides_out_a_database_crash_restart(cluster: PostgresCluster) -> None:
    began = time.perf_counter()
    async with serving(cluster) as store:
        engine, served, http = store.engine, store.served, store.http
        stream = await stream_through_crash(cluster, http, served.webhook_url)
        summary = stream.summary()
        assert stream.crashed, (
            f"only {stream.acked_before_crash} deliveries were acknowledged in "
            f"{STREAM_DEADLINE_SECONDS:.0f} s, so the database never crashed ({summary})"
        )
        wrong = misbehaviour(stream.attempts)
        assert not wrong, (
            f"{len(wrong)} of {len(stream.attempts)} deliveries got neither a 2xx nor a "
            f"503 with Retry-After within {SHOPIFY_TIMEOUT_SECONDS:.0f} s ({summary}):\n"
            + "\n".join(wrong[:20])
        )
        assert any(attempt.status == 503 for attempt in stream.attempts), (
            f"no delivery met the database while it was down: the crash tested nothing ({summary})"
        )
        assert stream.acked_after_restart >= ACKS_AFTER_RESTART, (
            f"the service did not recover by itself: {stream.acked_after_restart} "
            f"deliveries acknowledged after the database came back ({summary})"
        )
        readiness = await http.get(f"{served.base_url}/readyz")
        assert readiness.status_code == 200, readiness.text

        # Acknowledged means committed: no 2xx may be lost to the crash. The test's own
        # pool still holds connections the crash killed; it must not depend on the
        # engine settings under test to read the evidence, so it starts afresh.
        await engine.dispose()
        stored = await stored_events(engine)
        lost = [
            attempt.describe()
            for attempt in stream.attempts
            if attempt.acknowledged and attempt.planned.event_id not in stored
        ]
        assert not lost, (
            f"{len(lost)} acknowledged deliveries are missing from webhook_events "
            "after the crash:\n" + "\n".join(lost[:20])
        )

        unacknowledged = [a.planned for a in stream.attempts if not a.acknowledged]
        retry_started = time.perf_counter()
        retries, pending = await retry_until_accepted(http, served.webhook_url, unacknowledged)
        stream.timings["retries"] = time.perf_counter() - retry_started
        wrong = misbehaviour(retries)
        assert not wrong, "retries after the restart misbehaved:\n" + "\n".join(wrong[:20])
        assert not pending, f"{len(pending)} deliveries were still refused after retrying"

        # Exactly once: one row per planned event, nothing else, every one applied.
        stored = await stored_events(engine)
        expected = {planned.event_id for planned in stream.plan.planned}
        assert set(stored) == expected, (
            f"{len(expected - set(stored))} events missing, "
            f"{len(set(stored) - expected)} unexpected"
        )
        duplicated = {event_id: rows for event_id, (rows, _) in stored.items() if rows != 1}
        assert not duplicated, f"events stored more than once: {duplicated}"
        unprocessed = {event_id: s for event_id, (_, s) in stored.items() if s != {"processed"}}
        assert not unprocessed, f"events not processed: {unprocessed}"

        # Each order holds its newest version, however its versions arrived.
        async with engine.connect() as connection:
            orders = (
                await connection.execute(
                    select(Order.shopify_id, Order.shopify_updated_at, Order.total_price, Order.raw)
                )
            ).all()
        assert sorted(row.shopify_id for row in orders) == sorted(stream.plan.versions)
        for row in orders:
            newest = order_version(row.shopify_id, stream.plan.versions[row.shopify_id])
            assert row.shopify_updated_at.isoformat() == newest["updated_at"], row.shopify_id
            assert row.total_price == Decimal(newest["total_price"]), row.shopify_id
            assert row.raw["note"] == newest["note"], row.shopify_id

    # Shown with -s, and under "Captured stdout" when a later change breaks the test.
    # A retry answered "duplicate" had committed just before its 503: the crash cut the reply.
    committed_before_503 = sum(1 for attempt in retries if attempt.outcome == "duplicate")
    slowest = max(attempt.seconds for attempt in stream.attempts + retries)
    stream.timings["total"] = time.perf_counter() - began
    print(
        f"\n{len(stream.plan.planned)} deliveries, {len(unacknowledged)} refused at first, "
        f"{len(retries)} retries ({committed_before_503} had committed before their 503); "
        f"slowest answer {slowest:.2f} s; {summary}; "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stream.timings.items())
    )


async def test_first_deliveries_after_a_quiet_restart_are_accepted(
    cluster: PostgresCluster,
) -> None:
    """A restart while no webhook arrives leaves every pooled connection dead without the
    service noticing; the deliveries after it must not pay for that with a 503."""
    async with serving(cluster) as store:
        plan = Plan()
        url = store.served.webhook_url
        # Concurrent deliveries make the pool open several connections, all left idle in it.
        warm = [post(store.http, url, plan.new_delivery(), "before crash") for _ in range(SENDERS)]
        refused = [a.describe() for a in await asyncio.gather(*warm) if not a.acknowledged]
        assert not refused, "deliveries before the restart were refused:\n" + "\n".join(refused)
        async with store.engine.connect() as connection:
            pooled = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE usename = :role"),
                {"role": APP_ROLE},
            )
        assert pooled, "the service holds no connection, so the restart would test nothing"

        await asyncio.to_thread(cluster.crash)
        await asyncio.to_thread(cluster.start)

        after = [
            post(store.http, url, plan.new_delivery(), "after restart") for _ in range(SENDERS)
        ]
        refused = [a.describe() for a in await asyncio.gather(*after) if not a.acknowledged]
        assert not refused, (
            f"the pool handed out connections that died in the restart ({pooled} were pooled):\n"
            + "\n".join(refused)
        )
        await store.engine.dispose()  # its own pooled connections died in the restart too
        stored = await stored_events(store.engine)
        assert set(stored) == {planned.event_id for planned in plan.planned}
