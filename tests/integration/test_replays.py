"""Replays of signed bodies under destructive topics (issue #11, item 1).

The signature covers the body only: a captured delivery can be re-sent with another topic and
another store's domain in the headers. A destructive topic applies only when its body has that
topic's shape and names the header's shop, by domain or by the Shopify shop id held for the
store; anything else is a 400 or an `ignored` event, and nothing of any store changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from backfill.runner import create_sync_job, run_sync_job
from models import Base, Order, SyncJob, Tenant, WebhookEvent, utcnow
from receiver.samples import sample_payload, webhook_headers
from tests.conftest import APP_SECRET, Backend, ServedApp
from tests.factories import create_tenant, delivery, order_version, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.integration.test_cli import Cli, cli_env

SHOP_C = "store-c.myshopify.com"
SHOP_D = "store-d.myshopify.com"
C_ID, D_ID = 70_000_000_001, 70_000_000_002
PLACEHOLDER = "{shop}.myshopify.com"
DESTRUCTIVE = ("shop/redact", "customers/redact", "customers/data_request", "app/uninstalled")


# --- helpers ---------------------------------------------------------------------------------


async def snapshot(backend: Backend, tenant_id: int) -> str:
    """The tenant row and every row the tenant owns, every column, read from the tables."""
    chunks = []
    async with backend.sessions() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "tenants":
                where, column = "id = :tenant", "id"
            elif "tenant_id" in table.c:
                where = "tenant_id = :tenant"
                column = ", ".join(key.name for key in table.primary_key) or "tenant_id"
            else:
                continue
            rows = await session.execute(
                text(f"SELECT * FROM {table.name} WHERE {where} ORDER BY {column}"),
                {"tenant": tenant_id},
            )
            chunks.extend(f"{table.name} {json.dumps(list(row), default=str)}" for row in rows)
    return "\n".join(chunks)


async def event_count(backend: Backend) -> int:
    async with backend.sessions() as session:
        return await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0


async def send(
    http: httpx.AsyncClient,
    served: ServedApp,
    topic: str,
    shop: str,
    payload: dict[str, Any] | bytes,
) -> httpx.Response:
    """`payload` signed with the app secret, sent as `topic` for `shop`."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = webhook_headers(topic, shop, body, APP_SECRET)
    return await http.post(served.webhook_url, content=body, headers=headers)


async def two_stores(
    backend: Backend,
    http: httpx.AsyncClient,
    served: ServedApp,
    *,
    c_id: int | None = C_ID,
    d_id: int | None = D_ID,
) -> tuple[int, int]:
    """Stores C and D, each with a token, its own webhook secret, a customer, an order, and
    (unless None) the Shopify shop id we hold for it."""
    ids = []
    for shop, shop_id, order_id in ((SHOP_C, c_id, 1001), (SHOP_D, d_id, 2001)):
        tenant_id = await create_tenant(
            backend.sessions,
            shop,
            webhook_secrets=[f"{shop}-own-secret"],
            access_token=f"shpat_{order_id}",
        )
        async with backend.sessions() as session, session.begin():
            (await session.get_one(Tenant, tenant_id)).shopify_shop_id = shop_id
        for topic, payload in (
            ("customers/create", sample_payload("customers/create")),
            ("orders/create", order_version(order_id, 1)),
        ):
            response = await send(http, served, topic, shop, payload)
            assert response.json()["status"] == "processed", response.text
        ids.append(tenant_id)
    return ids[0], ids[1]


def compliance_body(topic: str, shop_domain: str | None, shop_id: int | None) -> dict[str, Any]:
    """Shopify's sample for `topic`, naming the given domain and id (None: placeholders)."""
    payload = sample_payload(topic)
    if topic == "app/uninstalled":
        payload.update(myshopify_domain=shop_domain, domain=shop_domain, id=shop_id)
    else:
        payload.update(shop_domain=shop_domain or PLACEHOLDER, shop_id=shop_id)
    return payload


# --- an ordinary body re-sent as a destructive topic -----------------------------------------


@pytest.mark.parametrize("target", [SHOP_C, SHOP_D])
@pytest.mark.parametrize("topic", DESTRUCTIVE)
async def test_an_order_body_resent_as_a_destructive_topic_changes_nothing(
    backend, served, http, topic, target
):
    """D's signed orders/create, re-sent as `topic` under C's domain (and under D's own)."""
    c, d = await two_stores(backend, http, served)
    body, _ = delivery("orders/create", order_version(2001, 1), shop=SHOP_D)
    before = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))

    response = await send(http, served, topic, target, body)

    assert response.status_code == 400, response.text
    assert topic in response.json()["error"]
    after = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    assert after == before


@pytest.mark.parametrize(
    ("captured", "resent_as"),
    [
        ("customers/redact", "shop/redact"),
        ("customers/data_request", "shop/redact"),
        ("customers/data_request", "customers/redact"),
        ("customers/redact", "customers/data_request"),
        ("shop/redact", "customers/redact"),
        ("app/uninstalled", "shop/redact"),
        ("shop/redact", "app/uninstalled"),
    ],
)
async def test_one_compliance_body_resent_as_another_topic_changes_nothing(
    backend, served, http, captured, resent_as
):
    """Same shop, same signature, another destructive topic: a customer's redaction must not
    become the whole shop's."""
    c, d = await two_stores(backend, http, served)
    body = compliance_body(captured, SHOP_C, C_ID)
    before = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))

    response = await send(http, served, resent_as, SHOP_C, body)

    assert response.status_code == 400, response.text
    after = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    assert after == before


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        # A captured create, re-sent as a delete, would tombstone a live order.
        ("orders/delete", order_version(1001, 5)),
        ("customers/delete", sample_payload("customers/update")),
        ("products/delete", sample_payload("products/update")),
        # orders/edited carries an order_edit; a flat body with order_id is another topic's.
        ("orders/edited", {"order_id": 1001, "created_at": "2027-01-01T00:00:00Z"}),
    ],
)
async def test_a_whole_record_resent_as_a_delete_or_edit_changes_nothing(
    backend, served, http, action, payload
):
    c, _d = await two_stores(backend, http, served)
    before = (await snapshot(backend, c), await event_count(backend))
    response = await send(http, served, action, SHOP_C, payload)
    assert response.status_code == 400, response.text
    assert (await snapshot(backend, c), await event_count(backend)) == before


# --- which shop a compliance body names ------------------------------------------------------


@pytest.mark.parametrize("topic", DESTRUCTIVE)
async def test_a_body_naming_another_shop_is_400(backend, served, http, topic):
    c, d = await two_stores(backend, http, served)
    before = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    cases = [
        compliance_body(topic, SHOP_D, D_ID),  # D's own request, under C's domain
        compliance_body(topic, None, D_ID),  # by D's id only
        compliance_body(topic, SHOP_C, D_ID),  # C's domain, D's id: contradictory
        compliance_body(topic, None, 12345),  # an id that is not C's
    ]
    for payload in cases:
        response = await send(http, served, topic, SHOP_C, payload)
        assert response.status_code == 400, (payload, response.text)
    after = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    assert after == before


@pytest.mark.parametrize("topic", DESTRUCTIVE)
async def test_a_body_naming_no_shop_is_stored_ignored(backend, served, http, topic):
    """Placeholders only (Shopify's samples), and no id held: kept for a replay, not applied."""
    c, d = await two_stores(backend, http, served, c_id=None)
    before = (await snapshot(backend, c), await snapshot(backend, d))

    response = await send(http, served, topic, SHOP_C, compliance_body(topic, None, C_ID))

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, response.json()["event"])
        stored = await session.scalar(select(Tenant.shopify_shop_id).where(Tenant.id == c))
    assert (event.status, event.tenant_id, event.topic) == ("ignored", c, topic)
    assert "names neither" in (event.error or "")
    assert stored is None  # a body naming no domain teaches no id
    assert (await snapshot(backend, d)) == before[1]
    assert _without_event(await snapshot(backend, c), event.id) == before[0]


def _without_event(dump: str, event_id: int) -> str:
    def of_event(line: str) -> bool:  # the event's row, or its dedupe key's
        if line.startswith("webhook_event_keys "):
            return json.loads(line.removeprefix("webhook_event_keys "))[4] == event_id
        return line.startswith(f"webhook_events [{event_id},")

    return "\n".join(line for line in dump.splitlines() if not of_event(line))


@pytest.mark.parametrize("topic", ["shop/redact", "app/uninstalled"])
async def test_a_genuine_body_naming_the_shop_by_id_only_is_applied(backend, served, http, topic):
    c, d = await two_stores(backend, http, served)
    if topic == "shop/redact":
        # Shopify sends shop/redact 48 hours after app/uninstalled. Only the status is set, so
        # the access token still held is wiped by the redaction itself.
        async with backend.sessions() as session, session.begin():
            (await session.get_one(Tenant, c)).status = "uninstalled"
    d_before = await snapshot(backend, d)

    response = await send(http, served, topic, SHOP_C, compliance_body(topic, None, C_ID))

    assert response.json()["status"] == "processed", response.text
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, c)
    assert tenant.status == ("redacted" if topic == "shop/redact" else "uninstalled")
    assert tenant.access_token_encrypted is None
    assert await snapshot(backend, d) == d_before


async def test_the_shop_id_is_learnt_from_a_body_naming_domain_and_id(backend, served, http):
    c, _d = await two_stores(backend, http, served, c_id=None)
    request = compliance_body("customers/data_request", SHOP_C, C_ID)
    assert (await send(http, served, "customers/data_request", SHOP_C, request)).status_code == 200
    async with backend.sessions() as session:
        assert (await session.get_one(Tenant, c)).shopify_shop_id == C_ID
    # From now on a body naming C's domain with another id contradicts what we hold.
    before = (await snapshot(backend, c), await event_count(backend))
    redact = compliance_body("customers/redact", SHOP_C, C_ID + 1)
    response = await send(http, served, "customers/redact", SHOP_C, redact)
    assert response.status_code == 400
    assert str(C_ID) in response.json()["error"]
    assert (await snapshot(backend, c), await event_count(backend)) == before


async def test_a_shop_id_another_store_holds_is_not_learnt(backend, served, http):
    c, d = await two_stores(backend, http, served, c_id=None)
    before = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    request = compliance_body("customers/data_request", SHOP_C, D_ID)
    response = await send(http, served, "customers/data_request", SHOP_C, request)
    assert response.status_code == 400
    assert SHOP_D in response.json()["error"]
    after = (await snapshot(backend, c), await snapshot(backend, d), await event_count(backend))
    assert after == before


# --- the shop id from the backfill, then the waiting event replayed --------------------------


@pytest.fixture
def simulated_c() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP_C, seed=3, customers=5, products=5, orders=5, clock=clock)
    with FakeShopServer(store) as server:
        yield store, clock, server


async def backfill(backend: Backend, simulated: Any, tenant_id: int) -> SyncJob:
    store, clock, server = simulated
    async with httpx.AsyncClient(timeout=10) as client:
        env = simulator_environment(
            backend.sessions, client, server.admin_base_url_template, store, clock
        )
        async with backend.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, tenant_id)
            job = await create_sync_job(session, tenant, "full")
        await run_sync_job(env, job.id)
    async with backend.sessions() as session:
        return await session.get_one(SyncJob, job.id)


async def test_backfill_learns_the_shop_id_and_a_waiting_redact_then_applies(
    backend, served, http, simulated_c, tmp_path
):
    store = simulated_c[0]
    c = await create_tenant(backend.sessions, SHOP_C, access_token=store.access_token)
    by_id_only = compliance_body("shop/redact", None, store.shop_id)
    response = await send(http, served, "shop/redact", SHOP_C, by_id_only)
    assert response.json()["status"] == "ignored"
    event_id = response.json()["event"]

    job = await backfill(backend, simulated_c, c)
    assert job.status == "succeeded", job.error
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, c)
        orders = await session.scalar(select(func.count()).select_from(Order))
    assert tenant.shopify_shop_id == store.shop_id
    assert orders == store.counts["orders"]

    # The id is known now, but the store is active: the redaction waits for the uninstall.
    cli = Cli(tmp_path, cli_env(backend.url))
    await cli.ok("events", "replay", "--id", str(event_id))
    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, event_id)
        orders = await session.scalar(select(func.count()).select_from(Order))
    assert event.status == "ignored"
    assert "store is active" in (event.error or "")
    assert orders == store.counts["orders"]

    uninstall = compliance_body("app/uninstalled", None, store.shop_id)
    response = await send(http, served, "app/uninstalled", SHOP_C, uninstall)
    assert response.json()["status"] == "processed", response.text
    await cli.ok("events", "replay", "--id", str(event_id))
    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, event_id)
        tenant = await session.get_one(Tenant, c)
        orders = await session.scalar(select(func.count()).select_from(Order))
    assert (event.status, tenant.status, orders) == ("processed", "redacted", 0)


async def test_a_stores_own_shop_redact_resent_while_it_is_active_changes_nothing(
    backend, served, http, tmp_path
):
    """C's genuine shop/redact (captured when C once uninstalled), re-sent under C's own
    header after C reinstalled: Shopify sends shop/redact only 48 hours after an uninstall,
    so for an active store it is kept `ignored`. Once C uninstalls, its replay applies."""
    c, d = await two_stores(backend, http, served)
    before = (await snapshot(backend, c), await snapshot(backend, d))

    redact = compliance_body("shop/redact", SHOP_C, C_ID)
    response = await send(http, served, "shop/redact", SHOP_C, redact)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ignored"
    event_id = response.json()["event"]
    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, event_id)
    assert (event.status, event.tenant_id, event.topic) == ("ignored", c, "shop/redact")
    assert "store is active" in (event.error or "")
    assert "events replay --id" in (event.error or "")
    assert _without_event(await snapshot(backend, c), event_id) == before[0]
    assert await snapshot(backend, d) == before[1]

    uninstall = compliance_body("app/uninstalled", SHOP_C, C_ID)
    response = await send(http, served, "app/uninstalled", SHOP_C, uninstall)
    assert response.json()["status"] == "processed", response.text
    d_before = await snapshot(backend, d)

    await Cli(tmp_path, cli_env(backend.url)).ok("events", "replay", "--id", str(event_id))

    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, event_id)
        tenant = await session.get_one(Tenant, c)
        orders = await session.scalar(
            select(func.count()).select_from(Order).where(Order.tenant_id == c)
        )
    assert (event.status, event.error) == ("processed", None)
    assert (tenant.status, tenant.webhook_secrets_encrypted, orders) == ("redacted", None, 0)
    assert await snapshot(backend, d) == d_before


@pytest.mark.parametrize("holder", ["this store", "another store"])
async def test_backfill_refuses_a_shop_whose_id_contradicts_ours(backend, simulated_c, holder):
    store = simulated_c[0]
    c = await create_tenant(backend.sessions, SHOP_C, access_token=store.access_token)
    other = await create_tenant(backend.sessions, SHOP_D)
    async with backend.sessions() as session, session.begin():
        if holder == "this store":
            (await session.get_one(Tenant, c)).shopify_shop_id = C_ID
        else:
            (await session.get_one(Tenant, other)).shopify_shop_id = store.shop_id
    job = await backfill(backend, simulated_c, c)
    assert job.status == "failed"
    assert str(store.shop_id) in (job.error or "")
    async with backend.sessions() as session:
        held = await session.scalar(select(Tenant.shopify_shop_id).where(Tenant.id == c))
        orders = await session.scalar(select(func.count()).select_from(Order))
    assert held == (C_ID if holder == "this store" else None)
    assert orders == 0


async def test_a_replay_of_an_event_stored_before_the_checks_changes_nothing(
    backend, served, http, tmp_path
):
    """An inbox row from before this check (an order body under shop/redact, failed) is
    checked again when replayed, not applied."""
    c, _d = await two_stores(backend, http, served)
    async with backend.sessions() as session, session.begin():
        stored = WebhookEvent(
            tenant_id=c,
            shop_domain=SHOP_C,
            topic="shop/redact",
            dedupe_key="stored-before-the-fix",
            received_at=utcnow(),
            status="failed",
            error="earlier failure",
            attempts=1,
            payload=order_version(2001, 1),
        )
        session.add(stored)
        await session.flush()
        event_id = stored.id
    before = _without_event(await snapshot(backend, c), event_id)

    await Cli(tmp_path, cli_env(backend.url)).ok("events", "replay", "--id", str(event_id))

    async with backend.sessions() as session:
        event = await session.get_one(WebhookEvent, event_id)
    assert event.status == "ignored"
    assert "shop/redact" in (event.error or "")
    assert _without_event(await snapshot(backend, c), event_id) == before
