"""The backfill against the Shopify simulator over real HTTP, on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backfill.queries import ORDERS, RESOURCES
from backfill.queue import InProcessRunner
from backfill.runner import (
    TARGETS,
    BackfillEnvironment,
    create_sync_job,
    page_size_for,
    run_sync_job,
)
from handlers import normalize_order, upsert_records
from handlers.normalize import parse_shopify_id
from models import Customer, Order, SecretBox, SyncJob, Tenant
from receiver.samples import sample_payload
from receiver.tenants import set_access_token
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import RECORD_COLUMNS, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, Fault, ManualClock
from tests.fakeshop import select as project
from tests.fakeshop.children import children_of

SHOP = "backfill-store.myshopify.com"
BOX = SecretBox([TEST_ENCRYPTION_KEY])


@dataclass
class Shop:
    store: FakeStore
    clock: ManualClock
    server: FakeShopServer
    tenant_id: int
    env: BackfillEnvironment
    backend: Backend

    async def sync(
        self, mode: str = "full", resources: list[str] | None = None, **kw: Any
    ) -> SyncJob:
        async with self.backend.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, self.tenant_id)
            job = await create_sync_job(session, tenant, mode, resources)
        await run_sync_job(self.env, job.id, **kw)
        return await self.job(job.id)

    async def job(self, job_id: int) -> SyncJob:
        async with self.backend.sessions() as session:
            return await session.get_one(SyncJob, job_id)

    async def tenant(self) -> Tenant:
        async with self.backend.sessions() as session:
            return await session.get_one(Tenant, self.tenant_id)


@pytest.fixture
def store_options() -> dict[str, Any]:
    return {"customers": 300, "products": 120, "orders": 600}


@pytest.fixture
def simulator(store_options) -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    # Virtual time shared by the simulator's bucket and the client's pacing, started at our
    # real now so that records the store changes are newer than our last sync, as on Shopify.
    clock = ManualClock(start=datetime.now(UTC))
    store = FakeStore(SHOP, seed=11, clock=clock, **store_options)
    with FakeShopServer(store) as server:
        yield store, clock, server


@pytest.fixture
async def shop(backend, simulator) -> AsyncIterator[Shop]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    async with httpx.AsyncClient(timeout=10) as http:
        env = simulator_environment(
            backend.sessions,
            http,
            server.admin_base_url_template,
            store,
            clock,
            bulk_poll_interval=0.01,
        )
        yield Shop(store, clock, server, tenant_id, env, backend)


COMPARED = RECORD_COLUMNS


def node_of(store: FakeStore, resource: str, index: int) -> dict[str, Any] | None:
    return getattr(store, f"{resource[:-1]}_node")(index)


async def assert_database_equals_store(shop: Shop, samples: int = 25) -> None:
    """Same live record count per resource, and sampled records equal field by field."""
    store, backend = shop.store, shop.backend
    async with backend.sessions() as session:
        for resource, (model, normalize) in TARGETS.items():
            if resource not in store.counts:
                continue  # inventory items, one per variant: test_backfill_children.py
            live = await session.scalar(
                select(func.count()).select_from(model).where(model.deleted_at.is_(None))
            )
            assert live == store.counts[resource], resource
            total = store.counts[resource]
            step = max(1, total // samples)
            for index in [*range(0, total, step), total - 1]:
                node = node_of(store, resource, index)
                assert node is not None
                row = await session.scalar(
                    select(model).where(model.shopify_id == parse_shopify_id(node["id"]))
                )
                assert row is not None, f"{resource} {index} missing"
                expected = normalize(project(node, RESOURCES[resource].fields))
                for column in COMPARED[resource]:
                    assert getattr(row, column) == expected[column], (resource, index, column)
                assert row.shopify_updated_at == expected["shopify_updated_at"]
            if resource == "orders":
                node = node_of(store, "orders", 0)
                row = await session.scalar(
                    select(Order).where(Order.shopify_id == parse_shopify_id(node["id"]))
                )
                assert row.name == node["name"]
                assert row.total_price == Decimal(node["totalPriceSet"]["shopMoney"]["amount"])


# Bulk takes the large store; a page backfill with children asks a few orders per page (their
# children priced in), so it copies a smaller one in the same time.
@pytest.mark.parametrize(
    ("mode", "store_options"),
    [
        ("full", {"customers": 600, "products": 160, "orders": 1500}),
        ("bulk", {"customers": 1500, "products": 400, "orders": 5000}),
    ],
)
async def test_backfill_copies_a_whole_store_exactly(shop, mode, store_options):
    job = await shop.sync(mode)
    assert (job.status, job.error) == ("succeeded", None)
    assert job.progress["orders"]["count"] == store_options["orders"]
    assert job.progress["orders"]["total"] == store_options["orders"]
    await assert_database_equals_store(shop)


async def test_incremental_pulls_only_what_changed_since_the_last_sync(shop):
    first = await shop.sync("full")
    assert first.status == "succeeded"
    shop.clock.advance(60)
    shop.store.update_order(7, financial_status="refunded", total_price="1.23")
    shop.store.update_customer(3, first_name="Grace")
    product = shop.store.create_product(title="Brand new")
    second = await shop.sync("incremental")
    assert second.status == "succeeded"
    assert second.since is not None
    pulled = {name: state["count"] for name, state in second.progress.items()}
    # The new product's variants each came with a new inventory item.
    items = len(children_of(shop.store.product_node(product), "variants"))
    assert items >= 1
    assert pulled == {
        "customers": 1, "products": 1, "orders": 1, "locations": 0, "inventory_items": items
    }  # fmt: skip
    await assert_database_equals_store(shop)


async def test_a_cancelled_job_resumes_from_its_checkpoint(shop):
    pages = math.ceil(600 / page_size_for(ORDERS))
    shop.store.reset_stats()
    # Order pages asked for (an order with more children than a page holds gets the rest by
    # its id: other requests).
    order_pages: list[int] = []
    shop.store.on_request(
        lambda request: order_pages.append(1) if request.page_of("orders") else None
    )
    async with shop.backend.sessions() as session, session.begin():
        job = await create_sync_job(
            session, await session.get_one(Tenant, shop.tenant_id), "full", ["orders"]
        )
    task: asyncio.Task[str] | None = None

    def stop_after_two_pages(resource: str, state: dict[str, Any]) -> None:
        if state["pages"] == 2 and task is not None:
            task.cancel()

    task = asyncio.create_task(run_sync_job(shop.env, job.id, on_progress=stop_after_two_pages))
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = await shop.job(job.id)
    assert interrupted.status == "queued"
    assert interrupted.progress["orders"]["pages"] == 2
    assert await run_sync_job(shop.env, job.id) == "succeeded"
    finished = await shop.job(job.id)
    assert finished.progress["orders"]["count"] == 600
    assert finished.attempts == 2
    # Every page once, and at most the one page in flight at the cancel.
    assert len(order_pages) <= pages + 1
    async with shop.backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 600


async def test_an_idle_in_process_runner_has_no_job_left_and_each_is_queued_again(shop):
    """What the suite relies on between tests: after `idle()` nothing of a job runs or writes
    any more, and the job waits in the queue with its checkpoint for a later run."""
    waiting, released = asyncio.Event(), asyncio.Event()
    virtual_sleep = shop.env.client_options["sleep"]

    async def sleep_until_cancelled(seconds: float) -> None:
        if released.is_set():
            await virtual_sleep(seconds)
            return
        waiting.set()
        await asyncio.Event().wait()

    env = replace(
        shop.env, client_options={**shop.env.client_options, "sleep": sleep_until_cancelled}
    )
    # Throttled answers make the client wait (in the sleep above) until it is cancelled.
    shop.store.inject(Fault.throttled(times=100))
    async with shop.backend.sessions() as session, session.begin():
        job = await create_sync_job(
            session, await session.get_one(Tenant, shop.tenant_id), "full", ["orders"]
        )
    runner = InProcessRunner(env)
    await runner.enqueue(job.id)
    await waiting.wait()
    assert (await shop.job(job.id)).status == "running"
    await runner.idle()
    assert runner.tasks == {}
    assert (await shop.job(job.id)).status == "queued"
    # The runner still takes jobs after being idle.
    shop.store.faults.clear()
    released.set()
    await runner.enqueue(job.id)
    # drain() waits for the job to end on its own, without cancelling it.
    await runner.drain()
    assert runner.tasks == {}
    assert (await shop.job(job.id)).status == "succeeded"


@pytest.mark.parametrize("store_options", [{"customers": 0, "products": 0, "orders": 2000}])
async def test_a_tight_bucket_is_used_fully_and_rarely_throttles(shop):
    shop.store.configure_throttle(maximum_available=1000, restore_rate=50)
    started = shop.clock.monotonic()
    job = await shop.sync("full", ["orders"])
    assert job.status == "succeeded"
    stats = shop.store.stats
    assert stats.throttled <= 3
    elapsed = shop.clock.monotonic() - started
    # Points the bucket could give in that time (its start plus the refill), and our share.
    available = 1000 + 50 * elapsed
    assert stats.points_requested / available > 0.9


@pytest.mark.parametrize(
    "fault",
    [
        Fault.rate_limited(3),
        Fault.http(500),
        Fault.http(502, times=2),
        Fault.http(503, times=3),
        Fault.slow(0.3),
        Fault.drop(),
        Fault.drop_mid_body(),
        Fault.throttled(times=2),
    ],
    ids=lambda fault: f"{fault.kind}-{fault.status or ''}-{fault.times}",
)
async def test_transient_faults_are_retried_and_the_job_completes(shop, fault):
    shop.store.inject(fault)
    job = await shop.sync("full", ["orders"])
    assert (job.status, job.error) == ("succeeded", None)
    assert sum(shop.store.stats.faults.values()) >= 1
    await assert_orders_complete(shop)


async def assert_orders_complete(shop: Shop) -> None:
    async with shop.backend.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(Order))
    assert count == shop.store.counts["orders"]


async def test_a_persistent_outage_fails_with_a_clear_message(shop):
    shop.store.inject(Fault.http(503, times=100))
    job = await shop.sync("full", ["orders"])
    assert job.status == "failed"
    assert "gave up after 8 attempts" in job.error
    assert "HTTP 503" in job.error


async def test_a_revoked_token_without_refresh_marks_the_credentials_invalid(shop):
    shop.store.inject(Fault.revoke_token())
    job = await shop.sync("full", ["orders"])
    assert job.status == "failed"
    assert "credentials" in job.error
    tenant = await shop.tenant()
    assert tenant.credentials_status == "invalid"
    assert "no refresh token" in tenant.credentials_error
    # The next job refuses at once, saying what to do.
    again = await shop.sync("full", ["orders"])
    assert again.status == "failed"
    assert "tenants add" in again.error


async def test_an_expiring_token_is_refreshed_and_stored_encrypted(shop):
    grant = shop.store.issue_expiring_token(expires_in=3600)
    async with shop.backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, shop.tenant_id)
        set_access_token(BOX, tenant, grant["access_token"])
        tenant.refresh_token_encrypted = BOX.encrypt(grant["refresh_token"])
    shop.store.inject(Fault.expire_token())
    job = await shop.sync("full", ["orders"])
    assert (job.status, job.error) == ("succeeded", None)
    assert shop.store.stats.token_refreshes == 1
    tenant = await shop.tenant()
    new_token = BOX.decrypt(tenant.access_token_encrypted)
    assert new_token != grant["access_token"]
    assert new_token not in tenant.access_token_encrypted
    assert tenant.access_token_expires_at is not None
    assert tenant.credentials_status == "ok"


async def test_a_token_about_to_expire_is_refreshed_before_use(shop):
    grant = shop.store.issue_expiring_token(expires_in=3600)
    async with shop.backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, shop.tenant_id)
        set_access_token(BOX, tenant, grant["access_token"])
        tenant.refresh_token_encrypted = BOX.encrypt(grant["refresh_token"])
        tenant.access_token_expires_at = datetime.now(UTC) + timedelta(seconds=30)
    job = await shop.sync("full", ["products"])
    assert job.status == "succeeded"
    assert shop.store.stats.token_refreshes == 1
    assert shop.store.stats.unauthorized == 0


async def test_a_failed_bulk_operation_fails_the_job_clearly(shop):
    shop.store.bulk.fail_next("INTERNAL_SERVER_ERROR")
    job = await shop.sync("bulk", ["orders"])
    assert job.status == "failed"
    assert "FAILED" in job.error
    assert "INTERNAL_SERVER_ERROR" in job.error


async def test_a_webhook_newer_than_the_backfill_page_wins(shop):
    """Shopify's webhook beats the backfill to an order: the older page must not undo it."""
    last = shop.store.counts["orders"] - 1
    node = node_of(shop.store, "orders", last)
    webhook = sample_payload("orders/updated") | {
        "id": parse_shopify_id(node["id"]),
        "admin_graphql_api_id": node["id"],
        "name": "#WEBHOOK",
        "updated_at": datetime.now(UTC).isoformat(),
        "total_price": "999.99",
    }
    early = node_of(shop.store, "orders", 3)
    during = sample_payload("orders/updated") | {
        "id": parse_shopify_id(early["id"]),
        "name": "#DURING",
        "updated_at": datetime.now(UTC).isoformat(),
    }
    async with shop.backend.sessions() as session, session.begin():
        await upsert_records(
            session, Order, shop.tenant_id, [normalize_order(webhook)], source="webhook"
        )
    sent_during = False

    def webhook_mid_run(resource: str, state: dict[str, Any]) -> None:
        nonlocal sent_during
        if resource == "orders" and state["pages"] == 1 and not sent_during:
            sent_during = True
            loop_tasks.append(asyncio.ensure_future(deliver(during)))

    async def deliver(payload: dict[str, Any]) -> None:
        async with shop.backend.sessions() as session, session.begin():
            await upsert_records(
                session, Order, shop.tenant_id, [normalize_order(payload)], source="webhook"
            )

    loop_tasks: list[asyncio.Future[None]] = []
    job = await shop.sync("full", ["orders"], on_progress=webhook_mid_run)
    await asyncio.gather(*loop_tasks)
    assert job.status == "succeeded"
    async with shop.backend.sessions() as session:
        rows = {
            row.shopify_id: row
            for row in await session.scalars(
                select(Order).where(Order.shopify_id.in_([webhook["id"], during["id"]]))
            )
        }
    assert rows[webhook["id"]].name == "#WEBHOOK"
    assert rows[webhook["id"]].total_price == Decimal("999.99")
    assert rows[webhook["id"]].source == "webhook"
    assert rows[during["id"]].name == "#DURING"


# Several pages of orders with their children, all these tests need (a job run to its end, its
# progress shown); more only add pages, which the real-time bucket paces once it runs low.
LIVE_ORDERS = 150


@pytest.fixture
def live_simulator() -> Iterator[tuple[FakeStore, FakeShopServer]]:
    """A store on the system clock, for code that paces itself in real time, with Shopify
    Plus's bucket (20,000 points, 1,000 a second): with their children orders cost about a
    thousand points per page, which a Standard bucket refills in ten seconds."""
    store = FakeStore(
        SHOP,
        seed=5,
        customers=40,
        products=30,
        orders=LIVE_ORDERS,
        maximum_available=20_000,
        restore_rate=1_000,
    )
    with FakeShopServer(store) as server:
        yield store, server


async def _tenant_with_token(backend: Backend, store: FakeStore) -> int:
    async with backend.sessions() as session, session.begin():
        tenant = Tenant(shop_domain=SHOP, status="active")
        set_access_token(BOX, tenant, store.access_token)
        session.add(tenant)
        await session.flush()
        return tenant.id


async def _admin_token(backend: Backend) -> str:
    from receiver.auth import create_api_token

    async with backend.sessions() as session, session.begin():
        return await create_api_token(session, "backfill-tests")


async def _wait_until_finished(http: httpx.AsyncClient, url: str, token: str) -> dict[str, Any]:
    """Poll the status URL, as a client of the API would, until the job ends (bounded)."""
    # Bounded at a few minutes: orders come a few per page with their children.
    for _ in range(4000):
        document = (await http.get(url, headers={"Authorization": f"Bearer {token}"})).json()
        if document["status"] in {"succeeded", "failed", "cancelled"}:
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"job did not finish: {document}")


async def test_api_sync_runs_in_process_on_sqlite(sqlite_url, live_simulator, http):
    from tests.conftest import ServedApp, settings_for

    store, server = live_simulator
    engine_backend = Backend("sqlite", sqlite_url, *_engine_and_sessions(sqlite_url))
    await engine_backend.truncate()
    try:
        await _tenant_with_token(engine_backend, store)
        token = await _admin_token(engine_backend)
        settings = settings_for(sqlite_url, admin_base_url=server.admin_base_url_template)
        with ServedApp(settings) as app:
            response = await http.post(
                f"{app.base_url}/api/sync",
                json={"shop": SHOP, "mode": "full"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 202
            status_url = app.base_url + response.json()["status_url"]  # relative
            document = await _wait_until_finished(http, status_url, token)
        assert (document["status"], document["error"]) == ("succeeded", None)
        assert document["progress"]["orders"]["count"] == LIVE_ORDERS
        async with engine_backend.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == LIVE_ORDERS
    finally:
        await engine_backend.engine.dispose()


def _engine_and_sessions(url: str) -> tuple[Any, Any]:
    from models import create_engine, create_session_factory

    engine = create_engine(url)
    return engine, create_session_factory(engine)


async def test_queued_job_is_run_by_a_worker_on_postgresql(pg, live_simulator, http):
    from backfill.queue import procrastinate_app, run_worker
    from tests.conftest import ServedApp, settings_for

    store, server = live_simulator
    await _tenant_with_token(pg, store)
    token = await _admin_token(pg)
    settings = settings_for(pg.url, admin_base_url=server.admin_base_url_template)
    with ServedApp(settings) as app:
        response = await http.post(
            f"{app.base_url}/api/sync",
            json={"shop": SHOP, "resources": ["orders", "products"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 202
        job_id = response.json()["job_id"]
        assert (await pg_job(pg, job_id)).status == "queued"
        queue = procrastinate_app(pg.url)
        env = BackfillEnvironment(
            sessions=pg.sessions,
            http=http,
            box=BOX,
            admin_base_url=server.admin_base_url_template,
            api_version="2026-10",
        )
        async with queue.open_async():
            await run_worker(queue, env, concurrency=1, wait=False)
    job = await pg_job(pg, job_id)
    assert (job.status, job.error) == ("succeeded", None)
    assert job.progress["orders"]["count"] == LIVE_ORDERS
    assert job.progress["products"]["count"] == 30


async def pg_job(backend: Backend, job_id: int) -> SyncJob:
    async with backend.sessions() as session:
        return await session.get_one(SyncJob, job_id)


async def test_backfill_command_shows_progress_and_fills_the_database(
    sqlite_url, live_simulator, tmp_path
):
    store, server = live_simulator
    backend = Backend("sqlite", sqlite_url, *_engine_and_sessions(sqlite_url))
    await backend.truncate()
    try:
        await _tenant_with_token(backend, store)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "DATABASE_URL": sqlite_url,
            "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "SECRET_KEY": "cli-test",
            "SHOPIFY_ADMIN_BASE_URL": server.admin_base_url_template,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "receiver.cli",
            "backfill",
            SHOP,
            "--resources",
            "orders,customers",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
        output = stdout.decode() + stderr.decode()
        assert process.returncode == 0, output
        assert "succeeded" in output
        assert "records/s" in output
        assert f"{LIVE_ORDERS} / {LIVE_ORDERS}" in output
        assert "100%" in output
        async with backend.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == LIVE_ORDERS
            assert await session.scalar(select(func.count()).select_from(Customer)) == 40
    finally:
        await backend.engine.dispose()


async def _poll(condition: Any, what: str, limit: float = 60.0) -> None:
    """Wait for a state another process produces, checking it every 50 ms (bounded)."""
    deadline = asyncio.get_running_loop().time() + limit
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_killed_worker_s_job_is_resumed_by_another_worker(pg, tmp_path):
    import signal

    from backfill.queue import ProcrastinateQueue, procrastinate_app

    store = FakeStore(SHOP, seed=9, customers=0, products=0, orders=600, throttle=False)
    order_pages: list[int] = []
    store.on_request(lambda request: order_pages.append(1) if request.page_of("orders") else None)
    # Slow pages, so the kill lands mid-run.
    store.inject(Fault.slow(0.15, times=10_000))
    with FakeShopServer(store) as server:
        await _tenant_with_token(pg, store)
        async with pg.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, 1)
            job = await create_sync_job(session, tenant, "full", ["orders"])
        queue = ProcrastinateQueue(procrastinate_app(pg.url))
        await queue.enqueue(job.id)
        await queue.close()
        env = {
            "PATH": os.environ.get("PATH", ""),
            # The service's own role: `worker` refuses one that bypasses row-level security.
            "DATABASE_URL": as_app_role(pg.url),
            "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "SECRET_KEY": "worker-test",
            "SHOPIFY_ADMIN_BASE_URL": server.admin_base_url_template,
            "BACKFILL_LEASE_SECONDS": "2",
            # Only the job: a periodic reconcile would add its own requests to the count below.
            "PERIODIC_CHECKS": "off",
        }

        async def start_worker() -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "receiver.cli", "worker", "--concurrency", "1",
                cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip

        async def pages_done() -> int:
            current = await pg_job(pg, job.id)
            return int((current.progress.get("orders") or {}).get("pages", 0))

        first = await start_worker()
        try:
            await _poll(lambda: _at_least(pages_done, 3), "the first worker to fetch 3 pages")
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        # The slow pages were for the kill to land mid-run; the second worker needs none.
        store.faults.clear()
        stranded = await pg_job(pg, job.id)
        assert stranded.status == "running"
        pages_before_kill = await pages_done()

        async def lease_expired() -> bool:
            current = await pg_job(pg, job.id)
            return current.heartbeat_at < datetime.now(UTC) - timedelta(seconds=2)

        await _poll(lease_expired, "the dead worker's lease to expire")
        second = await start_worker()
        try:

            async def finished() -> bool:
                return (await pg_job(pg, job.id)).status in {"succeeded", "failed"}

            await _poll(finished, "the second worker to finish the job", limit=120)
        finally:
            second.terminate()
            await second.wait()
    done = await pg_job(pg, job.id)
    assert (done.status, done.error) == ("succeeded", None)
    assert done.attempts == 2
    assert pages_before_kill < done.progress["orders"]["pages"]
    async with pg.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 600
    pages = math.ceil(600 / page_size_for(ORDERS))
    # Every page once, at most the one in flight at the kill twice (by-id reads aside).
    assert len(order_pages) <= pages + 1


async def _at_least(read: Any, minimum: int) -> bool:
    return await read() >= minimum


async def test_two_workers_handed_the_same_job_never_both_run_it(shop):
    async with shop.backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, shop.tenant_id)
        job = await create_sync_job(session, tenant, "full", ["orders"])
    shop.store.reset_stats()
    order_pages: list[str] = []
    shop.store.on_request(
        lambda request: (
            order_pages.append(request.body["data"]["orders"]["pageInfo"]["endCursor"])
            if request.page_of("orders")
            else None
        )
    )
    outcomes = await asyncio.gather(run_sync_job(shop.env, job.id), run_sync_job(shop.env, job.id))
    assert sorted(outcomes) == ["skipped", "succeeded"]
    pages = math.ceil(shop.store.counts["orders"] / page_size_for(ORDERS))
    # Each page once (by-id reads of long child lists aside), by one worker.
    assert len(order_pages) == pages
    assert len(set(order_pages)) == pages
    assert (await shop.job(job.id)).attempts == 1
