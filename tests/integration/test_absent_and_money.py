"""Absent is not null (customer webhooks of 2025-01 and later, purchasing summaries) and money
stored exactly as sent, the same on PostgreSQL and SQLite, through webhooks and the backfill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from handlers.normalize import parse_shopify_id
from models import Customer, Order, WebhookEvent
from receiver.samples import sample_payload
from tests.factories import create_tenant
from tests.fakeshop.rest import RestRenderer
from tests.integration import test_backfill
from tests.integration.test_backfill import SHOP, Shop, node_of
from tests.integration.test_compliance import post

# The backfill tests' simulated store and synced tenant, as fixtures of this module too.
simulator = test_backfill.simulator
shop = test_backfill.shop

# Exact amounts that NUMERIC(20, 4) rounded and a float would blur.
AMOUNTS = ("12.3456789", "1e-7", "0.10")


@pytest.fixture
def store_options() -> dict[str, Any]:
    return {"customers": 20, "products": 5, "orders": 20}


async def customer_row(backend: Any, shopify_id: int) -> Customer:
    async with backend.sessions() as session:
        row = await session.scalar(select(Customer).where(Customer.shopify_id == shopify_id))
    assert row is not None
    return row


def summary(customer_id: int, amount: str, count: int, occurred: datetime) -> dict[str, Any]:
    return sample_payload("customers/purchasing_summary") | {
        "customerId": f"gid://shopify/Customer/{customer_id}",
        "amountSpent": {"amount": amount, "currencyCode": "EUR"},
        "numberOfOrders": count,
        "occurredAt": occurred.isoformat(),
    }


async def test_current_customer_webhook_keeps_the_backfill_s_numbers(shop: Shop, served, http):
    job = await shop.sync("full", ["customers"])
    assert job.status == "succeeded"
    node = node_of(shop.store, "customers", 2)
    assert node is not None
    customer_id = parse_shopify_id(node["id"])
    before = await customer_row(shop.backend, customer_id)
    assert before.amount_spent == Decimal(node["amountSpent"]["amount"])
    assert before.orders_count == int(node["numberOfOrders"])

    # What Shopify sends since 2025-01: no total_spent, no orders_count.
    payload = RestRenderer(shop.store, spend="current").customer(node) | {
        "first_name": "Renamed",
        "updated_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    assert "total_spent" not in payload
    assert await post(http, served, "customers/update", payload, shop=SHOP) == "processed"

    after = await customer_row(shop.backend, customer_id)
    assert after.first_name == "Renamed"
    assert (after.amount_spent, after.currency, after.orders_count) == (
        before.amount_spent,
        before.currency,
        before.orders_count,
    )


async def test_purchasing_summaries_apply_in_the_order_they_occurred(backend, served, http):
    await create_tenant(backend.sessions)
    customer = sample_payload("customers/create")
    start = datetime(2026, 11, 21, 9, tzinfo=UTC)
    # The summary arrives before the customer: the row is started with the numbers only.
    newer = summary(customer["id"], "300.50", 5, start + timedelta(hours=2))
    assert await post(http, served, "customers/purchasing_summary", newer) == "processed"
    assert await post(http, served, "customers/create") == "processed"
    older = summary(customer["id"], "100.00", 2, start)
    assert await post(http, served, "customers/purchasing_summary", older) == "processed"

    row = await customer_row(backend, customer["id"])
    assert row.email == customer["email"]
    assert (row.amount_spent, row.currency, row.orders_count) == (Decimal("300.50"), "EUR", 5)

    latest = summary(customer["id"], "12.3456789", 6, start + timedelta(hours=3))
    assert await post(http, served, "customers/purchasing_summary", latest) == "processed"
    row = await customer_row(backend, customer["id"])
    assert (row.amount_spent, row.orders_count) == (Decimal("12.3456789"), 6)
    assert row.amount_spent.as_tuple() == Decimal("12.3456789").as_tuple()


async def test_purchasing_summary_never_revives_a_deleted_customer(backend, served, http):
    await create_tenant(backend.sessions)
    customer = sample_payload("customers/create")
    assert await post(http, served, "customers/create") == "processed"
    assert await post(http, served, "customers/delete") == "processed"
    late = summary(customer["id"], "5.00", 1, datetime.now(UTC))
    assert await post(http, served, "customers/purchasing_summary", late) == "processed"
    row = await customer_row(backend, customer["id"])
    assert row.deleted_at is not None
    assert row.amount_spent is None


async def test_webhook_money_is_stored_exactly_as_sent(backend, served, http):
    await create_tenant(backend.sessions)
    for index, amount in enumerate(AMOUNTS):
        payload = sample_payload("orders/create") | {
            "id": 7000 + index,
            "admin_graphql_api_id": f"gid://shopify/Order/{7000 + index}",
            "total_price": amount,
            "subtotal_price": amount,
        }
        assert await post(http, served, "orders/create", payload) == "processed"
    async with backend.sessions() as session:
        rows = {
            row.shopify_id: row
            for row in await session.scalars(select(Order).where(Order.shopify_id >= 7000))
        }
    for index, amount in enumerate(AMOUNTS):
        stored = rows[7000 + index].total_price
        assert stored == Decimal(amount)
        # Same digits and exponent: 0.10 is not 0.1, 1e-7 is not 0.0000.
        assert stored.as_tuple() == Decimal(amount).as_tuple(), (backend.name, amount)


async def test_backfill_money_is_stored_exactly_as_sent(shop: Shop):
    for index, amount in enumerate(AMOUNTS):
        shop.store.update_customer(
            index, amountSpent={"amount": amount, "currencyCode": shop.store.currency}
        )
    job = await shop.sync("full", ["customers"])
    assert job.status == "succeeded"
    for index, amount in enumerate(AMOUNTS):
        node = node_of(shop.store, "customers", index)
        assert node is not None
        assert node["amountSpent"]["amount"] == amount
        row = await customer_row(shop.backend, parse_shopify_id(node["id"]))
        assert row.amount_spent is not None
        assert row.amount_spent.as_tuple() == Decimal(amount).as_tuple()


@pytest.mark.parametrize(
    "amount",
    ["1e999999", "1." + "0" * 10_000, "1e-999999", "1E+2000", "Infinity", "1_000"],
)
async def test_hostile_amount_is_a_failed_event_not_an_error(backend, served, http, amount):
    await create_tenant(backend.sessions)
    payload = sample_payload("orders/create") | {"total_price": amount}
    assert await post(http, served, "orders/create", payload) == "failed"
    async with backend.sessions() as session:
        event = await session.scalar(select(WebhookEvent))
        order = await session.scalar(select(Order))
    assert event is not None
    assert event.error is not None
    assert event.error.startswith("PayloadError: order.total_price")
    assert len(event.error) < 200
    assert order is None


async def test_an_equal_amount_written_in_another_form_reads_back_the_same_on_both(
    backend, served, http
):
    """`1E+2` and `-0.00` have no form of their own in PostgreSQL: both backends keep 100 and
    0.00, so a row never depends on the database it is in."""
    await create_tenant(backend.sessions)
    for index, (sent, kept) in enumerate((("1E+2", "100"), ("-0.00", "0.00"))):
        payload = sample_payload("orders/create") | {
            "id": 7100 + index,
            "admin_graphql_api_id": f"gid://shopify/Order/{7100 + index}",
            "total_price": sent,
        }
        assert await post(http, served, "orders/create", payload) == "processed"
        async with backend.sessions() as session:
            stored = await session.scalar(
                select(Order.total_price).where(Order.shopify_id == 7100 + index)
            )
        assert stored is not None
        assert stored.as_tuple() == Decimal(kept).as_tuple()
