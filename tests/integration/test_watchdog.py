"""The watchdog: Shopify drops a subscription and the store keeps changing while nobody
listens; the next check registers it again and closes the gap, and the database ends
identical to the store. Simulator over real HTTP, the app served over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from backfill.maintenance import Maintenance, MaintenanceLoop
from backfill.queue import QUEUE, RECONCILE, WATCHDOG, procrastinate_app, run_worker
from backfill.subscriptions import INTENDED_TOPICS, enum_topic, sync_subscriptions
from backfill.watchdog import claim_due_stores, last_event_received, watch_due_stores
from models import InventoryLevel, ReconcileRun, SyncJob, Tenant, WebhookEvent
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import children_of, numeric, value_of
from tests.fakeshop.tokens import DEFAULT_SCOPE
from tests.integration.test_handoff import (
    SHOP,
    SIZES,
    Handoff,
    assert_database_is_the_store,
    handoff,
    pick,
)

__all__ = ["handoff"]  # a fixture, used by name


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    """The handoff store, with the scope that shows orders older than 60 days (reconcile
    compares only recent orders without it, and the generated history is years old)."""
    clock = ManualClock(start=datetime.now(UTC))
    store = FakeStore(SHOP, seed=23, clock=clock, scope=f"{DEFAULT_SCOPE},read_all_orders", **SIZES)
    with FakeShopServer(store) as server:
        yield store, clock, server
    store.webhooks.disable()


ORDER_TOPICS = [topic for topic in INTENDED_TOPICS if topic.startswith("orders/")]


async def subscribed_and_synced(handoff: Handoff, uri: str) -> None:
    job, _ = await handoff.backfill(page_size=100)
    assert (job.status, job.error) == ("succeeded", None)
    await sync_subscriptions(handoff.env, handoff.tenant_id, uri)
    await assert_database_is_the_store(handoff)


async def jobs(handoff: Handoff) -> list[SyncJob]:
    async with handoff.backend.sessions() as session:
        return list(await session.scalars(select(SyncJob).order_by(SyncJob.id)))


async def test_a_dropped_subscription_is_restored_and_its_gap_closed(handoff, served):
    store, changes = handoff.store, handoff.changes
    await subscribed_and_synced(handoff, served.webhook_url)
    changes.update("orders", pick(changes, "orders", 3))  # heard: the gap starts after this
    async with handoff.backend.sessions() as session:
        last_heard = await session.scalar(select(func.max(WebhookEvent.received_at)))

    # Shopify removes the order subscriptions (8 failed deliveries, say) and says nothing.
    for topic in ORDER_TOPICS:
        store.subscriptions.drop(topic)
    skipped = store.webhooks.skipped
    changes.update("orders", pick(changes, "orders", 30))
    changes.delete("orders", pick(changes, "orders", 40))
    changes.create("orders")
    changes.update("customers", 7)  # still subscribed: this one arrives
    assert store.webhooks.skipped - skipped == 3
    with pytest.raises(AssertionError):
        await assert_database_is_the_store(handoff)  # the copy is behind: three changes lost

    results = await watch_due_stores(handoff.env, served.webhook_url, timedelta(0))

    assert [result.error for result in results] == [None]
    at_shopify = store.subscriptions.list()
    assert sorted(s.topic for s in at_shopify) == sorted(enum_topic(t) for t in INTENDED_TOPICS)
    assert {s.uri for s in at_shopify} == {served.webhook_url}
    await assert_database_is_the_store(handoff)
    gap = (await jobs(handoff))[-1]
    assert (gap.trigger, gap.mode, gap.resources, gap.status) == (
        "watchdog",
        "incremental",
        ["orders"],
        "succeeded",
    )
    assert last_heard is not None
    assert gap.since is not None
    assert gap.since <= last_heard  # from the last event heard, not from the last sync
    async with handoff.backend.sessions() as session:
        run = await session.scalar(select(ReconcileRun).where(ReconcileRun.trigger == "watchdog"))
    assert run is not None
    # The pull brought the update and the create; only the reconcile can see the delete.
    assert run.status == "repaired"

    # Restored deliveries flow again, and a second check has nothing to do.
    changes.update("orders", pick(changes, "orders", 50))
    await assert_database_is_the_store(handoff)
    before = len(await jobs(handoff))
    again = await watch_due_stores(handoff.env, served.webhook_url, timedelta(0))
    assert [result.subscriptions.created for result in again if result.subscriptions] == [[]]
    assert len(await jobs(handoff)) == before


async def test_a_gap_in_a_child_topic_backfills_and_reconciles_its_parent(handoff, served):
    """inventory_levels/* carry levels, which the inventory items' backfill and reconcile
    repair: a lost level update is closed through inventory_items."""
    store = handoff.store
    await subscribed_and_synced(handoff, served.webhook_url)
    variant = children_of(store.product_node(4), "variants")[0]
    item = numeric(value_of(variant, "inventoryItem")["id"])
    location = numeric(store.location_node(0)["id"])
    store.set_inventory(4, 0, 0, available=3)  # heard
    async with handoff.backend.sessions() as session:
        heard = await session.scalar(
            select(func.max(WebhookEvent.received_at)).where(
                WebhookEvent.topic == "inventory_levels/update"
            )
        )
        assert heard is not None
        assert await last_event_received(session, handoff.tenant_id, "inventory_items") == heard

    store.subscriptions.drop("inventory_levels/update")
    skipped = store.webhooks.skipped
    store.set_inventory(4, 0, 0, available=41, committed=2)
    assert store.webhooks.skipped - skipped == 1

    results = await watch_due_stores(handoff.env, served.webhook_url, timedelta(0))

    assert [result.error for result in results] == [None]
    assert [result.gap_resources for result in results] == [["inventory_items"]]
    gap = (await jobs(handoff))[-1]
    assert (gap.trigger, gap.resources, gap.status) == (
        "watchdog",
        ["inventory_items"],
        "succeeded",
    )
    assert gap.since is not None
    assert gap.since <= heard
    async with handoff.backend.sessions() as session:
        run = await session.scalar(select(ReconcileRun).where(ReconcileRun.trigger == "watchdog"))
        level = await session.scalar(
            select(InventoryLevel).where(
                InventoryLevel.inventory_item_shopify_id == item,
                InventoryLevel.location_shopify_id == location,
            )
        )
    assert run is not None
    assert set(run.report) == {"inventory_items", "inventory_levels"}
    assert level is not None
    assert (level.available, level.committed, level.deleted_at) == (41, 2, None)


async def test_nothing_is_pulled_before_the_initial_backfill(handoff, served):
    store = handoff.store
    results = await watch_due_stores(handoff.env, served.webhook_url, timedelta(0))
    assert [result.note for result in results] == [
        "no finished backfill yet; run the initial backfill"
    ]
    # Subscriptions are registered all the same, and no job was started.
    assert len(store.subscriptions.list()) == len(INTENDED_TOPICS)
    assert await jobs(handoff) == []


async def test_each_store_is_checked_by_one_worker_per_interval(handoff):
    claims = await asyncio.gather(
        *(claim_due_stores(handoff.env, timedelta(hours=1)) for _ in range(4))
    )
    assert sorted(tenant for claim in claims for tenant in claim) == [handoff.tenant_id]
    # Checked just now: not due again within the interval, due once it has passed.
    assert await claim_due_stores(handoff.env, timedelta(hours=1)) == []
    later = (await _checked_at(handoff)) + timedelta(hours=2)
    assert await claim_due_stores(handoff.env, timedelta(hours=1), now=later) == [handoff.tenant_id]


async def _checked_at(handoff: Handoff):
    async with handoff.backend.sessions() as session:
        tenant = await session.get_one(Tenant, handoff.tenant_id)
        assert tenant.watchdog_checked_at is not None
        return tenant.watchdog_checked_at


async def test_the_scheduler_of_each_backend_runs_both_checks(handoff, served):
    """SQLite: the serving process's loop; PostgreSQL: procrastinate's periodic tasks run by
    a worker. Either way one tick restores subscriptions and reconciles."""
    await subscribed_and_synced(handoff, served.webhook_url)
    handoff.store.subscriptions.drop("products/update")
    maintenance = Maintenance(
        webhook_url=served.webhook_url,
        watchdog_interval=timedelta(0),
        reconcile_interval=timedelta(0),
    )
    if handoff.backend.name == "sqlite":
        await MaintenanceLoop(handoff.env, maintenance).tick()
    else:
        queue = procrastinate_app(handoff.backend.url)
        async with queue.open_async():
            # What the periodic deferrer queues at a minute tick (it may queue this minute's
            # too, racing the drain), then a worker drains the queue.
            for task in (WATCHDOG, RECONCILE):
                await queue.configure_task(task, queue=QUEUE).defer_async(timestamp=0)
            await run_worker(queue, handoff.env, concurrency=1, wait=False, maintenance=maintenance)
    assert handoff.store.subscriptions.for_topic("products/update") != []
    async with handoff.backend.sessions() as session:
        triggers = sorted(await session.scalars(select(ReconcileRun.trigger)))
    # The watchdog's own reconcile of products, and the periodic one of the whole store.
    assert set(triggers) == {"periodic", "watchdog"}
