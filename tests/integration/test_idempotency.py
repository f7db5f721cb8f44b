"""Exactly-once effect and order safety: duplicates, permutations, tombstones, convergence."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from handlers import normalize_customer, normalize_order, normalize_product, upsert_records
from models import Customer, Order, Product, ShopRecord, WebhookEvent
from receiver.samples import sample_payload
from tests.conftest import Backend, ServedApp
from tests.factories import ORDER_COLUMNS, SHOP, create_tenant, delivery, order_version


async def post(http: httpx.AsyncClient, served: ServedApp, topic: str, payload: dict) -> str:
    body, headers = delivery(topic, payload)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def stored(backend: Backend, model: type[ShopRecord], shopify_id: int) -> ShopRecord | None:
    async with backend.sessions() as session:
        return await session.scalar(select(model).where(model.shopify_id == shopify_id))


async def test_duplicate_storm_leaves_one_event_and_one_row(backend, served, http):
    await create_tenant(backend.sessions)
    body, headers = delivery("orders/create")
    responses = await asyncio.gather(
        *(http.post(served.webhook_url, content=body, headers=headers) for _ in range(5))
    )
    assert [response.status_code for response in responses] == [200] * 5
    outcomes = sorted(response.json()["status"] for response in responses)
    assert outcomes == ["duplicate"] * 4 + ["processed"]
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookEvent)) == 1
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
        event = await session.scalar(select(WebhookEvent))
    assert event is not None
    # Redeliveries change no data, but each one counts as a dedupe hit on the dashboard.
    assert event.duplicate_count == 4
    assert event.last_duplicate_at is not None
    assert event.last_duplicate_at >= event.received_at


async def test_redelivery_with_new_ids_converges_on_one_row(backend, served, http):
    """Two subscriptions, or a replay with fresh headers: new event ids, same record."""
    await create_tenant(backend.sessions)
    payload = sample_payload("orders/create")
    statuses = await asyncio.gather(
        *(post(http, served, "orders/create", payload) for _ in range(5))
    )
    assert statuses == ["processed"] * 5
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(range(1, 7)),
    order_id=st.integers(min_value=1, max_value=2**63 - 1),
)
async def test_out_of_order_updates_end_with_the_newest(backend, served, http, order, order_id):
    if not await _tenant_exists(backend):
        await create_tenant(backend.sessions)
    newest = max(order)
    for version in order:
        await post(http, served, "orders/updated", order_version(order_id, version))
    row = await stored(backend, Order, order_id)
    assert row is not None
    expected = order_version(order_id, newest)
    assert row.name == expected["name"]
    assert row.total_price == Decimal(expected["total_price"])
    assert row.raw["note"] == f"version {newest}"
    assert row.shopify_updated_at == datetime.fromisoformat(expected["updated_at"])


async def _tenant_exists(backend: Backend) -> bool:
    from models import Tenant

    async with backend.sessions() as session:
        return await session.scalar(select(Tenant.id).where(Tenant.shop_domain == SHOP)) is not None


async def test_delete_then_older_update_stays_deleted(backend, served, http):
    await create_tenant(backend.sessions)
    order_id = 5550001
    await post(http, served, "orders/updated", order_version(order_id, 2))
    assert await post(http, served, "orders/delete", {"id": order_id}) == "processed"
    assert await post(http, served, "orders/updated", order_version(order_id, 1)) == "processed"
    row = await stored(backend, Order, order_id)
    assert row is not None
    assert row.deleted_at is not None
    assert row.name == order_version(order_id, 2)["name"]


async def test_delete_before_create_leaves_a_tombstone_the_create_cannot_undo(
    backend, served, http
):
    await create_tenant(backend.sessions)
    cases = [
        ("products", Product, sample_payload("products/create")),
        ("customers", Customer, sample_payload("customers/create")),
        ("orders", Order, sample_payload("orders/create")),
    ]
    for resource, model, payload in cases:
        assert await post(http, served, f"{resource}/delete", {"id": payload["id"]}) == "processed"
        create_topic = "customers/create" if resource == "customers" else f"{resource}/create"
        assert await post(http, served, create_topic, payload) == "processed"
        row = await stored(backend, model, payload["id"])
        assert row is not None
        assert row.deleted_at is not None
        assert row.shopify_updated_at is None  # the create's data was refused
    async with backend.sessions() as session:
        for _, model, _ in cases:
            assert await session.scalar(select(func.count()).select_from(model)) == 1


async def test_equal_timestamps_apply_so_same_instant_topics_all_land(backend, served, http):
    """orders/paid and orders/updated often share an updated_at: the later arrival applies."""
    await create_tenant(backend.sessions)
    first = order_version(77, 3, financial_status="pending")
    second = order_version(77, 3, financial_status="paid")
    await post(http, served, "orders/updated", first)
    await post(http, served, "orders/paid", second)
    row = await stored(backend, Order, 77)
    assert row is not None
    assert row.financial_status == "paid"


def _graphql_order(rest: dict, *, updated_at: str) -> dict:
    """The GraphQL node the backfill would fetch for the same order."""
    return {
        "id": rest["admin_graphql_api_id"],
        "name": rest["name"],
        "email": rest["email"],
        "createdAt": rest["created_at"],
        "updatedAt": updated_at,
        "processedAt": rest["processed_at"],
        "cancelledAt": rest["cancelled_at"],
        "currencyCode": rest["currency"],
        "totalPriceSet": {"shopMoney": {"amount": rest["total_price"], "currencyCode": "USD"}},
        "subtotalPriceSet": {
            "shopMoney": {"amount": rest["subtotal_price"], "currencyCode": "USD"}
        },
        "displayFinancialStatus": rest["financial_status"].upper(),
        "displayFulfillmentStatus": "UNFULFILLED",
        "customer": {"id": rest["customer"]["admin_graphql_api_id"]},
    }


COMPARED = (
    "shopify_id",
    "shopify_created_at",
    "shopify_updated_at",
    "deleted_at",
    *ORDER_COLUMNS,
)


async def _write(backend: Backend, tenant_id: int, payload: dict, source: str) -> None:
    async with backend.sessions() as session, session.begin():
        await upsert_records(session, Order, tenant_id, [normalize_order(payload)], source=source)


async def _order_columns(backend: Backend, shopify_id: int) -> dict:
    row = await stored(backend, Order, shopify_id)
    assert row is not None
    return {name: getattr(row, name) for name in COMPARED}


async def test_webhook_and_backfill_writes_converge_in_either_order(backend):
    tenant_id = await create_tenant(backend.sessions)
    rest = sample_payload("orders/paid")
    rest["fulfillment_status"] = None
    graphql = _graphql_order(rest, updated_at=rest["updated_at"])
    await _write(backend, tenant_id, rest, "webhook")
    await _write(backend, tenant_id, graphql, "backfill")
    webhook_then_backfill = await _order_columns(backend, rest["id"])
    await backend.truncate()
    tenant_id = await create_tenant(backend.sessions)
    await _write(backend, tenant_id, graphql, "backfill")
    await _write(backend, tenant_id, rest, "webhook")
    backfill_then_webhook = await _order_columns(backend, rest["id"])
    assert webhook_then_backfill == backfill_then_webhook
    assert webhook_then_backfill["financial_status"] == "paid"
    assert webhook_then_backfill["fulfillment_status"] is None


async def test_older_backfill_page_never_overwrites_a_newer_webhook(backend):
    tenant_id = await create_tenant(backend.sessions)
    rest = sample_payload("orders/cancelled")
    stale = copy.deepcopy(rest) | {"financial_status": "paid", "cancelled_at": None}
    older = (datetime.fromisoformat(rest["updated_at"]) - timedelta(hours=1)).astimezone(UTC)
    await _write(backend, tenant_id, rest, "webhook")
    await _write(
        backend, tenant_id, _graphql_order(stale, updated_at=older.isoformat()), "backfill"
    )
    columns = await _order_columns(backend, rest["id"])
    assert columns["financial_status"] == rest["financial_status"]
    assert columns["cancelled_at"] is not None
    row = await stored(backend, Order, rest["id"])
    assert row is not None
    assert row.source == "webhook"


async def test_batch_upsert_keeps_the_newest_copy_of_a_repeated_id(backend):
    tenant_id = await create_tenant(backend.sessions)
    records = [normalize_order(order_version(9, version)) for version in (2, 5, 1, 4)]
    async with backend.sessions() as session, session.begin():
        await upsert_records(session, Order, tenant_id, records, source="backfill")
    row = await stored(backend, Order, 9)
    assert row is not None
    assert row.raw["note"] == "version 5"


async def test_customers_and_products_normalise_the_same_from_both_shapes(backend):
    tenant_id = await create_tenant(backend.sessions)
    # As API versions before 2025-01 sent it: with spend and order count.
    customer = sample_payload("customers/update") | {"total_spent": "199.90", "orders_count": 3}
    product = sample_payload("products/update")
    customer_node = {
        "id": f"gid://shopify/Customer/{customer['id']}",
        "email": customer["email"],
        "firstName": customer["first_name"],
        "lastName": customer["last_name"],
        "phone": customer["phone"],
        "state": customer["state"].upper(),
        "createdAt": customer["created_at"],
        "updatedAt": customer["updated_at"],
        "amountSpent": {"amount": customer["total_spent"], "currencyCode": customer["currency"]},
        "numberOfOrders": str(customer["orders_count"]),
        "note": customer["note"],
        "verifiedEmail": customer["verified_email"],
    }
    product_node = {
        "id": f"gid://shopify/Product/{product['id']}",
        "title": product["title"],
        "handle": product["handle"],
        "status": product["status"].upper(),
        "vendor": product["vendor"],
        "productType": product["product_type"],
        "tags": [tag.strip() for tag in product["tags"].split(",")],
        "createdAt": product["created_at"],
        "updatedAt": product["updated_at"],
        "publishedAt": product["published_at"],
        "category": {"fullName": product["category"]["full_name"]},
    }
    for rest, node, normalize in (
        (customer, customer_node, normalize_customer),
        (product, product_node, normalize_product),
    ):
        from_rest, from_graphql = normalize(rest), normalize(node)
        from_rest.pop("raw")
        from_graphql.pop("raw")
        assert from_rest == from_graphql
    async with backend.sessions() as session, session.begin():
        await upsert_records(
            session, Customer, tenant_id, [normalize_customer(customer)], source="webhook"
        )
        await upsert_records(
            session, Customer, tenant_id, [normalize_customer(customer_node)], source="backfill"
        )
    row = await stored(backend, Customer, customer["id"])
    assert row is not None
    assert row.amount_spent == Decimal(customer["total_spent"])
    assert row.source == "backfill"
