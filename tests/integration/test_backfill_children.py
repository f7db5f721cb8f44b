"""The backfill writes every child table equal to the simulated store, row by row, in both
modes and on both backends: records with more children than a page asks for are completed by
id (an order with 300 line items, a product with 150 variants), bulk results are put back
under their parents, and nothing is left in a child table that the store does not have."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backfill.runner import BackfillEnvironment, create_sync_job, run_sync_job
from handlers.children import ChildSet
from handlers.resources import RESOURCES, Resource
from models import SyncJob, Tenant
from tests.conftest import Backend
from tests.factories import SHOP, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import children_of, value_of
from tests.fakeshop.select import select as select_fields

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


def store_nodes(store: FakeStore, resource: Resource) -> Iterator[dict[str, Any]]:
    if resource.name == "inventory_items":
        # One per variant: the store's items are its products' variants' items.
        for product in store_nodes(store, RESOURCES["products"]):
            for variant in children_of(product, "variants"):
                yield value_of(variant, "inventoryItem")
        return
    for index in range(store.counts[resource.name]):
        node = getattr(store, f"{resource.name[:-1]}_node")(index)
        if node is not None:
            yield node


def expected_children(
    child: ChildSet, parent: dict[str, Any], parent_typename: str, parent_id: int
) -> Iterator[tuple[ChildSet, dict[str, Any]]]:
    """The rows the store's children of one parent should be, with their own children's."""
    # The parent's own selection resolves what a child's reading needs from it (a customer's
    # default address).
    shown_parent = (
        select_fields(parent, "id defaultAddress { id }", parent_typename)
        if (parent_typename == "Customer")
        else parent
    )
    for item in children_of(parent, child.node_key):
        shown = select_fields(item, child.node_fields, child.typename)
        record = child.normalize(shown, shown_parent, True) | {child.parent_key: parent_id}
        yield child, record
        for grandchild in child.queried_children:
            for pair in expected_children(grandchild, item, child.typename, record["shopify_id"]):
                pair[1].setdefault(grandchild.owner_key or "", parent_id)
                yield pair


@pytest.mark.parametrize("mode", ["full", "bulk"])
async def test_every_child_table_equals_the_store(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any, mode: str
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    job = await sync(backend, environment, tenant_id, mode)
    assert (job.status, job.error) == ("succeeded", None)

    heavy_seen = {"order_line_items": 0, "product_variants": 0}
    for resource in RESOURCES.values():
        async with backend.sessions() as session:
            live = await session.scalar(
                select(func.count())
                .select_from(resource.model)
                .where(resource.model.deleted_at.is_(None))
            )
        assert live == sum(1 for _ in store_nodes(store, resource)), resource.name
        expected: dict[str, dict[tuple[int, int], dict[str, Any]]] = {
            child.table: {} for child in resource.child_sets
        }
        for node in store_nodes(store, resource):
            parent_id = int(str(node["id"]).rsplit("/", 1)[1])
            for child in resource.children:
                for kind, record in expected_children(child, node, resource.typename, parent_id):
                    record.pop("", None)
                    key = (record[kind.parent_key], record[kind.child_key])
                    expected[kind.table][key] = record
        async with backend.sessions() as session:
            for child in resource.child_sets:
                rows = {
                    (getattr(row, child.parent_key), getattr(row, child.child_key)): row
                    for row in await session.scalars(
                        select(child.model).where(child.model.deleted_at.is_(None))
                    )
                }
                wanted = expected[child.table]
                assert sorted(rows) == sorted(wanted), child.table
                for key, record in wanted.items():
                    row = rows[key]
                    for column, value in record.items():
                        if column == "raw":
                            continue
                        assert getattr(row, column) == value, (child.table, key, column)
                if child.table in heavy_seen:
                    per_parent: dict[int, int] = {}
                    for row in rows.values():
                        parent = getattr(row, child.parent_key)
                        per_parent[parent] = per_parent.get(parent, 0) + 1
                    heavy_seen[child.table] = max(per_parent.values())
    # The overflow was there to page: more children than one page query asks for.
    assert heavy_seen == {"order_line_items": 300, "product_variants": 150}
