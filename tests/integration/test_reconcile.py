"""Drift reconciliation against the Shopify simulator over real HTTP, on PostgreSQL (as the
service's own role, so row-level security checks every query's tenant scope) and SQLite.

Drift is made both ways: rows damaged in our database, and changes on Shopify's side whose
webhooks were lost. Success is judged on the database against the simulator's records, not on
the report's own account of itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.queries import RESOURCES
from backfill.reconcile import reconcile, reconcile_due_stores
from backfill.runner import TARGETS, BackfillEnvironment, create_sync_job, run_sync_job
from handlers.resources import reconciled_names
from models import (
    Customer,
    Order,
    Product,
    ReconcileRun,
    SecretBox,
    SyncJob,
    Tenant,
    create_engine,
    create_session_factory,
    utcnow,
)
from receiver.tenants import set_access_token
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, Fault, ManualClock
from tests.fakeshop import select as project
from tests.fakeshop.store import ORDER_ID_BASE, RESOURCE_NAMES
from tests.fakeshop.tokens import DEFAULT_SCOPE

SHOP = "reconcile-store.myshopify.com"
# What the simulator keeps as records of their own (inventory items are its variants').
STORE_RESOURCES = set(RESOURCE_NAMES)
BOX = SecretBox([TEST_ENCRYPTION_KEY])
# The simulator shows every order whatever the scope; saying so lets reconcile compare them all.
ALL_ORDERS = f"{DEFAULT_SCOPE},read_all_orders"
# Written by our own bookkeeping or by webhook-only topics (orders/edited, purchasing summaries).
NOT_COMPARED = {
    "id",
    "tenant_id",
    "synced_at",
    "source",
    "deleted_at",
    "edited_at",
    "purchasing_summary_at",
}


@dataclass
class Shop:
    store: FakeStore
    clock: ManualClock
    tenant_id: int
    env: BackfillEnvironment
    backend: Backend

    async def sync(self, mode: str = "full") -> SyncJob:
        async with self.backend.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, self.tenant_id)
            job = await create_sync_job(session, tenant, mode)
        await run_sync_job(self.env, job.id)
        async with self.backend.sessions() as session:
            return await session.get_one(SyncJob, job.id)

    async def reconcile(self, **options: Any) -> ReconcileRun:
        return await reconcile(self.env, self.tenant_id, **options)


@pytest.fixture
def store_options() -> dict[str, Any]:
    return {"customers": 120, "products": 80, "orders": 300, "scope": ALL_ORDERS}


@pytest.fixture
def simulator(store_options: dict[str, Any]) -> Iterator[tuple[FakeStore, ManualClock, str]]:
    # Virtual time for the simulator's bucket and the client's pacing, started at our real now
    # so that records changed on "Shopify" are newer than what we synced, as in life.
    clock = ManualClock(start=datetime.now(UTC))
    store = FakeStore(SHOP, seed=23, clock=clock, **store_options)
    with FakeShopServer(store) as server:
        yield store, clock, server.admin_base_url_template


async def service_sessions(backend: Backend) -> tuple[Any, async_sessionmaker[AsyncSession]]:
    """Sessions as the service connects: on PostgreSQL its own role, bound by row-level
    security, so a query that forgets use_tenant sees nothing and the test fails."""
    engine = create_engine(as_app_role(backend.url))
    return engine, create_session_factory(engine)


@pytest.fixture
async def shop(
    backend: Backend, simulator: tuple[FakeStore, ManualClock, str]
) -> AsyncIterator[Shop]:
    store, clock, base_url = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    engine, sessions = await service_sessions(backend)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            env = simulator_environment(sessions, http, base_url, store, clock)
            yield Shop(store, clock, tenant_id, env, backend)
    finally:
        await engine.dispose()


async def rows_of(backend: Backend, tenant_id: int) -> dict[str, dict[int, dict[str, Any]]]:
    """Every shop-data row of the store, every column, by resource and Shopify id."""
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    async with backend.sessions() as session:
        for name, (model, _) in TARGETS.items():
            found = await session.scalars(select(model).where(model.tenant_id == tenant_id))
            rows[name] = {
                row.shopify_id: {c.key: getattr(row, c.key) for c in model.__table__.columns}
                for row in found
            }
    return rows


async def assert_database_equals_store(shop: Shop) -> None:
    """Live rows are exactly Shopify's live records, each equal, column by column and in its
    raw payload, to the normaliser applied to the node the API returns; every other row we
    hold is a tombstone."""
    rows = await rows_of(shop.backend, shop.tenant_id)
    for name, (_, normalize) in TARGETS.items():
        if name not in STORE_RESOURCES:
            continue  # inventory items: compared with their levels in test_reconcile_children
        resource = shop.store.resource(name)
        # A backfill keeps the children it read in `raw`, a repair reads the record alone;
        # the children's own tables are compared in test_reconcile_children.
        children = {child.node_key for child in RESOURCES[name].children}
        expected = {}
        for index in range(resource.total):
            node = resource.node(index)
            if node is not None:
                record = normalize(project(node, RESOURCES[name].fields))
                expected[record["shopify_id"]] = record
        live = {sid for sid, row in rows[name].items() if row["deleted_at"] is None}
        assert live == set(expected), (name, live ^ set(expected))
        for shopify_id, record in expected.items():
            row = rows[name][shopify_id]
            for column, value in record.items():
                held = row[column]
                if column == "raw":
                    held = {key: part for key, part in held.items() if key not in children}
                assert held == value, (name, shopify_id, column, held, value)
            assert set(row) - set(record) <= NOT_COMPARED  # every column is compared
        for shopify_id in set(rows[name]) - set(expected):
            assert rows[name][shopify_id]["deleted_at"] is not None, (name, shopify_id)


def sid(store: FakeStore, resource: str, index: int) -> int:
    return store.resource(resource).numeric_id(index)


async def test_reconcile_finds_and_repairs_drift_on_both_sides(shop: Shop) -> None:
    store, tenant_id = shop.store, shop.tenant_id
    assert (await shop.sync()).status == "succeeded"
    await assert_database_equals_store(shop)
    first = await shop.reconcile()
    assert (first.status, first.error) == ("clean", None), first.report

    now = utcnow()
    ghost = ORDER_ID_BASE + 10_000_000  # an order Shopify never had
    async with shop.backend.sessions() as session, session.begin():
        # Rows lost from our database.
        await session.execute(
            delete(Order).where(
                Order.shopify_id.in_([sid(store, "orders", 5), sid(store, "orders", 6)])
            )
        )
        await session.execute(
            delete(Customer).where(Customer.shopify_id == sid(store, "customers", 7))
        )
        # Rows altered by hand, their updated_at set back, so they land in another window.
        await session.execute(
            update(Order)
            .where(Order.shopify_id == sid(store, "orders", 40))
            .values(
                total_price=Decimal("0.01"), shopify_updated_at=datetime(2020, 5, 1, tzinfo=UTC)
            )
        )
        await session.execute(
            update(Product)
            .where(Product.shopify_id == sid(store, "products", 12))
            .values(title="Tampered", shopify_updated_at=datetime(2020, 7, 1, tzinfo=UTC))
        )
        # An updated_at from the future: the order-safe upsert alone would never replace it.
        await session.execute(
            update(Product)
            .where(Product.shopify_id == sid(store, "products", 30))
            .values(title="From the future", shopify_updated_at=now + timedelta(days=365))
        )
        # A live row Shopify does not have, and a tombstone of a record Shopify still has.
        session.add(
            Order(
                tenant_id=tenant_id,
                shopify_id=ghost,
                name="#GHOST",
                shopify_updated_at=datetime(2023, 6, 1, tzinfo=UTC),
                source="webhook",
            )
        )
        await session.execute(
            update(Customer)
            .where(Customer.shopify_id == sid(store, "customers", 50))
            .values(deleted_at=now - timedelta(days=1))
        )
    # Changes on Shopify whose webhooks never arrived.
    shop.clock.advance(120)
    store.update_order(100, financial_status="refunded", total_price="1.00")
    store.update_customer(3, first_name="Grace")
    store.update_product(3, title="Renamed on Shopify")
    store.delete_order(150)
    store.delete_product(60)
    created = store.create_customer(email="lost-create@example.com")

    before = await rows_of(shop.backend, tenant_id)
    dry = await shop.reconcile(repair=False)
    assert dry.status == "drift", dry.report
    assert await rows_of(shop.backend, tenant_id) == before  # a dry run writes nothing
    assert set(dry.report) == {*reconciled_names(), "inventory_levels"}
    # Drift in each parent, and in the variants and inventory items of the deleted product.
    drifted = {"customers", "products", "orders", "product_variants", "inventory_items"}
    assert all(dry.report[name]["drifted_windows"] > 0 for name in drifted), dry.report
    assert dry.report["locations"]["drifted_windows"] == 0

    run = await shop.reconcile()
    assert (run.status, run.error) == ("repaired", None), run.report
    assert run.finished_at is not None
    await assert_database_equals_store(shop)
    rows = await rows_of(shop.backend, tenant_id)
    assert rows["orders"][ghost]["deleted_at"] is not None
    assert rows["orders"][sid(store, "orders", 150)]["deleted_at"] is not None
    assert rows["products"][sid(store, "products", 60)]["deleted_at"] is not None
    assert rows["customers"][sid(store, "customers", created)]["email"] == "lost-create@example.com"
    assert rows["customers"][sid(store, "customers", 50)]["deleted_at"] is None

    again = await shop.reconcile()
    assert (again.status, again.error) == ("clean", None), again.report
    async with shop.backend.sessions() as session:
        statuses = list(
            await session.scalars(select(ReconcileRun.status).order_by(ReconcileRun.id))
        )
    assert statuses == ["clean", "drift", "repaired", "clean"]


async def test_a_fresh_tombstone_is_left_for_the_next_run(shop: Shop) -> None:
    """A tombstone written moments ago may be a delete Shopify's reads do not show yet: it is
    not undone at once (the run says drift remains); once it is old, it is."""
    store = shop.store
    assert (await shop.sync()).status == "succeeded"
    customer = sid(store, "customers", 9)
    async with shop.backend.sessions() as session, session.begin():
        await session.execute(
            update(Customer).where(Customer.shopify_id == customer).values(deleted_at=utcnow())
        )
    run = await shop.reconcile(resources=["customers"])
    assert run.status == "drift", run.report
    assert run.report["customers"]["deferred"] >= 1
    rows = await rows_of(shop.backend, shop.tenant_id)
    assert rows["customers"][customer]["deleted_at"] is not None
    async with shop.backend.sessions() as session, session.begin():
        await session.execute(
            update(Customer)
            .where(Customer.shopify_id == customer)
            .values(deleted_at=utcnow() - timedelta(hours=1))
        )
    later = await shop.reconcile(resources=["customers"])
    assert later.status == "repaired", later.report
    await assert_database_equals_store(shop)


async def test_a_full_reconcile_repairs_a_field_changed_without_a_new_updated_at(
    shop: Shop,
) -> None:
    store = shop.store
    assert (await shop.sync()).status == "succeeded"
    order = sid(store, "orders", 77)
    async with shop.backend.sessions() as session, session.begin():
        await session.execute(
            update(Order).where(Order.shopify_id == order).values(total_price=Decimal("12345.67"))
        )
    # Counts and windows are unchanged: the documented blind spot of the count comparison.
    quick = await shop.reconcile(resources=["orders"])
    assert quick.status == "clean", quick.report
    assert (await rows_of(shop.backend, shop.tenant_id))["orders"][order]["total_price"] == Decimal(
        "12345.67"
    )
    full = await shop.reconcile(resources=["orders"], full=True)
    assert full.status == "repaired", full.report
    await assert_database_equals_store(shop)


@pytest.mark.parametrize("store_options", [{"customers": 5, "products": 5, "orders": 200}])
async def test_without_read_all_orders_only_recent_orders_are_compared(shop: Shop) -> None:
    """Shopify hides orders older than 60 days from apps without read_all_orders (null by id):
    reconcile must not take our older orders for deleted ones."""
    store, tenant_id = shop.store, shop.tenant_id
    assert (await shop.sync()).status == "succeeded"
    ghost = ORDER_ID_BASE + 20_000_000
    async with shop.backend.sessions() as session, session.begin():
        session.add(
            Order(
                tenant_id=tenant_id,
                shopify_id=ghost,
                name="#OLD",
                shopify_created_at=datetime(2023, 6, 1, tzinfo=UTC),
                shopify_updated_at=datetime(2023, 6, 1, tzinfo=UTC),
                source="webhook",
            )
        )
    shop.clock.advance(60)
    created = store.create_order(email="recent@example.com")  # its webhook was lost
    run = await shop.reconcile(resources=["orders"])
    assert run.status == "repaired", run.report
    assert run.report["orders"]["compared_since"] is not None
    rows = (await rows_of(shop.backend, tenant_id))["orders"]
    assert rows[ghost]["deleted_at"] is None  # out of sight, so left alone
    assert rows[sid(store, "orders", created)]["email"] == "recent@example.com"


@pytest.mark.parametrize(
    "store_options", [{"customers": 0, "products": 0, "orders": 4000, "scope": ALL_ORDERS}]
)
async def test_bisection_finds_a_handful_of_drifted_orders_with_few_requests(shop: Shop) -> None:
    store = shop.store
    assert (await shop.sync("bulk")).status == "succeeded"
    store.reset_stats()
    clean = await shop.reconcile(resources=["orders"])
    assert clean.status == "clean", clean.report
    clean_requests = store.stats.answered

    async with shop.backend.sessions() as session, session.begin():
        await session.execute(delete(Order).where(Order.shopify_id == sid(store, "orders", 1234)))
    shop.clock.advance(60)
    store.update_order(2500, financial_status="refunded")
    store.delete_order(3100)
    store.reset_stats()
    run = await shop.reconcile(resources=["orders"])
    assert run.status == "repaired", run.report
    await assert_database_equals_store(shop)
    requests, nodes = store.stats.answered, store.stats.nodes_returned
    # Measured: 3 requests when clean; 11 requests and 141 records for this drift. A full pull
    # alone is 25 pages of 166 orders.
    assert clean_requests <= 4
    assert requests <= 16
    assert nodes <= 3 * 250


async def test_shopify_errors_end_the_run_failed_not_raised(shop: Shop) -> None:
    assert (await shop.sync()).status == "succeeded"
    shop.store.inject(Fault.http(503, times=100))
    run = await shop.reconcile()
    assert run.status == "failed"
    assert "gave up after 8 attempts" in (run.error or "")
    assert run.finished_at is not None


async def test_unknown_store_and_resources_are_refused(shop: Shop) -> None:
    with pytest.raises(LookupError):
        await reconcile(shop.env, 999_999)
    with pytest.raises(ValueError, match="unknown resources"):
        await shop.reconcile(resources=["refunds"])
    with pytest.raises(ValueError, match="dry run"):
        await shop.reconcile(full=True, repair=False)


# -- periodic --


async def test_reconcile_due_stores_picks_active_synced_stores_not_reconciled_lately(
    backend: Backend,
) -> None:
    stores = {
        name: FakeStore(
            f"{name}.myshopify.com", seed=i, customers=5, products=5, orders=20, scope=ALL_ORDERS
        )
        for i, name in enumerate(["never", "long-ago", "recent", "unsynced", "gone", "bad-token"])
    }
    with FakeShopServer(list(stores.values())) as server:
        ids: dict[str, int] = {}
        async with backend.sessions() as session, session.begin():
            for name, store in stores.items():
                tenant = Tenant(
                    shop_domain=store.shop_domain,
                    status="uninstalled" if name == "gone" else "active",
                    credentials_status="invalid" if name == "bad-token" else "ok",
                )
                set_access_token(BOX, tenant, store.access_token)
                session.add(tenant)
                await session.flush()
                ids[name] = tenant.id
                if name != "unsynced":
                    session.add(
                        SyncJob(
                            tenant_id=tenant.id,
                            mode="full",
                            status="succeeded",
                            resources=list(RESOURCES),
                            progress={},
                            created_at=utcnow(),
                        )
                    )
            for name, age in (("long-ago", timedelta(days=2)), ("recent", timedelta(hours=1))):
                session.add(
                    ReconcileRun(
                        tenant_id=ids[name],
                        status="clean",
                        trigger="periodic",
                        report={},
                        started_at=utcnow() - age,
                        finished_at=utcnow() - age,
                    )
                )
        engine, sessions = await service_sessions(backend)
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                env = BackfillEnvironment(
                    sessions=sessions,
                    http=http,
                    box=BOX,
                    admin_base_url=server.admin_base_url_template,
                    api_version="2026-10",
                )
                done = await reconcile_due_stores(env, timedelta(days=1))
                assert done == [ids["never"], ids["long-ago"]]
                assert await reconcile_due_stores(env, timedelta(days=1)) == []
        finally:
            await engine.dispose()
    async with backend.sessions() as session:
        runs = (
            await session.execute(
                select(ReconcileRun.tenant_id, ReconcileRun.status, ReconcileRun.trigger).where(
                    ReconcileRun.started_at > utcnow() - timedelta(minutes=5)
                )
            )
        ).all()
    # Nothing was synced into these stores, so the comparison finds all of it missing.
    assert sorted(runs) == sorted(
        [(ids["never"], "repaired", "periodic"), (ids["long-ago"], "repaired", "periodic")]
    )
    async with backend.sessions() as session:
        pulled = await session.scalar(
            select(func.count()).select_from(Order).where(Order.tenant_id == ids["never"])
        )
    assert pulled == 20


# -- command line --


async def test_reconcile_command_reports_repairs_and_exit_codes(
    sqlite_url: str, tmp_path: Any
) -> None:
    # A Shopify Plus store's rate (1,000 points/s, 20,000 held): on real time, pages priced
    # with their children would otherwise wait for the bucket longer than a command is given.
    store = FakeStore(
        SHOP,
        seed=31,
        customers=30,
        products=20,
        orders=150,
        scope=ALL_ORDERS,
        restore_rate=1000.0,
        maximum_available=20000,
    )
    engine = create_engine(sqlite_url)
    backend = Backend("sqlite", sqlite_url, engine, create_session_factory(engine))
    await backend.truncate()
    try:
        with FakeShopServer(store) as server:
            async with backend.sessions() as session, session.begin():
                tenant = Tenant(shop_domain=SHOP, status="active")
                set_access_token(BOX, tenant, store.access_token)
                session.add(tenant)
            environment = {
                "PATH": os.environ.get("PATH", ""),
                "DATABASE_URL": sqlite_url,
                "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
                "SECRET_KEY": "cli-test",
                "SHOPIFY_ADMIN_BASE_URL": server.admin_base_url_template,
            }

            outputs: list[str] = []

            async def cli(*arguments: str) -> tuple[int, str]:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "receiver.cli", *arguments,
                    cwd=tmp_path, env=environment,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
                assert process.returncode is not None
                outputs.append(output.decode())
                return process.returncode, outputs[-1]

            code, output = await cli("backfill", SHOP)
            assert code == 0, output
            gone = sid(store, "orders", 42)
            async with backend.sessions() as session, session.begin():
                await session.execute(delete(Order).where(Order.shopify_id == gone))

            async def order_ids() -> set[int]:
                async with backend.sessions() as session:
                    return set(await session.scalars(select(Order.shopify_id)))

            code, output = await cli("reconcile", SHOP, "--dry-run", "--resources", "orders")
            assert code == 1, output
            assert "drift" in output
            assert "RESOURCE" in output
            assert "orders" in output
            assert gone not in await order_ids()

            code, output = await cli("reconcile", SHOP)
            assert code == 0, output
            assert "repaired" in output
            for header in ("SHOPIFY", "DB", "DRIFTED", "REPAIRED", "TOMBSTONED"):
                assert header in output
            assert gone in await order_ids()
            code, output = await cli("reconcile", SHOP)
            assert (code, "clean" in output) == (0, True), output

            code, output = await cli("reconcile", "nobody.myshopify.com")
            assert code != 0
            assert "unknown store nobody.myshopify.com" in output
            code, output = await cli("reconcile", SHOP, "--resources", "refunds")
            assert (code, "unknown resources refunds" in output) == (2, True), output

            store.revoke_token(store.access_token)
            code, output = await cli("reconcile", SHOP)
            assert code == 1, output
            assert "failed" in output
            assert "credentials" in output
            assert not [text for text in outputs if "Traceback" in text]
    finally:
        await engine.dispose()
