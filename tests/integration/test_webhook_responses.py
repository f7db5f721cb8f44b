"""Every row of DESIGN.md's "Webhook responses" table, through real HTTP to the served app."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import func, select

from models import Order, Tenant, WebhookEvent
from receiver.samples import sample_payload
from receiver.signature import sign
from tests.conftest import OLD_APP_SECRET, TEST_BODY_LIMIT, Backend, ServedApp, settings_for
from tests.factories import OTHER_SHOP, SHOP, create_tenant, delivery


async def count(backend: Backend, model: type) -> int:
    async with backend.sessions() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def only_event(backend: Backend) -> WebhookEvent:
    async with backend.sessions() as session:
        return (await session.scalars(select(WebhookEvent))).one()


async def post(
    http: httpx.AsyncClient, served: ServedApp, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await http.post(served.webhook_url, content=body, headers=headers)


async def test_missing_signature_is_401_and_stores_nothing(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    del headers["X-Shopify-Hmac-Sha256"]
    response = await post(http, served, body, headers)
    assert response.status_code == 401
    assert "error" in response.json()
    assert await count(backend, WebhookEvent) == 0


@pytest.mark.parametrize("secret", ["not-the-secret", ""])
async def test_wrong_signature_is_401_and_stores_nothing(backend, served, http, secret):
    await create_tenant(backend.sessions, webhook_secrets=["store-secret"])
    body, headers = delivery("orders/create", secret=secret or "x")
    if not secret:
        headers["X-Shopify-Hmac-Sha256"] = "garbage=="
    response = await post(http, served, body, headers)
    assert response.status_code == 401
    assert await count(backend, WebhookEvent) == 0
    assert await count(backend, Order) == 0


async def test_signature_over_other_bytes_is_401(backend, served, http):
    """Verification is over the raw bytes: re-serialised JSON with the same meaning fails."""
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    reformatted = json.dumps(json.loads(body), indent=2).encode()
    response = await post(http, served, reformatted, headers)
    assert response.status_code == 401
    assert await count(backend, WebhookEvent) == 0


async def test_rotated_out_app_secret_still_verifies(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create", secret=OLD_APP_SECRET)
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    assert response.json()["status"] == "processed"


async def test_store_secret_verifies_only_for_its_own_store(backend, served, http):
    await create_tenant(backend.sessions, SHOP, webhook_secrets=["alpha-new", "alpha-old"])
    await create_tenant(backend.sessions, OTHER_SHOP)
    for secret in ("alpha-new", "alpha-old"):
        body, headers = delivery("orders/create", secret=secret)
        assert (await post(http, served, body, headers)).status_code == 200
    body, headers = delivery("orders/create", shop=OTHER_SHOP, secret="alpha-new")
    assert (await post(http, served, body, headers)).status_code == 401
    assert await count(backend, WebhookEvent) == 2


async def test_unprefixed_lowercase_headers_are_accepted(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    unprefixed = {
        key.lower().replace("x-shopify-", "shopify-"): value for key, value in headers.items()
    }
    response = await post(http, served, body, unprefixed)
    assert response.status_code == 200
    assert response.json()["status"] == "processed"


async def test_declared_oversize_body_is_413(backend, served, http):
    await create_tenant(backend.sessions)
    payload = sample_payload("orders/create") | {"note": "x" * TEST_BODY_LIMIT}
    body, headers = delivery("orders/create", payload)
    response = await post(http, served, body, headers)
    assert response.status_code == 413
    assert await count(backend, WebhookEvent) == 0


async def test_streamed_oversize_body_is_413_without_content_length(backend, served, http):
    """A chunked body has no Content-Length: the limit is enforced while it streams."""
    await create_tenant(backend.sessions)
    _body, headers = delivery("orders/create")
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < TEST_BODY_LIMIT * 4:
            sent += 8192
            yield b" " * 8192

    try:
        response = await http.post(served.webhook_url, content=endless(), headers=headers)
    except httpx.WriteError:
        pass  # the server answered and closed while we were still writing: also a refusal
    else:
        assert response.status_code == 413
    assert await count(backend, WebhookEvent) == 0


@pytest.mark.parametrize(
    ("drop", "body_override", "message"),
    [
        ("X-Shopify-Topic", None, "Topic"),
        ("X-Shopify-Shop-Domain", None, "Shop-Domain"),
        (None, b"{not json", "JSON"),
        (None, b"[1, 2, 3]", "object"),
        (None, b"", "JSON"),
        (None, b"\xff\xfe not utf-8", "JSON"),
        (None, b'{"total": NaN}', "JSON"),
    ],
)
async def test_bad_delivery_with_valid_signature_is_400(
    backend, served, http, drop, body_override, message
):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    if body_override is not None:
        body = body_override
        headers["X-Shopify-Hmac-Sha256"] = sign(body, "shpss_current_app_secret")
    if drop:
        del headers[drop]
    response = await post(http, served, body, headers)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert await count(backend, WebhookEvent) == 0


async def test_first_delivery_is_processed_and_upserted(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    assert response.json()["status"] == "processed"
    event = await only_event(backend)
    assert event.status == "processed"
    assert event.event_id == headers["X-Shopify-Event-Id"]
    assert event.webhook_id == headers["X-Shopify-Webhook-Id"]
    assert event.api_version == headers["X-Shopify-API-Version"]
    assert event.triggered_at is not None
    assert event.payload == json.loads(body)
    async with backend.sessions() as session:
        order = (await session.scalars(select(Order))).one()
    sample = json.loads(body)
    assert order.shopify_id == sample["id"]
    assert order.name == sample["name"]
    assert str(order.total_price.normalize()) == str(
        type(order.total_price)(sample["total_price"]).normalize()
    )
    assert order.currency == sample["currency"]


@pytest.mark.parametrize("dedupe_header", ["X-Shopify-Event-Id", "X-Shopify-Webhook-Id"])
async def test_same_event_again_changes_nothing(backend, served, http, dedupe_header):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    if dedupe_header == "X-Shopify-Webhook-Id":
        del headers["X-Shopify-Event-Id"]
    assert (await post(http, served, body, headers)).json()["status"] == "processed"
    # The same event again, even with a newer (validly signed) body, is not applied again.
    newer = json.loads(body) | {"updated_at": "2027-01-01T00:00:00Z", "name": "#9999"}
    body2, headers2 = delivery("orders/create", newer)
    headers2[dedupe_header] = headers[dedupe_header]
    if dedupe_header == "X-Shopify-Webhook-Id":
        del headers2["X-Shopify-Event-Id"]
    response = await post(http, served, body2, headers2)
    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert await count(backend, WebhookEvent) == 1
    async with backend.sessions() as session:
        assert (await session.scalars(select(Order.name))).one() == json.loads(body)["name"]


async def test_one_event_id_on_two_topics_is_two_deliveries(backend, served, http):
    """Shopify can fan one event out to several topics; each topic is applied."""
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create", event_id="shared-event")
    body2, headers2 = delivery("orders/paid", event_id="shared-event")
    assert (await post(http, served, body, headers)).json()["status"] == "processed"
    assert (await post(http, served, body2, headers2)).json()["status"] == "processed"
    assert await count(backend, WebhookEvent) == 2


async def test_unhandled_topic_is_ignored(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("collections/update", {"id": 1, "title": "Summer"})
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    event = await only_event(backend)
    assert event.status == "ignored"
    assert "not handled" in (event.error or "")


async def test_unknown_shop_is_ignored_and_kept(backend, served, http):
    body, headers = delivery("orders/create", shop="stranger.myshopify.com")
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    event = await only_event(backend)
    assert (event.status, event.tenant_id, event.shop_domain) == (
        "ignored",
        None,
        "stranger.myshopify.com",
    )
    assert await count(backend, Order) == 0


async def test_handler_failure_is_200_failed_and_isolated(backend, served, http):
    await create_tenant(backend.sessions)
    broken = sample_payload("orders/create") | {"id": 2**64}
    body, headers = delivery("orders/create", broken)
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    event = await only_event(backend)
    assert event.status == "failed"
    assert "64-bit" in (event.error or "")
    assert event.payload == broken
    assert await count(backend, Order) == 0
    # The next delivery is unaffected by the failed one.
    body, headers = delivery("orders/create")
    assert (await post(http, served, body, headers)).json()["status"] == "processed"


@pytest.fixture
def unreachable_database_app() -> Iterator[ServedApp]:
    # Port 9 (discard) has nothing listening here: every connection is refused.
    settings = settings_for("postgresql+asyncpg://postgres@127.0.0.1:9/nowhere")
    with ServedApp(settings) as app:
        yield app


async def test_database_unreachable_is_503(unreachable_database_app, http):
    body, headers = delivery("orders/create")
    response = await post(http, unreachable_database_app, body, headers)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "database" in response.json()["error"]
    ready = await http.get(f"{unreachable_database_app.base_url}/readyz")
    assert ready.status_code == 503


async def test_health_and_readiness(backend, served, http):
    assert (await http.get(f"{served.base_url}/healthz")).json() == {"status": "ok"}
    ready = await http.get(f"{served.base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_on_the_webhook_path_are_405(backend, served, http, method):
    # POST takes receiver.webhooks.WebhookLane, ahead of the router: the router still
    # answers every other method on the path.
    response = await http.request(method, served.webhook_url)
    assert response.status_code == 405
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_webhook_answer_carries_the_security_headers(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    response = await post(http, served, body, headers)
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers


async def test_a_store_secret_the_keys_cannot_decrypt_is_a_503_with_retry_after(
    backend, served, http
):
    # Raised inside the handler and answered by the app's exception handlers, which
    # WebhookLane uses as the router would: a 503 Shopify retries, not a 500.
    tenant_id = await create_tenant(backend.sessions, webhook_secrets=["store-secret"])
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        tenant.webhook_secrets_encrypted = "not-a-fernet-token"
    body, headers = delivery("orders/create", secret="store-secret")
    response = await post(http, served, body, headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "ENCRYPTION_KEYS" in response.json()["error"]
    assert await count(backend, WebhookEvent) == 0
