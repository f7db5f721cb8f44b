"""`webhooks sync` with METAFIELD_NAMESPACES against the simulator over real HTTP, on both
backends: record topics are subscribed with the kept namespaces (others with none), a
subscription asking for other namespaces is replaced, and the simulator's products/update
then carries the kept namespaces' metafields into the served app's `metafields`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from backfill.subscriptions import (
    INTENDED_TOPICS,
    enum_topic,
    stray_reason,
    subscription_status,
    sync_subscriptions,
)
from handlers import metafields
from handlers.resources import RESOURCES
from models import Metafield, create_engine, create_session_factory
from tests.conftest import APP_SECRET, Backend, ServedApp, as_app_role
from tests.factories import create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import children_of, numeric

SHOP = "metafield-store.myshopify.com"
KEPT = ("custom", "reviews")
RECORD_TOPICS = {
    enum_topic(topic)
    for name in ("orders", "products", "customers")
    for topic in RESOURCES[name].upsert_topics
}


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP, seed=11, clock=clock, customers=8, products=8, orders=8)
    with FakeShopServer(store) as server:
        yield store, clock, server
    store.webhooks.disable()


@pytest.fixture
async def synced(
    backend: Backend, served: ServedApp, simulator: tuple[FakeStore, ManualClock, FakeShopServer]
) -> AsyncIterator[tuple[FakeStore, Any, int]]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    # After `served` (starting the app applies its settings' namespaces: none).
    metafields.configure(KEPT)
    engine = create_engine(as_app_role(backend.url))
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            env = simulator_environment(
                create_session_factory(engine), http, server.admin_base_url_template, store, clock
            )
            yield store, env, tenant_id
    finally:
        metafields.configure([])
        await engine.dispose()


async def test_sync_subscribes_record_topics_with_the_kept_namespaces_and_replaces_others(
    synced: tuple[FakeStore, Any, int], served: ServedApp
) -> None:
    store, env, tenant_id = synced
    uri = served.webhook_url
    old = store.subscriptions.create("products/update", uri, metafield_namespaces=("legacy",))
    status = await subscription_status(env, tenant_id, uri)
    assert [s.gid for s in status.stray] == [old.id]
    assert stray_reason(status.stray[0], uri) == "metafield namespaces legacy, not custom, reviews"

    report = await sync_subscriptions(env, tenant_id, uri)
    assert report.errors == []
    at_shopify = store.subscriptions.list()
    assert old.id not in {s.id for s in at_shopify}
    assert sorted(s.topic for s in at_shopify) == sorted(enum_topic(t) for t in INTENDED_TOPICS)
    for subscription in at_shopify:
        wanted = KEPT if subscription.topic in RECORD_TOPICS else ()
        assert subscription.metafield_namespaces == wanted, subscription.topic
    assert "PRODUCTS_UPDATE" in RECORD_TOPICS

    again = await sync_subscriptions(env, tenant_id, uri)
    assert (again.in_sync, again.created, again.deleted) == (True, [], [])


async def test_a_delivered_products_update_carries_the_kept_metafields_into_the_table(
    synced: tuple[FakeStore, Any, int], served: ServedApp, backend: Backend
) -> None:
    store, env, tenant_id = synced
    report = await sync_subscriptions(env, tenant_id, served.webhook_url)
    assert report.errors == []
    store.webhooks.enable(APP_SECRET)
    index = next(
        i
        for i in range(8)
        if {m["namespace"] for m in children_of(store.product_node(i), "metafields")} & set(KEPT)
    )
    store.set_metafield("products", index, "other_app", "token", "never ours")
    node = store.update_product(index, title="Renamed")
    [event] = store.webhooks.events("products/update")
    assert all(delivery.ok for delivery in event.deliveries)

    expected = {
        numeric(m["id"]): ("PRODUCT", numeric(node["id"]), m["namespace"], m["key"], m["value"])
        for m in children_of(store.product_node(index), "metafields")
        if m["namespace"] in KEPT
    }
    assert expected
    async with backend.sessions() as session:
        rows = await session.scalars(select(Metafield).where(Metafield.deleted_at.is_(None)))
        assert {
            row.shopify_id: (
                row.owner_type, row.owner_shopify_id, row.namespace, row.key, row.value
            )
            for row in rows
        } == expected  # fmt: skip
