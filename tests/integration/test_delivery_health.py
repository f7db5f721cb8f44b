"""Delivery health and the last reconcile on the store page and in /api/stats: per-topic
subscriptions, last delivery, failures, dedupe hits, and silent-topic warnings."""

from __future__ import annotations

from datetime import timedelta

from models import ReconcileRun, Tenant, WebhookEvent, WebhookSubscription, utcnow
from receiver.stats import silence
from tests.factories import OTHER_SHOP, SHOP
from tests.integration.test_pages import ADMIN, add_event, create_user, sign_in, two_stores

__all__ = ["sign_in"]  # the fixture, used by name

URI = "https://receiver.example.com/webhooks/shopify"


async def subscribe(backend, tenant_id: int, *topics: str) -> None:
    async with backend.sessions() as session, session.begin():
        for topic in topics:
            session.add(WebhookSubscription(tenant_id=tenant_id, topic=topic, uri=URI))
        tenant = await session.get_one(Tenant, tenant_id)
        tenant.watchdog_checked_at = utcnow() - timedelta(minutes=3)


async def test_health_per_topic_and_silent_warning(backend, sign_in):
    ours, theirs = await two_stores(backend)
    now = utcnow()
    await subscribe(backend, ours, "orders/create", "products/update", "orders/paid")
    # orders/create: busy, every 2 minutes until 2 minutes ago.
    for minute in range(2, 22, 2):
        await add_event(backend, ours, f"oc-{minute}", received_at=now - timedelta(minutes=minute))
    # products/update: hourly from 5 days ago to 3 days ago, then nothing: a usual gap of
    # about 2.5 h, so three days of quiet is unusual.
    for hour in range(72, 120):
        await add_event(
            backend,
            ours,
            f"pu-{hour}",
            topic="products/update",
            received_at=now - timedelta(hours=hour),
        )
    # Another store's recent products/update must not count as ours.
    await add_event(
        backend, theirs, "theirs-pu", topic="products/update", shop=OTHER_SHOP, received_at=now
    )
    # orders/updated: not subscribed (any more), one failure and three dedupe hits.
    await add_event(
        backend, ours, "ou-1", topic="orders/updated", received_at=now - timedelta(hours=1)
    )
    failed = await add_event(
        backend,
        ours,
        "ou-2",
        topic="orders/updated",
        status="failed",
        error="boom",
        received_at=now - timedelta(minutes=30),
    )
    async with backend.sessions() as session, session.begin():
        event = await session.get_one(WebhookEvent, failed)
        event.duplicate_count = 3
    # Older than the week: counts for the last delivery, not for the week's numbers.
    await add_event(
        backend, ours, "op-old", topic="orders/paid", received_at=now - timedelta(days=9)
    )

    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    response = await client.get("/api/stats", params={"shop": SHOP})
    assert response.status_code == 200, response.text
    health = response.json()["delivery_health"]
    rows = {row["topic"]: row for row in health["topics"]}
    assert sorted(rows) == ["orders/create", "orders/paid", "orders/updated", "products/update"]

    assert rows["orders/create"]["subscribed"] is True
    assert rows["orders/create"]["deliveries_7d"] == 10
    assert rows["orders/create"]["silent"] is False
    assert rows["orders/create"]["last_delivery_at"].startswith(
        (now - timedelta(minutes=2)).isoformat()[:16]
    )

    assert rows["products/update"]["deliveries_7d"] == 48
    assert rows["products/update"]["silent"] is True
    assert health["silent_topics"] == ["products/update"]

    assert rows["orders/paid"]["deliveries_7d"] == 0
    assert rows["orders/paid"]["silent"] is False  # too little history to judge
    assert rows["orders/paid"]["last_delivery_at"].startswith(
        (now - timedelta(days=9)).isoformat()[:10]
    )

    assert rows["orders/updated"]["subscribed"] is False
    assert rows["orders/updated"]["deliveries_7d"] == 2
    assert rows["orders/updated"]["failed_7d"] == 1
    assert rows["orders/updated"]["dedupe_hits_7d"] == 3
    assert health["subscriptions_checked_at"] is not None

    page = await client.get(f"/stores/{SHOP}")
    assert page.status_code == 200
    warning = page.text.split('id="silent-warning"', 1)[1].split("</p>", 1)[0]
    assert "hidden" not in warning.split(">", 1)[0]
    assert "products/update" in warning
    assert '<tr data-topic="products/update">' in page.text


async def test_no_warning_when_every_topic_is_healthy(backend, sign_in):
    ours, _ = await two_stores(backend)
    await subscribe(backend, ours, "orders/create")
    await add_event(backend, ours, "only", received_at=utcnow() - timedelta(minutes=5))
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    page = await client.get(f"/stores/{SHOP}")
    warning = page.text.split('id="silent-warning"', 1)[1].split(">", 1)[0]
    assert "hidden" in warning


def test_silence_is_judged_against_the_topics_own_rhythm():
    now = utcnow()
    # Once a day for a week: a day and a half of quiet is normal.
    daily = now - timedelta(days=7)
    assert not silence(now, now - timedelta(hours=36), 7, daily)["silent"]
    # Every minute for an hour: 30 minutes of quiet is under the one-hour floor...
    busy = now - timedelta(hours=1, minutes=30)
    assert not silence(now, now - timedelta(minutes=30), 60, busy)["silent"]
    # ...and 2 hours is over it.
    busy = now - timedelta(hours=3)
    assert silence(now, now - timedelta(hours=2), 60, busy)["silent"]
    # Two deliveries are not a rhythm.
    assert not silence(now, now - timedelta(days=6), 2, now - timedelta(days=7))["judged"]


async def test_last_reconcile_is_the_newest_of_this_store(backend, sign_in):
    ours, theirs = await two_stores(backend)
    now = utcnow()
    async with backend.sessions() as session, session.begin():
        session.add_all(
            [
                ReconcileRun(
                    tenant_id=ours,
                    status="clean",
                    trigger="periodic",
                    report={},
                    started_at=now - timedelta(days=1),
                    finished_at=now - timedelta(days=1),
                ),
                ReconcileRun(
                    tenant_id=ours,
                    status="repaired",
                    trigger="manual",
                    report={
                        "orders": {
                            "shopify_count": 120,
                            "db_count": 117,
                            "drifted_windows": 2,
                            "repaired": 3,
                            "tombstoned": 1,
                        }
                    },
                    started_at=now - timedelta(hours=1),
                    finished_at=now - timedelta(minutes=59),
                ),
                ReconcileRun(
                    tenant_id=theirs,
                    status="failed",
                    trigger="manual",
                    report={},
                    error="THEIR-SECRET-ERROR",
                    started_at=now,
                ),
            ]
        )
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    stats = (await client.get("/api/stats", params={"shop": SHOP})).json()
    run = stats["last_reconcile"]
    assert run["status"] == "repaired"
    assert run["resources"] == [
        {
            "resource": "orders",
            "compared": "all orders",
            "shopify_count": 120,
            "db_count": 117,
            "drifted_windows": 2,
            "repaired": 3,
            "tombstoned": 1,
        }
    ]
    page = (await client.get(f"/stores/{SHOP}")).text
    assert 'id="reconcile-status">repaired<' in page
    assert "THEIR-SECRET-ERROR" not in page
