"""An order's line items, refunds and fulfillments, a product's variants and a customer's
addresses, written from signed webhooks through the served app with their parent, on both
backends: every listed column from Shopify's sample payloads, tombstones for children that
vanish from a complete list, and nothing from an older payload."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from models import (
    CustomerAddress,
    Fulfillment,
    Order,
    OrderLineItem,
    OrderRefund,
    OrderRefundLineItem,
    ProductVariant,
    ShopRecord,
)
from receiver.samples import sample_payload
from tests.conftest import Backend, ServedApp
from tests.factories import create_tenant, delivery

ORDER_ID = 820982911946154508
PRODUCT_ID = 788032119674292922
CUSTOMER_ID = 706405506930370084


async def post(http: httpx.AsyncClient, served: ServedApp, topic: str, payload: Any) -> str:
    body, headers = delivery(topic, payload)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def rows(backend: Backend, model: type[ShopRecord], **where: Any) -> list[Any]:
    async with backend.sessions() as session:
        query = select(model).order_by(model.shopify_id)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return list(await session.scalars(query))


def later(payload: dict[str, Any], minutes: int) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    stamp = datetime.fromisoformat(changed["updated_at"]).astimezone(UTC)
    changed["updated_at"] = stamp.replace(minute=(stamp.minute + minutes) % 60).isoformat()
    return changed


async def test_an_orders_children_land_with_every_listed_column(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    payload = sample_payload("orders/cancelled")
    assert await post(http, served, "orders/cancelled", payload) == "processed"

    items = await rows(backend, OrderLineItem, order_shopify_id=ORDER_ID)
    sample_items = sorted(payload["line_items"], key=lambda item: item["id"])
    assert [item.shopify_id for item in items] == [item["id"] for item in sample_items]
    first, expected = items[0], sample_items[0]
    assert (
        first.product_shopify_id, first.variant_shopify_id, first.sku, first.title,
        first.variant_title, first.vendor, first.quantity, first.current_quantity,
        first.price, first.total_discount, first.currency, first.taxable,
        first.requires_shipping, first.gift_card, first.fulfillable_quantity,
        first.fulfillment_status,
    ) == (
        expected["product_id"], expected["variant_id"], expected["sku"], expected["title"],
        expected["variant_title"], expected["vendor"], expected["quantity"],
        expected["current_quantity"], Decimal(expected["price"]),
        Decimal(expected["total_discount"]), "USD", expected["taxable"],
        expected["requires_shipping"], expected["gift_card"],
        expected["fulfillable_quantity"], expected["fulfillment_status"],
    )  # fmt: skip
    assert first.raw is not None
    assert first.raw["id"] == expected["id"]

    [refund] = await rows(backend, OrderRefund, order_shopify_id=ORDER_ID)
    assert (refund.shopify_id, refund.note, refund.total_refunded, refund.currency) == (
        909786001469, "Customer changed their mind before delivery.", Decimal("112.96"), "USD"
    )  # fmt: skip
    assert refund.processed_at == datetime(2026, 11, 21, 20, 48, 25, tzinfo=UTC)
    refunded_items = await rows(backend, OrderRefundLineItem, refund_shopify_id=909786001469)
    assert len(refunded_items) == len(payload["refunds"][0]["refund_line_items"])
    refunded = next(row for row in refunded_items if row.shopify_id == 485934923837)
    assert (
        refunded.shopify_id, refunded.order_shopify_id, refunded.line_item_shopify_id,
        refunded.location_shopify_id, refunded.quantity, refunded.subtotal,
        refunded.total_tax, refunded.currency, refunded.restock_type,
    ) == (
        485934923837, ORDER_ID, 487817672276298554, 74836852797, 2, Decimal("59.98"),
        Decimal("7.80"), "USD", "cancel",
    )  # fmt: skip

    fulfillments = await rows(backend, Fulfillment, order_shopify_id=ORDER_ID)
    assert len(fulfillments) == len(payload["fulfillments"]) == 2
    cancelled = next(row for row in fulfillments if row.shopify_id == 5938173476925)
    assert (
        cancelled.name,
        cancelled.status,
        cancelled.shipment_status,
        cancelled.location_shopify_id,
        cancelled.tracking_company,
        cancelled.tracking_numbers,
    ) == ("#1001.1", "cancelled", None, 74836852797, "Canada Post", ["7023210039414604"])
    assert cancelled.tracking_urls
    assert cancelled.tracking_urls[0].startswith("https://")
    assert cancelled.shopify_updated_at == datetime(2026, 11, 21, 20, 46, 2, tzinfo=UTC)


async def test_a_line_item_removed_by_an_edit_is_tombstoned_and_an_older_body_changes_nothing(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    original = sample_payload("orders/updated")
    assert await post(http, served, "orders/updated", original) == "processed"
    kept, removed = sorted(item["id"] for item in original["line_items"])

    edited = later(original, 5)
    edited["line_items"] = [item for item in edited["line_items"] if item["id"] == kept]
    edited["line_items"][0]["current_quantity"] = 7
    assert await post(http, served, "orders/updated", edited) == "processed"
    by_id = {row.shopify_id: row for row in await rows(backend, OrderLineItem)}
    assert by_id[removed].deleted_at is not None
    assert (by_id[kept].deleted_at, by_id[kept].current_quantity) == (None, 7)

    # The original, redelivered late (a new webhook id): the order refuses it, and so do its
    # children: the removed line item stays removed, the quantity stays 7.
    stale = copy.deepcopy(original)
    stale["line_items"][0]["vendor"] = "stale"
    assert await post(http, served, "orders/updated", stale) == "processed"
    by_id = {row.shopify_id: row for row in await rows(backend, OrderLineItem)}
    assert by_id[removed].deleted_at is not None
    assert by_id[kept].current_quantity == 7
    assert "stale" not in {row.vendor for row in by_id.values()}


async def test_an_update_rewrites_only_the_children_it_changes(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    original = sample_payload("orders/fulfilled")
    assert await post(http, served, "orders/updated", original) == "processed"
    written = {
        model: {row.shopify_id: row.synced_at for row in await rows(backend, model)}
        for model in (OrderLineItem, Fulfillment)
    }
    [order_written] = [row.synced_at for row in await rows(backend, Order)]
    assert all(len(by_id) == 2 for by_id in written.values())

    # A tag added: the order is rewritten, its line items and fulfillments are the same.
    tagged = later(original, 5)
    tagged["tags"] = "vip"
    assert await post(http, served, "orders/updated", tagged) == "processed"
    [order] = await rows(backend, Order)
    assert order.synced_at > order_written
    for model, by_id in written.items():
        assert {row.shopify_id: row.synced_at for row in await rows(backend, model)} == by_id

    # One line item's quantity and one fulfillment's status (with its own newer updated_at)
    # change: those two rows are rewritten, their siblings are not.
    changed = later(tagged, 5)
    changed_item = changed["line_items"][0]
    changed_item["current_quantity"] = 9
    fulfillment = changed["fulfillments"][0]
    fulfillment["shipment_status"] = "delivered"
    fulfillment["updated_at"] = changed["updated_at"]
    assert await post(http, served, "orders/updated", changed) == "processed"
    items = {row.shopify_id: row for row in await rows(backend, OrderLineItem)}
    assert items[changed_item["id"]].current_quantity == 9
    assert {key for key, row in items.items() if row.synced_at != written[OrderLineItem][key]} == {
        changed_item["id"]
    }
    fulfillments = {row.shopify_id: row for row in await rows(backend, Fulfillment)}
    assert fulfillments[fulfillment["id"]].shipment_status == "delivered"
    assert {
        key for key, row in fulfillments.items() if row.synced_at != written[Fulfillment][key]
    } == {fulfillment["id"]}


async def test_a_body_without_a_child_list_leaves_the_stored_children_alone(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, "orders/fulfilled", sample_payload("orders/fulfilled")) == (
        "processed"
    )
    before = [(row.shopify_id, row.deleted_at) for row in await rows(backend, Fulfillment)]
    assert len(before) == 2
    without = later(sample_payload("orders/fulfilled"), 10)
    del without["fulfillments"], without["line_items"]
    assert await post(http, served, "orders/updated", without) == "processed"
    assert [(row.shopify_id, row.deleted_at) for row in await rows(backend, Fulfillment)] == before
    assert all(row.deleted_at is None for row in await rows(backend, OrderLineItem))


async def test_variants_with_their_options_and_a_removed_variant_tombstoned(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    payload = sample_payload("products/create")
    assert await post(http, served, "products/create", payload) == "processed"
    variants = await rows(backend, ProductVariant, product_shopify_id=PRODUCT_ID)
    sample = sorted(payload["variants"], key=lambda variant: variant["id"])
    assert [variant.shopify_id for variant in variants] == [variant["id"] for variant in sample]
    first, expected = variants[0], sample[0]
    option_name = payload["options"][0]["name"]
    assert (
        first.title, first.sku, first.barcode, first.price, first.compare_at_price,
        first.position, first.inventory_item_shopify_id, first.inventory_quantity,
        first.selected_options, first.taxable,
    ) == (
        expected["title"], expected["sku"], expected["barcode"], Decimal(expected["price"]),
        None if expected["compare_at_price"] is None else Decimal(expected["compare_at_price"]),
        expected["position"], expected["inventory_item_id"], expected["inventory_quantity"],
        [{"name": option_name, "value": expected["option1"]}], expected["taxable"],
    )  # fmt: skip

    update = later(sample_payload("products/update"), 30)
    gone = update["variants"].pop()["id"]
    # A removed variant leaves `variant_gids` too (that list names every variant).
    update["variant_gids"] = [
        entry
        for entry in update["variant_gids"]
        if not entry["admin_graphql_api_id"].endswith(f"/{gone}")
    ]
    assert await post(http, served, "products/update", update) == "processed"
    by_id = {row.shopify_id: row for row in await rows(backend, ProductVariant)}
    assert by_id[gone].deleted_at is not None
    assert all(by_id[v["id"]].deleted_at is None for v in update["variants"])


async def test_a_customers_addresses_and_its_default(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    payload = sample_payload("customers/create")
    second = copy.deepcopy(payload["addresses"][0]) | {
        "id": 8472310153285, "default": False, "city": "Toronto", "province_code": "ON",
    }  # fmt: skip
    payload["addresses"].append(second)
    assert await post(http, served, "customers/create", payload) == "processed"
    addresses = await rows(backend, CustomerAddress, customer_shopify_id=CUSTOMER_ID)
    assert [(row.shopify_id, row.is_default, row.city) for row in addresses] == [
        (8472310153284, True, "Ottawa"),
        (8472310153285, False, "Toronto"),
    ]
    home = addresses[0]
    assert (
        home.first_name, home.last_name, home.name, home.address1, home.address2, home.zip,
        home.province, home.province_code, home.country, home.country_code, home.phone,
    ) == (
        "Russell", "Winfield", "Russell Winfield", "151 O'Connor Street", "Suite 400",
        "K2P 2L8", "Ontario", "ON", "Canada", "CA", "+16135551111",
    )  # fmt: skip
