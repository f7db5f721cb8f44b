"""A reconcile reads each page's rows by their ids, not the store's rows for every page.

A reconcile most often follows a backfill: the store's rows are new, and PostgreSQL's
statistics may predate them (autovacuum analyses a table once it has grown a tenth). Compared
with the store's value, such a store counts as holding no rows, every index that starts with
the store costs the same, and a page's lookup of 250 ids could read the store's every row
through its (store, updated) index (`models.tenancy.of_store`, `store_row`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from backfill.reconcile import reconcile
from backfill.runner import create_sync_job, run_sync_job
from models import SyncJob, Tenant, create_engine
from tests.conftest import Backend, as_app_role
from tests.factories import OTHER_SHOP, create_tenant, rows_read, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.tokens import DEFAULT_SCOPE

SHOP = "reconcile-reads.myshopify.com"
ORDERS = 3_000


@pytest.fixture
async def app_connection(pg: Backend) -> AsyncIterator[AsyncConnection]:
    """One connection as the service's role, in one transaction the test reads its own
    counters in: sessions bound to it commit savepoints, not the transaction."""
    engine = create_engine(as_app_role(pg.url))
    async with engine.connect() as connection:
        await connection.begin()
        yield connection
        await connection.rollback()
    await engine.dispose()


async def test_a_full_reconcile_reads_each_page_by_its_ids(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    app_connection: AsyncConnection,
    held_statistics: Callable[..., Awaitable[None]],
) -> None:
    clock = ManualClock(start=datetime.now(UTC))
    store = FakeStore(
        SHOP,
        seed=29,
        clock=clock,
        customers=0,
        products=0,
        orders=ORDERS,
        scope=f"{DEFAULT_SCOPE},read_all_orders",
    )
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP, access_token=store.access_token)
    # The statistics know another store's orders only; then this store's backfill fills it.
    async with pg.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO orders (tenant_id, shopify_id, source, synced_at)"
                " SELECT :tenant, n, 'backfill', now() FROM generate_series(1, 200) AS n"
            ),
            {"tenant": other},
        )
    await held_statistics("orders")

    with FakeShopServer(store) as server:
        async with httpx.AsyncClient(timeout=10) as http:
            base = server.admin_base_url_template
            env = simulator_environment(app_sessions, http, base, store, clock)
            async with pg.sessions() as session, session.begin():
                tenant = await session.get_one(Tenant, tenant_id)
                job = await create_sync_job(session, tenant, "full")
            await run_sync_job(env, job.id)
            async with pg.sessions() as session:
                assert (await session.get_one(SyncJob, job.id)).status == "succeeded"

            bound = async_sessionmaker(
                bind=app_connection,
                expire_on_commit=False,
                join_transaction_mode="create_savepoint",
            )
            run = await reconcile(
                simulator_environment(bound, http, base, store, clock),
                tenant_id,
                resources=["orders"],
                full=True,
            )
    assert run.status == "clean", run.report

    read = (await rows_read(app_connection, "orders"))["orders"]
    # The summary and the windows' counts read the store's orders (four times 3,000), and
    # each page its own rows: 18,000 in all when measured. Before, each page's lookup of its
    # 250 ids read the store's 3,000 too: 159,000.
    assert read <= 8 * ORDERS
