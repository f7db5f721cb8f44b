"""The backfill writes every child table equal to the simulated store, row by row, in both
modes and on both backends: records with more children than a page asks for are completed by
id (an order with 300 line items, a product with 150 variants), bulk results are put back
under their parents, and nothing is left in a child table that the store does not have."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from backfill.runner import BackfillEnvironment, create_sync_job, run_sync_job
from models import SyncJob, Tenant
from tests.conftest import Backend
from tests.factories import SHOP, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.store_children import assert_children_equal_store

STORE = {
    "customers": 40,
    "products": 30,
    "orders": 90,
    "many_line_items_every": 40,
    "many_line_items": 300,
    "many_variants_every": 15,
    "many_variants": 150,
}


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP, seed=5, clock=clock, **STORE)
    with FakeShopServer(store) as server:
        yield store, clock, server


@pytest.fixture
async def env(
    backend: Backend, simulator: tuple[FakeStore, ManualClock, FakeShopServer]
) -> AsyncIterator[tuple[BackfillEnvironment, int]]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    async with httpx.AsyncClient(timeout=30) as http:
        yield (
            simulator_environment(
                backend.sessions,
                http,
                server.admin_base_url_template,
                store,
                clock,
                bulk_poll_interval=0.01,
            ),
            tenant_id,
        )


async def sync(backend: Backend, env: BackfillEnvironment, tenant_id: int, mode: str) -> SyncJob:
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        job = await create_sync_job(session, tenant, mode)
    await run_sync_job(env, job.id)
    async with backend.sessions() as session:
        return await session.get_one(SyncJob, job.id)


@pytest.mark.parametrize("mode", ["full", "bulk"])
async def test_every_child_table_equals_the_store(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any, mode: str
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    job = await sync(backend, environment, tenant_id, mode)
    assert (job.status, job.error) == ("succeeded", None)

    async with backend.sessions() as session:
        most = await assert_children_equal_store(session, store, tenant_id)
    # The overflow was there to page: more children than one page query asks for.
    assert most["order_line_items"] == 300
    assert most["product_variants"] == 150
