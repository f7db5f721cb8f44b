"""Topics we do not handle (issue #11, item 10): Shopify deletes a subscription whose deliveries
keep failing, so a correctly signed delivery of any topic we do not handle is `200 ignored` and
kept, whatever its body; only handled topics are held to a body shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from models import Customer, Order, WebhookEvent
from receiver.samples import triggered_at_header, webhook_headers
from receiver.signature import sign
from tests.conftest import APP_SECRET
from tests.factories import SHOP, create_tenant

# Bodies as Shopify documents them for these topics (none has the `id` a resource topic has;
# customers/purchasing_summary, handled now, is in tests/integration/test_absent_and_money.py).
NEWER_TOPICS: list[tuple[str, dict[str, Any]]] = [
    (
        "customers/merge",
        {
            "admin_graphql_api_customer_kept_id": "gid://shopify/Customer/1",
            "admin_graphql_api_customer_deleted_id": "gid://shopify/Customer/2",
            "status": "COMPLETED",
            "errors": [],
        },
    ),
    (
        "orders/risk_assessment_changed",
        {
            "order_id": 820982911946154508,
            "admin_graphql_api_order_id": "gid://shopify/Order/820982911946154508",
            "risk_level": "HIGH",
            "provider_title": None,
            "created_at": "2026-11-20T10:15:03-05:00",
        },
    ),
    (
        "orders/shopify_protect_eligibility_changed",
        {
            "order_id": 820982911946154508,
            "status": "protected",
            "eligibility": {"status": "eligible"},
        },
    ),
]
# Shopify "Events" (developer preview): dot-spelled topics, unprefixed lowercase headers.
EVENTS_TOPICS: list[tuple[str, dict[str, Any]]] = [
    ("customer.tags_added", {"customer": {"id": "gid://shopify/Customer/1"}, "tags": ["vip"]}),
    ("customer.joined_segment", {"customer": {"id": "gid://shopify/Customer/1"}, "segment": 7}),
]


def events_headers(topic: str, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "shopify-topic": topic,
        "shopify-hmac-sha256": sign(body, APP_SECRET),
        "shopify-shop-domain": SHOP,
        "shopify-api-version": "unstable",
        "shopify-webhook-id": str(uuid.uuid4()),
        "shopify-event-id": str(uuid.uuid4()),
        "shopify-triggered-at": triggered_at_header(),
        "shopify-action": topic.partition(".")[2],
        "shopify-resource-id": "gid://shopify/Customer/1",
    }


async def stored(backend, event_id: int) -> WebhookEvent:
    async with backend.sessions() as session:
        return await session.get_one(WebhookEvent, event_id)


async def data_rows(backend) -> tuple[int, int]:
    async with backend.sessions() as session:
        orders = await session.scalar(select(func.count()).select_from(Order))
        customers = await session.scalar(select(func.count()).select_from(Customer))
    return orders or 0, customers or 0


@pytest.mark.parametrize(("topic", "payload"), NEWER_TOPICS + EVENTS_TOPICS)
async def test_a_topic_we_do_not_handle_is_200_ignored_and_kept(
    backend, served, http, topic, payload
):
    tenant_id = await create_tenant(backend.sessions)
    body = json.dumps(payload).encode()
    if "." in topic:
        headers = events_headers(topic, body)
    else:
        headers = webhook_headers(topic, SHOP, body, APP_SECRET)

    response = await http.post(served.webhook_url, content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    event = await stored(backend, response.json()["event"])
    assert (event.topic, event.tenant_id, event.status) == (topic, tenant_id, "ignored")
    assert event.payload == payload
    assert f"topic {topic} is not handled" in (event.error or "")
    assert await data_rows(backend) == (0, 0)
    # Redelivered: a duplicate, as for any topic (dedupe on the event id).
    again = await http.post(served.webhook_url, content=body, headers=headers)
    assert again.json()["status"] == "duplicate"


@pytest.mark.parametrize(
    "body", [b"[1, 2]", b'"text"', b"null", b"not json", b"", b'{"x": NaN}', b"\xff\xfe"]
)
async def test_an_unhandled_topic_with_a_body_that_is_no_json_object_is_still_ignored(
    backend, served, http, body
):
    await create_tenant(backend.sessions)
    headers = events_headers("customer.tags_added", body)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    event = await stored(backend, response.json()["event"])
    assert (event.status, event.payload) == ("ignored", None)
    assert "body not stored" in (event.error or "")


@pytest.mark.parametrize(
    "topic",
    [
        "x" * 101,  # longer than the column
        "orders/cré",  # not ASCII
        "orders create",  # a space
        "orders/\tcreate",
    ],
)
async def test_a_topic_header_out_of_bounds_is_400(backend, served, http, topic):
    await create_tenant(backend.sessions)
    body = b"{}"
    headers = [
        (name.encode("ascii"), value.encode("latin-1"))
        for name, value in events_headers(topic, body).items()
    ]
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 400
    assert "Topic" in response.json()["error"]
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookEvent)) == 0


async def test_unhandled_topics_do_not_become_metric_labels(backend, served, http):
    await create_tenant(backend.sessions)
    topic = f"customer.tags_added_{uuid.uuid4().hex[:8]}"
    body = b"{}"
    response = await http.post(
        served.webhook_url, content=body, headers=events_headers(topic, body)
    )
    assert response.json()["status"] == "ignored"
    metrics = (await http.get(f"{served.base_url}/metrics")).text
    assert topic not in metrics
    assert 'topic="unhandled"' in metrics
