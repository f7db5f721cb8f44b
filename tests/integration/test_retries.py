"""Failed events retry themselves on a backoff schedule and end `dead` after the last
attempt. The failure is real: a database trigger refuses one order's row until the test
"fixes" the store by dropping it. Time is the sweep's `now`, never a sleep."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.maintenance import Maintenance, MaintenanceLoop
from backfill.queue import QUEUE, RETRY_EVENTS, procrastinate_app, run_worker
from backfill.retries import retry_due_events
from backfill.runner import BackfillEnvironment
from handlers.retries import BACKOFF, JITTER
from models import Order, WebhookEvent, create_engine, create_session_factory, utcnow
from models.encryption import SecretBox
from receiver.samples import sample_payload
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import create_tenant
from tests.integration.test_cli import Cli, cli_env
from tests.integration.test_compliance import post
from tests.integration.test_logs import Lines

REFUSED_ORDER = 777
EMAIL = "russell.winfield@example.com"


def refused_order(order_id: int = REFUSED_ORDER) -> dict:
    return sample_payload("orders/create") | {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
    }


class Refusal:
    """A trigger that makes the database refuse writes of the order REFUSED_ORDER."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def install(self) -> None:
        async with self.backend.engine.begin() as connection:
            if self.backend.name == "postgresql":
                await connection.execute(
                    text(
                        "CREATE OR REPLACE FUNCTION refuse_order() RETURNS trigger AS $$ "
                        "BEGIN RAISE EXCEPTION 'order refused by the test'; END $$ "
                        "LANGUAGE plpgsql"
                    )
                )
                await connection.execute(
                    text(
                        "CREATE TRIGGER refuse_order BEFORE INSERT OR UPDATE ON orders "
                        f"FOR EACH ROW WHEN (NEW.shopify_id = {REFUSED_ORDER}) "
                        "EXECUTE FUNCTION refuse_order()"
                    )
                )
            else:
                await connection.execute(
                    text(
                        "CREATE TRIGGER refuse_order BEFORE INSERT ON orders "
                        f"WHEN NEW.shopify_id = {REFUSED_ORDER} "
                        "BEGIN SELECT RAISE(ABORT, 'order refused by the test'); END"
                    )
                )

    async def remove(self) -> None:
        async with self.backend.engine.begin() as connection:
            if self.backend.name == "postgresql":
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_order ON orders"))
            else:
                await connection.execute(text("DROP TRIGGER IF EXISTS refuse_order"))


@pytest.fixture
async def refusal(backend: Backend) -> AsyncIterator[Refusal]:
    refusal = Refusal(backend)
    await refusal.install()
    try:
        yield refusal
    finally:
        await refusal.remove()


@pytest.fixture
async def app_sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The sweep as the service's role: row-level security applies on PostgreSQL."""
    engine = create_engine(as_app_role(backend.url))
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def stored(backend: Backend, event_id: int) -> WebhookEvent:
    async with backend.sessions() as session:
        return await session.get_one(WebhookEvent, event_id)


def within_backoff(event: WebhookEvent, since: datetime, step: int) -> bool:
    assert event.next_attempt_at is not None
    wait = event.next_attempt_at - since
    return BACKOFF[step] <= wait <= BACKOFF[step] * (1 + JITTER)


async def failed_delivery(backend, served, http) -> int:
    await create_tenant(backend.sessions)
    body = refused_order()
    response_status = await post(http, served, "orders/create", body)
    assert response_status == "failed"
    async with backend.sessions() as session:
        event_id = await session.scalar(select(WebhookEvent.id))
    assert event_id is not None
    return event_id


async def test_a_failed_event_retries_on_schedule_and_ends_processed(
    backend, served, http, refusal, app_sessions
):
    event_id = await failed_delivery(backend, served, http)
    first = await stored(backend, event_id)
    assert (first.status, first.attempts) == ("failed", 1)
    assert within_backoff(first, first.received_at, 0)  # about a minute after delivery
    due = first.next_attempt_at
    assert due is not None

    # Not due yet: nothing is applied.
    assert await retry_due_events(app_sessions, now=due - timedelta(seconds=1)) == []
    [second] = await retry_due_events(app_sessions, now=due)
    assert (second.event_id, second.status, second.attempts) == (event_id, "failed", 2)
    after_second = await stored(backend, event_id)
    assert within_backoff(after_second, due, 1)  # about five minutes on
    assert after_second.error is not None

    await refusal.remove()  # the fix is deployed
    assert after_second.next_attempt_at is not None
    [third] = await retry_due_events(app_sessions, now=after_second.next_attempt_at)
    assert (third.status, third.attempts) == ("processed", 3)
    final = await stored(backend, event_id)
    assert (final.status, final.error, final.next_attempt_at) == ("processed", None, None)
    async with backend.sessions() as session:
        order = await session.scalar(select(Order).where(Order.shopify_id == REFUSED_ORDER))
    assert order is not None


async def test_an_event_that_always_fails_ends_dead_and_a_hand_replay_still_works(
    backend, served, http, refusal, app_sessions, tmp_path
):
    event_id = await failed_delivery(backend, served, http)
    lines = Lines()
    logger = logging.getLogger("shopify_receiver")
    logger.addHandler(lines)
    try:
        for attempt in (2, 3):
            due = (await stored(backend, event_id)).next_attempt_at
            assert due is not None
            [outcome] = await retry_due_events(app_sessions, max_attempts=3, now=due)
            assert outcome.attempts == attempt
    finally:
        logger.removeHandler(lines)
    dead = await stored(backend, event_id)
    assert (dead.status, dead.attempts, dead.next_attempt_at) == ("dead", 3, None)
    # Never again on its own, however long we wait.
    later = datetime.max.replace(tzinfo=dead.received_at.tzinfo) - timedelta(days=1)
    assert await retry_due_events(app_sessions, max_attempts=3, now=later) == []
    [warning] = [line for line in lines.lines if line["message"].startswith("webhook.dead")]
    assert warning["level"].upper() == "WARNING"
    assert EMAIL not in json.dumps(lines.lines)

    cli = Cli(tmp_path, cli_env(backend.url))
    listed = await cli.ok("events", "list", "--status", "dead")
    assert f"{event_id:>6}" in listed.stdout
    await refusal.remove()
    replay = await cli.ok("events", "replay", "--id", str(event_id))
    assert "processed" in replay.stdout
    replayed = await stored(backend, event_id)
    assert (replayed.status, replayed.next_attempt_at) == ("processed", None)


@pytest.mark.parametrize("backend_session", ["postgresql"], indirect=True)
async def test_two_concurrent_sweeps_apply_each_event_once(
    backend, served, http, refusal, app_sessions
):
    await create_tenant(backend.sessions)
    order_ids = [REFUSED_ORDER, *range(5001, 5013)]
    await refusal.remove()
    # Stored failed by a refusal of every order, then all due at once.
    async with backend.engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse_order() RETURNS trigger AS $$ "
                "BEGIN RAISE EXCEPTION 'order refused by the test'; END $$ LANGUAGE plpgsql"
            )
        )
        await connection.execute(
            text(
                "CREATE TRIGGER refuse_order BEFORE INSERT ON orders "
                "FOR EACH ROW EXECUTE FUNCTION refuse_order()"
            )
        )
    for order_id in order_ids:
        assert await post(http, served, "orders/create", refused_order(order_id)) == "failed"
    await refusal.remove()
    async with backend.sessions() as session:
        due = max(await session.scalars(select(WebhookEvent.next_attempt_at)))
    assert due is not None

    sweeps = await asyncio.gather(
        retry_due_events(app_sessions, now=due), retry_due_events(app_sessions, now=due)
    )
    applied = [outcome.event_id for sweep in sweeps for outcome in sweep]
    assert len(applied) == len(set(applied)) == len(order_ids)
    async with backend.sessions() as session:
        events = list(await session.scalars(select(WebhookEvent)))
    assert {(event.status, event.attempts) for event in events} == {("processed", 2)}


async def test_the_scheduler_of_each_backend_runs_the_retry_sweep(
    backend, served, http, refusal, app_sessions
):
    """SQLite: `serve`'s maintenance loop; PostgreSQL: the worker's periodic task."""
    event_id = await failed_delivery(backend, served, http)
    await refusal.remove()
    async with backend.sessions() as session, session.begin():
        # Due now: the first attempt was a while ago.
        await session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.id == event_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
    maintenance = Maintenance(None, timedelta(days=1), timedelta(days=1))
    async with httpx.AsyncClient() as client:
        env = BackfillEnvironment(
            sessions=app_sessions,
            http=client,
            box=SecretBox([TEST_ENCRYPTION_KEY]),
            admin_base_url="http://127.0.0.1:9/{shop}",
            api_version="2026-10",
        )
        if backend.name == "sqlite":
            await MaintenanceLoop(env, maintenance).tick()
        else:
            queue = procrastinate_app(backend.url)
            async with queue.open_async():
                await queue.configure_task(RETRY_EVENTS, queue=QUEUE).defer_async(timestamp=0)
                await run_worker(queue, env, concurrency=1, wait=False, maintenance=maintenance)
    event = await stored(backend, event_id)
    assert (event.status, event.attempts, event.next_attempt_at) == ("processed", 2, None)
