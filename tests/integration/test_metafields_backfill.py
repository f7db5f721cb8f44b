"""A backfill of a simulated store with metafields lands the kept namespaces' metafields of
its orders, products and customers equal to the store, row by row, in both modes and on both
backends: a record with more than a page asks for is completed by id (full) or read whole
(bulk), other namespaces are never stored, and a later backfill tombstones a deleted one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from backfill.runner import BackfillEnvironment
from handlers import metafields
from handlers.metafields import PAGE_FIRST
from handlers.resources import RESOURCES
from models import Metafield
from tests.conftest import Backend
from tests.factories import SHOP, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import HEAVY_METAFIELDS, children_of, numeric
from tests.integration.test_backfill_children import sync
from tests.store_children import store_nodes

KEPT = ("custom", "reviews")
OWNERS = {"orders": "ORDER", "products": "PRODUCT", "customers": "CUSTOMER"}


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP, seed=11, clock=clock, customers=12, products=12, orders=12)
    with FakeShopServer(store) as server:
        yield store, clock, server


@pytest.fixture
async def env(
    backend: Backend, simulator: tuple[FakeStore, ManualClock, FakeShopServer]
) -> AsyncIterator[tuple[BackfillEnvironment, int]]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    metafields.configure(KEPT)
    try:
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
    finally:
        metafields.configure([])


def in_store(store: FakeStore, namespaces: tuple[str, ...]) -> dict[int, tuple[Any, ...]]:
    """The store's metafields of these namespaces, read from its records directly."""
    found = {}
    for name, owner_type in OWNERS.items():
        for node in store_nodes(store, RESOURCES[name]):
            for item in children_of(node, "metafields"):
                if item["namespace"] in namespaces:
                    found[numeric(item["id"])] = (
                        owner_type, numeric(node["id"]), item["namespace"], item["key"],
                        item["type"], item["value"],
                    )  # fmt: skip
    return found


async def stored(backend: Backend) -> dict[int, tuple[Any, ...]]:
    async with backend.sessions() as session:
        rows = await session.scalars(select(Metafield).where(Metafield.deleted_at.is_(None)))
        return {
            row.shopify_id: (
                row.owner_type, row.owner_shopify_id, row.namespace, row.key, row.type, row.value
            )
            for row in rows
        }  # fmt: skip


@pytest.mark.parametrize("mode", ["full", "bulk"])
async def test_kept_metafields_equal_the_store_and_a_deleted_one_is_tombstoned(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any, mode: str
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    # The store holds namespaces we do not keep, and records with more than a page.
    assert set(in_store(store, ("other_app",)))
    per_owner: dict[int, int] = {}
    for _, owner, *_ in in_store(store, KEPT).values():
        per_owner[owner] = per_owner.get(owner, 0) + 1
    assert max(per_owner.values()) == HEAVY_METAFIELDS > PAGE_FIRST

    job = await sync(backend, environment, tenant_id, mode)
    assert (job.status, job.error) == ("succeeded", None)
    assert await stored(backend) == in_store(store, KEPT)

    heavy = next(i for i in range(12) if len(children_of(store.product_node(i), "metafields")) > 10)
    store.delete_metafield("products", heavy, "custom", "field_4")
    store.set_metafield("products", heavy, "custom", "field_5", "changed")
    store.set_metafield("customers", 0, "reviews", "stars", "5", "number_integer")
    job = await sync(backend, environment, tenant_id, mode)
    assert (job.status, job.error) == ("succeeded", None)
    now = await stored(backend)
    assert now == in_store(store, KEPT)
    assert [row[3] for row in now.values() if row[3] == "stars"] == ["stars"]
    async with backend.sessions() as session:
        gone = await session.scalars(
            select(Metafield.key).where(
                Metafield.deleted_at.is_not(None), Metafield.owner_type == "PRODUCT"
            )
        )
        assert list(gone) == ["field_4"]
