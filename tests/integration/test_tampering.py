"""Replayed and header-tampered deliveries: the signature covers the body only, so the body's
own ids, timestamps and shop win over headers, and a body must fit its topic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from models import Order, Tenant, WebhookEvent
from receiver.samples import sample_payload
from tests.factories import OTHER_SHOP, SHOP, create_tenant, delivery, order_version


async def post(http, served, body, headers):
    return await http.post(served.webhook_url, content=body, headers=headers)


async def count_events(backend) -> int:
    async with backend.sessions() as session:
        return await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0


async def test_body_naming_another_shop_is_refused(backend, served, http):
    await create_tenant(backend.sessions, SHOP)
    other = await create_tenant(backend.sessions, OTHER_SHOP)
    # shop A's uninstall, replayed with shop B's header under the shared app secret
    payload = sample_payload("app/uninstalled", SHOP)
    body, headers = delivery("app/uninstalled", payload, shop=OTHER_SHOP)
    response = await post(http, served, body, headers)
    assert response.status_code == 400
    assert "myshopify_domain" in response.json()["error"]
    async with backend.sessions() as session:
        assert (await session.get_one(Tenant, other)).status == "active"
    assert await count_events(backend) == 0


async def test_body_of_another_resource_under_a_topic_is_refused(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create", sample_payload("products/create"))
    response = await post(http, served, body, headers)
    assert response.status_code == 400
    assert "not a Order" in response.json()["error"]
    body, headers = delivery("orders/updated", {"id": 5})
    response = await post(http, served, body, headers)
    assert response.status_code == 400
    assert "updated_at" in response.json()["error"]
    assert await count_events(backend) == 0


async def test_replay_with_fresh_headers_cannot_roll_an_order_back(backend, served, http):
    await create_tenant(backend.sessions)
    old_body, old_headers = delivery("orders/updated", order_version(42, 2))
    new_body, new_headers = delivery("orders/updated", order_version(42, 3))
    assert (await post(http, served, old_body, old_headers)).json()["status"] == "processed"
    assert (await post(http, served, new_body, new_headers)).json()["status"] == "processed"
    # The captured older body again, with a new event id, webhook id and trigger time.
    replay_body, replay_headers = delivery("orders/updated", order_version(42, 2))
    assert replay_body == old_body
    assert replay_headers["X-Shopify-Event-Id"] != old_headers["X-Shopify-Event-Id"]
    assert (await post(http, served, replay_body, replay_headers)).status_code == 200
    async with backend.sessions() as session:
        order = await session.scalar(select(Order).where(Order.shopify_id == 42))
    assert order is not None
    assert order.name == order_version(42, 3)["name"]


async def test_a_forged_trigger_time_does_not_date_a_tombstone(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/delete", {"id": 77})
    headers["X-Shopify-Triggered-At"] = "2001-01-01T00:00:00.000000000Z"
    before = datetime.now(UTC)
    assert (await post(http, served, body, headers)).json()["status"] == "processed"
    async with backend.sessions() as session:
        order = await session.scalar(select(Order).where(Order.shopify_id == 77))
    assert order is not None
    assert order.deleted_at >= before - timedelta(seconds=5)
