"""Compliance topics and app/uninstalled: personal data really leaves the database."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select, text

from backfill.queue import procrastinate_app, run_worker
from backfill.runner import BackfillEnvironment
from handlers.compliance import export_customer
from models import (
    Base,
    ComplianceRequest,
    Customer,
    CustomerAddress,
    Fulfillment,
    Order,
    OrderRefund,
    OrderTransaction,
    Tenant,
    WebhookEvent,
    create_engine,
    create_session_factory,
)
from models.encryption import SecretBox
from receiver.samples import sample_payload
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, ServedApp, as_app_role
from tests.factories import OTHER_SHOP, SHOP, create_tenant, delivery

# What the samples say about customer 706405506930370084 that identifies the person.
PERSONAL_STRINGS = (
    "russell.winfield@example.com",
    "+16135551111",
    "Russell",
    "Winfield",
    "O'Connor",
    "203.0.113.42",
    # The order's children: a refund's note, a transaction's cardholder name (payment_details),
    # a fulfillment's destination and email (their own topics' bodies).
    "Arrived torn; customer keeps the item.",
    "Russell Winfield",
    "K2P 2L8",
)
CUSTOMER_ID = 706405506930370084
ORDER_ID = 820982911946154508


async def post(
    http: httpx.AsyncClient, served: ServedApp, topic: str, payload: dict | None = None, **kw
) -> str:
    body, headers = delivery(topic, payload, **kw)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def run_queued_jobs(backend: Backend, served: ServedApp) -> None:
    """Let the jobs the served app queued run to their end: on SQLite its in-process runner;
    on PostgreSQL a worker (as the app's role) that drains procrastinate's queue."""
    if backend.name == "sqlite":
        await served.settle()
        return
    engine = create_engine(as_app_role(backend.url))
    try:
        async with httpx.AsyncClient() as client:
            env = BackfillEnvironment(
                sessions=create_session_factory(engine),
                http=client,
                box=SecretBox([TEST_ENCRYPTION_KEY]),
                admin_base_url="http://127.0.0.1:9/{shop}",
                api_version="2026-10",
            )
            queue = procrastinate_app(backend.url)
            async with queue.open_async():
                await run_worker(queue, env, concurrency=1, wait=False)
    finally:
        await engine.dispose()


async def dump_tenant(backend: Backend, tenant_id: int) -> str:
    """Every column of every row the tenant owns, as text, read straight from the tables."""
    chunks = []
    async with backend.sessions() as session:
        for table in Base.metadata.sorted_tables:
            if "tenant_id" not in table.c:
                continue
            rows = await session.execute(
                text(f"SELECT * FROM {table.name} WHERE tenant_id = :tenant"), {"tenant": tenant_id}
            )
            chunks.extend(json.dumps(list(row), default=str) for row in rows)
    return "\n".join(chunks)


def other_customer() -> tuple[dict, dict]:
    customer = sample_payload("customers/create") | {
        "id": 111,
        "email": "ada@example.org",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "phone": "+442071234567",
        "default_address": None,
        "addresses": [],
    }
    order = sample_payload("orders/create") | {
        "id": 222,
        "email": "ada@example.org",
        "contact_email": "ada@example.org",
        "customer": {"id": 111, "email": "ada@example.org", "first_name": "Ada"},
        "billing_address": None,
        "shipping_address": None,
        "client_details": None,
        "browser_ip": None,
    }
    # Line item ids are unique in a store: another order's are its own.
    order["line_items"] = [
        item | {"id": 2220 + position} for position, item in enumerate(order["line_items"])
    ]
    return customer, order


async def seed_store(http: httpx.AsyncClient, served: ServedApp) -> None:
    for topic in (
        "customers/create",
        "customers/purchasing_summary",
        "orders/create",
        "orders/paid",
        "refunds/create",
        "order_transactions/create",
        "fulfillments/create",
        "customers/data_request",
    ):
        assert await post(http, served, topic) == "processed"
    customer, order = other_customer()
    assert await post(http, served, "customers/create", customer) == "processed"
    assert await post(http, served, "orders/create", order) == "processed"


async def test_customer_redact_removes_personal_data_everywhere(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    await seed_store(http, served)
    before = await dump_tenant(backend, tenant_id)
    assert all(value in before for value in PERSONAL_STRINGS)  # the check below can fail

    assert await post(http, served, "customers/redact") == "processed"
    await run_queued_jobs(backend, served)

    after = await dump_tenant(backend, tenant_id)
    leaked = [value for value in PERSONAL_STRINGS if value in after]
    assert leaked == []
    async with backend.sessions() as session:
        customer = await session.scalar(select(Customer).where(Customer.shopify_id == CUSTOMER_ID))
        order = await session.scalar(select(Order).where(Order.shopify_id == ORDER_ID))
        redact_request = await session.scalar(
            select(ComplianceRequest).where(ComplianceRequest.topic == "customers/redact")
        )
    # Ids and non-personal facts stay, so the books still add up.
    assert customer is not None
    assert (customer.email, customer.first_name, customer.phone) == (None, None, None)
    assert customer.orders_count is not None
    assert order is not None
    assert order.email is None
    assert order.customer_shopify_id == CUSTOMER_ID
    assert order.total_price is not None
    assert order.raw["line_items"][0]["title"]
    assert redact_request is not None
    assert redact_request.completed_at is not None
    assert redact_request.payload["customer"]["id"] == CUSTOMER_ID
    # Its address book rows stay as ids with nothing that locates the person.
    async with backend.sessions() as session:
        addresses = list(
            await session.scalars(
                select(CustomerAddress).where(CustomerAddress.customer_shopify_id == CUSTOMER_ID)
            )
        )
    assert addresses
    for address in addresses:
        assert (address.address1, address.city, address.zip, address.name) == (None,) * 4
        assert address.raw == {"id": address.shopify_id}
    # The order's refund, transactions and fulfillment keep their facts, not the person.
    async with backend.sessions() as session:
        [refund] = await session.scalars(
            select(OrderRefund).where(OrderRefund.shopify_id == 909786034237)
        )
        [capture] = await session.scalars(
            select(OrderTransaction).where(OrderTransaction.shopify_id == 7291811061821)
        )
        [shipped] = await session.scalars(
            select(Fulfillment).where(Fulfillment.shopify_id == 5938173509693)
        )
    assert (refund.note, refund.total_refunded is not None) == (None, True)
    assert refund.raw["refund_line_items"][0]["quantity"] == 1
    assert capture.amount is not None
    assert capture.raw["payment_details"]["credit_card_name"] is None
    assert capture.raw["payment_details"]["credit_card_company"] == "Visa"
    assert (shipped.raw["destination"], shipped.raw["email"]) == (None, None)
    assert shipped.tracking_numbers == ["1Z999AA10123456784"]
    # The other customer of the same store is untouched.
    assert "ada@example.org" in after
    assert "Lovelace" in after


async def test_shop_redact_deletes_everything_for_that_shop_only(backend, served, http):
    tenant_id = await create_tenant(backend.sessions, SHOP, webhook_secrets=["alpha"])
    other_id = await create_tenant(backend.sessions, OTHER_SHOP)
    await seed_store(http, served)
    assert await post(http, served, "orders/create", shop=OTHER_SHOP) == "processed"
    other_before = await dump_tenant(backend, other_id)

    # Shopify sends shop/redact 48 hours after the uninstall; to an active store it is ignored.
    assert await post(http, served, "app/uninstalled") == "processed"
    # seed_store's data request named the shop by domain and id, so that id is now held.
    shop_id = sample_payload("customers/data_request")["shop_id"]
    assert await post(http, served, "shop/redact", {"shop_id": shop_id, "shop_domain": SHOP}) == (
        "processed"
    )

    async with backend.sessions() as session:
        for model in (Customer, Order):
            rows = await session.scalars(select(model).where(model.tenant_id == tenant_id))
            assert rows.all() == []
        events = (
            await session.scalars(select(WebhookEvent).where(WebhookEvent.tenant_id == tenant_id))
        ).all()
        tenant = await session.get_one(Tenant, tenant_id)
    assert [event.topic for event in events] == ["shop/redact"]
    assert tenant.status == "redacted"
    assert tenant.webhook_secrets_encrypted is None
    assert tenant.access_token_encrypted is None
    remaining = await dump_tenant(backend, tenant_id)
    assert [value for value in PERSONAL_STRINGS if value in remaining] == []
    assert await dump_tenant(backend, other_id) == other_before


async def test_data_request_is_recorded_and_exportable(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    await seed_store(http, served)
    async with backend.sessions() as session, session.begin():
        export = await export_customer(session, tenant_id, CUSTOMER_ID)
    assert export["customer"]["email"] == "russell.winfield@example.com"
    assert [order["shopify_id"] for order in export["orders"]] == [ORDER_ID]
    children = export["children"]
    assert [row["shopify_id"] for row in children["order_refunds"]] == [909786034237]
    assert [row["shopify_id"] for row in children["fulfillments"]] == [5938173509693]
    # The capture (its own topic) and the refund's transaction (inside the refund).
    assert sorted(row["shopify_id"] for row in children["order_transactions"]) == [
        7291811061821,
        7291833516109,
    ]
    assert children["customer_addresses"][0]["city"] == "Ottawa"
    assert {row["order_shopify_id"] for row in children["order_line_items"]} == {ORDER_ID}
    assert [request["topic"] for request in export["compliance_requests"]] == [
        "customers/data_request"
    ]
    exported_topics = sorted(event["topic"] for event in export["webhook_events"])
    assert exported_topics == [
        "customers/create",
        "customers/data_request",
        "customers/purchasing_summary",
        "fulfillments/create",
        "order_transactions/create",
        "orders/create",
        "orders/paid",
        "refunds/create",
    ]
    async with backend.sessions() as session:
        request = await session.scalar(select(ComplianceRequest))
    assert request is not None
    assert request.completed_at is not None


async def test_uninstall_wipes_the_token_and_stops_data_topics(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        tenant.access_token_encrypted = "encrypted-token-placeholder"

    assert await post(http, served, "app/uninstalled") == "processed"
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, tenant_id)
    assert tenant.status == "uninstalled"
    assert tenant.access_token_encrypted is None
    assert tenant.uninstalled_at is not None

    assert await post(http, served, "orders/create") == "ignored"
    # Compliance topics keep working after uninstall: shop/redact comes 48 hours later.
    assert await post(http, served, "customers/redact") == "processed"
    async with backend.sessions() as session:
        assert (await session.scalars(select(Order))).all() == []
