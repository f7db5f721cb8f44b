"""Topics whose body is one child of a record (refunds/create, order_transactions/create,
fulfillments/*), inventory items and their levels, and products whose variant list was cut
short: Shopify-shaped samples through the served app over HTTP, signed, on both backends."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models import (
    ChildRefetch,
    Fulfillment,
    InventoryItem,
    InventoryLevel,
    OrderLineItem,
    OrderRefund,
    OrderRefundLineItem,
    OrderTransaction,
    ProductVariant,
    WebhookEvent,
)
from receiver.samples import sample_payload
from tests.conftest import Backend, ServedApp
from tests.factories import create_tenant, delivery

ORDER_ID = 820982911946154508
ITEM_ID = 44120958369853
LOCATION_ID = 98765432101
CREATED = datetime(2026, 11, 18, 19, 2, 31, tzinfo=UTC)


async def post(http: httpx.AsyncClient, served: ServedApp, topic: str, payload: Any) -> str:
    body, headers = delivery(topic, payload)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def rows(backend: Backend, model: Any, **where: Any) -> list[Any]:
    async with backend.sessions() as session:
        query = select(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        found = list(await session.scalars(query))
    return sorted(found, key=lambda row: getattr(row, "shopify_id", 0))


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- refunds/create, order_transactions/create ------------------------------------------------


async def test_a_refund_lands_with_its_line_items_and_transactions(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    payload = sample_payload("refunds/create")
    assert await post(http, served, "refunds/create", payload) == "processed"

    [refund] = await rows(backend, OrderRefund)
    assert (
        refund.shopify_id, refund.order_shopify_id, refund.note, refund.processed_at,
        refund.total_refunded, refund.currency, refund.shopify_created_at, refund.deleted_at,
    ) == (
        909786034237, ORDER_ID, "Arrived torn; customer keeps the item.",
        datetime(2026, 11, 22, 16, 5, 40, tzinfo=UTC), Decimal("33.89"), "USD",
        datetime(2026, 11, 22, 16, 5, 40, tzinfo=UTC), None,
    )  # fmt: skip
    [item] = await rows(backend, OrderRefundLineItem)
    assert (
        item.shopify_id, item.refund_shopify_id, item.order_shopify_id,
        item.line_item_shopify_id, item.location_shopify_id, item.quantity, item.subtotal,
        item.total_tax, item.currency, item.restock_type,
    ) == (
        485934989373, 909786034237, ORDER_ID, 487817672276298554, None, 1, Decimal("29.99"),
        Decimal("3.90"), "USD", "no_restock",
    )  # fmt: skip
    [transaction] = await rows(backend, OrderTransaction)
    assert (
        transaction.shopify_id, transaction.order_shopify_id, transaction.kind,
        transaction.status, transaction.gateway, transaction.amount, transaction.currency,
        transaction.parent_shopify_id, transaction.processed_at, transaction.error_code,
        transaction.test,
    ) == (
        7291833516109, ORDER_ID, "refund", "success", "shopify_payments", Decimal("33.89"),
        "USD", 7291811029053, datetime(2026, 11, 22, 16, 5, 40, tzinfo=UTC), None, False,
    )  # fmt: skip


async def test_a_transaction_lands_with_every_column(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    payload = sample_payload("order_transactions/create")
    assert await post(http, served, "order_transactions/create", payload) == "processed"
    [row] = await rows(backend, OrderTransaction)
    assert (
        row.shopify_id, row.order_shopify_id, row.kind, row.status, row.gateway, row.amount,
        row.currency, row.parent_shopify_id, row.processed_at, row.error_code, row.test,
        row.shopify_created_at,
    ) == (
        7291811061821, ORDER_ID, "capture", "success", "shopify_payments", Decimal("123.47"),
        "USD", 7291811029053, datetime(2026, 11, 20, 15, 16, 2, tzinfo=UTC), None, False,
        datetime(2026, 11, 20, 15, 16, 2, tzinfo=UTC),
    )  # fmt: skip


# -- fulfillments/create, fulfillments/update -------------------------------------------------


async def test_fulfillments_land_in_order_and_one_never_tombstones_its_siblings(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    # The order's own two fulfillments first, from its webhook.
    assert await post(http, served, "orders/fulfilled", sample_payload("orders/fulfilled")) == (
        "processed"
    )
    siblings = {row.shopify_id for row in await rows(backend, Fulfillment)}
    assert len(siblings) == 2

    created = sample_payload("fulfillments/create")
    assert await post(http, served, "fulfillments/create", created) == "processed"
    updated = sample_payload("fulfillments/update")
    assert await post(http, served, "fulfillments/update", updated) == "processed"
    # The create again, late: older than the update, refused.
    assert await post(http, served, "fulfillments/create", created) == "processed"

    by_id = {row.shopify_id: row for row in await rows(backend, Fulfillment)}
    assert set(by_id) == siblings | {5938173509693}
    assert all(by_id[sibling].deleted_at is None for sibling in siblings)
    row = by_id[5938173509693]
    assert (
        row.order_shopify_id, row.name, row.status, row.shipment_status,
        row.location_shopify_id, row.tracking_company, row.tracking_numbers,
        row.tracking_urls, row.shopify_updated_at, row.shopify_created_at,
    ) == (
        ORDER_ID, "#1001.2", "success", "delivered", 74836852797, "UPS",
        ["1Z999AA10123456784"], updated["tracking_urls"],
        datetime(2026, 11, 23, 21, 40, 10, tzinfo=UTC),
        datetime(2026, 11, 21, 14, 12, 44, tzinfo=UTC),
    )  # fmt: skip


# -- inventory items ------------------------------------------------------------------------


async def test_inventory_items_are_created_updated_and_deleted(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, "inventory_items/create", sample_payload(
        "inventory_items/create"
    )) == "processed"  # fmt: skip
    [item] = await rows(backend, InventoryItem)
    assert (
        item.shopify_id, item.sku, item.tracked, item.requires_shipping, item.cost,
        item.country_code_of_origin, item.province_code_of_origin, item.harmonized_system_code,
        item.shopify_created_at, item.shopify_updated_at,
    ) == (
        ITEM_ID, "CCT-WHT-S", True, True, Decimal("8.40"), "PT", None, "610910",
        CREATED, CREATED,
    )  # fmt: skip

    assert await post(http, served, "inventory_items/update", sample_payload(
        "inventory_items/update"
    )) == "processed"  # fmt: skip
    [item] = await rows(backend, InventoryItem)
    assert (item.cost, item.harmonized_system_code) == (Decimal("8.95"), "6109100010")

    before = datetime.now(UTC)
    assert await post(http, served, "inventory_items/delete", sample_payload(
        "inventory_items/delete"
    )) == "processed"  # fmt: skip
    [item] = await rows(backend, InventoryItem)
    assert item.deleted_at is not None
    assert item.deleted_at >= before - timedelta(seconds=5)
    assert item.cost == Decimal("8.95")


# -- inventory levels -----------------------------------------------------------------------


def level(available: int | None, updated_at: datetime) -> dict[str, Any]:
    payload = sample_payload("inventory_levels/update")
    payload["available"] = available
    payload["updated_at"] = updated_at.isoformat()
    return payload


async def the_level(backend: Backend) -> InventoryLevel:
    [found] = await rows(
        backend, InventoryLevel, inventory_item_shopify_id=ITEM_ID, location_shopify_id=LOCATION_ID
    )
    return found  # type: ignore[no-any-return]


async def test_a_level_is_kept_by_item_and_location_in_updated_at_order(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, "inventory_levels/update", sample_payload(
        "inventory_levels/update"
    )) == "processed"  # fmt: skip
    row = await the_level(backend)
    assert (row.available, row.shopify_updated_at, row.deleted_at) == (
        42,
        datetime(2026, 11, 24, 14, 2, 17, tzinfo=UTC),
        None,
    )
    assert row.raw == sample_payload("inventory_levels/update")
    # The connect that came before the update, delivered late: refused.
    connect = sample_payload("inventory_levels/connect")
    assert await post(http, served, "inventory_levels/connect", connect) == "processed"
    assert (await the_level(backend)).available == 42
    # Another location of the same item is another level.
    elsewhere = level(3, datetime(2026, 11, 24, 15, tzinfo=UTC)) | {
        "location_id": 98765432102,
    }
    assert await post(http, served, "inventory_levels/update", elsewhere) == "processed"
    assert len(await rows(backend, InventoryLevel)) == 2
    assert (await the_level(backend)).available == 42


async def test_a_disconnected_level_is_revived_only_by_a_newer_connect_or_update(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, "inventory_levels/update", sample_payload(
        "inventory_levels/update"
    )) == "processed"  # fmt: skip
    before = datetime.now(UTC)
    disconnect = sample_payload("inventory_levels/disconnect")
    assert await post(http, served, "inventory_levels/disconnect", disconnect) == "processed"
    row = await the_level(backend)
    # The body has no time of its own: the tombstone is dated by our receipt.
    assert row.deleted_at is not None
    assert row.deleted_at >= before - timedelta(seconds=5)
    assert row.available == 42

    # An update from before the disconnect (a late delivery) does not revive it.
    stale = level(40, datetime(2026, 11, 24, 14, 30, tzinfo=UTC))
    assert await post(http, served, "inventory_levels/update", stale) == "processed"
    row = await the_level(backend)
    assert (row.deleted_at is not None, row.available) == (True, 42)

    # A connect after the disconnect does.
    later = datetime.now(UTC) + timedelta(minutes=1)
    connect = sample_payload("inventory_levels/connect") | {"updated_at": later.isoformat()}
    assert await post(http, served, "inventory_levels/connect", connect) == "processed"
    row = await the_level(backend)
    assert (row.deleted_at, row.available, row.shopify_updated_at) == (None, None, later)


async def test_a_disconnect_that_carries_its_time_is_ordered_by_it(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, "inventory_levels/update", sample_payload(
        "inventory_levels/update"
    )) == "processed"  # fmt: skip
    # Older than the stored level: the level stays.
    old = sample_payload("inventory_levels/disconnect") | {"updated_at": "2026-11-24T08:00:00Z"}
    assert await post(http, served, "inventory_levels/disconnect", old) == "processed"
    assert (await the_level(backend)).deleted_at is None
    new = sample_payload("inventory_levels/disconnect") | {"updated_at": "2026-11-25T08:00:00Z"}
    assert await post(http, served, "inventory_levels/disconnect", new) == "processed"
    assert (await the_level(backend)).deleted_at == datetime(2026, 11, 25, 8, tzinfo=UTC)
    # A disconnect that arrives before anything else still leaves its tombstone.
    first = {"inventory_item_id": 77, "location_id": 78, "updated_at": "2026-11-25T08:00:00Z"}
    assert await post(http, served, "inventory_levels/disconnect", first) == "processed"
    [row] = await rows(backend, InventoryLevel, inventory_item_shopify_id=77)
    assert row.deleted_at == datetime(2026, 11, 25, 8, tzinfo=UTC)


# -- products/* with a cut variant list -----------------------------------------------------


def gids(*ids: int) -> list[dict[str, str]]:
    return [
        {"admin_graphql_api_id": f"gid://shopify/ProductVariant/{n}", "updated_at": "x"}
        for n in ids
    ]


async def test_a_cut_variant_list_tombstones_only_variants_gone_from_variant_gids(
    backend: Backend,
    served: ServedApp,
    http: httpx.AsyncClient,
) -> None:
    await create_tenant(backend.sessions)
    product = sample_payload("products/create")
    third = copy.deepcopy(product["variants"][0]) | {"id": 757650484644203999, "position": 3}
    product["variants"].append(third)
    product["variant_gids"] = gids(*(variant["id"] for variant in product["variants"]))
    assert await post(http, served, "products/create", product) == "processed"
    first, second, _ = (variant["id"] for variant in product["variants"])

    # Later: the third variant was deleted; Shopify sends only the first variant in
    # `variants` but names both remaining ones in `variant_gids`.
    update = copy.deepcopy(product)
    update["updated_at"] = "2026-11-25T10:00:00-05:00"
    update["variants"] = [update["variants"][0] | {"title": "Small (new)"}]
    update["variant_gids"] = gids(first, second)
    assert await post(http, served, "products/update", update) == "processed"
    by_id = {row.shopify_id: row for row in await rows(backend, ProductVariant)}
    assert by_id[third["id"]].deleted_at is not None
    assert (by_id[first].deleted_at, by_id[first].title) == (None, "Small (new)")
    # Cut off, not removed: kept, and the product recorded to be read whole
    # (test_backfill_children reads it).
    assert by_id[second].deleted_at is None
    [request] = await rows(backend, ChildRefetch)
    assert (request.child_table, request.parent_shopify_id) == ("product_variants", product["id"])


# -- body checks ----------------------------------------------------------------------------


def without(payload: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key not in keys}


MISFITS = [
    # A transaction replayed as a refund (both have id and order_id): only the gid differs.
    ("refunds/create", lambda: sample_payload("order_transactions/create"), "not a Refund"),
    ("order_transactions/create", lambda: sample_payload("refunds/create"), "not a OrderTrans"),
    (
        "order_transactions/create",
        lambda: without(sample_payload("order_transactions/create"), "admin_graphql_api_id"),
        "not a OrderTransaction",
    ),
    ("fulfillments/create", lambda: sample_payload("orders/fulfilled"), "not a Fulfillment"),
    (
        "fulfillments/update",
        lambda: without(sample_payload("fulfillments/update"), "updated_at"),
        "no updated_at",
    ),
    ("refunds/create", lambda: without(sample_payload("refunds/create"), "order_id"), "order_id"),
    (
        "inventory_items/update",
        lambda: sample_payload("products/update"),
        "not a InventoryItem",
    ),
    (
        "inventory_items/delete",
        lambda: sample_payload("inventory_items/update"),
        "not a deletion notice",
    ),
    (
        "inventory_levels/update",
        lambda: sample_payload("inventory_levels/update") | {"inventory_item_id": 5},
        "another inventory item",
    ),
    (
        "inventory_levels/update",
        lambda: without(sample_payload("inventory_levels/update"), "location_id"),
        "location_id",
    ),
    (
        "inventory_levels/connect",
        lambda: without(sample_payload("inventory_levels/connect"), "updated_at"),
        "no updated_at",
    ),
    (
        "inventory_levels/update",
        lambda: sample_payload("inventory_items/update"),
        "inventory_item_id",
    ),
    (
        "inventory_levels/disconnect",
        lambda: sample_payload("inventory_levels/update"),
        "not a disconnection notice",
    ),
    (
        "inventory_levels/connect",
        lambda: (
            sample_payload("inventory_levels/connect")
            | {"admin_graphql_api_id": "gid://shopify/Location/98765432101"}
        ),
        "not an InventoryLevel",
    ),
]


@pytest.mark.parametrize(("topic", "body", "reason"), MISFITS)
async def test_a_signed_body_of_the_wrong_shape_is_refused_and_stores_nothing(
    backend: Backend,
    served: ServedApp,
    http: httpx.AsyncClient,
    topic: str,
    body: Any,
    reason: str,
) -> None:
    await create_tenant(backend.sessions)
    raw, headers = delivery(topic, body())
    response = await http.post(served.webhook_url, content=raw, headers=headers)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    async with backend.sessions() as session:
        events = await session.scalar(select(func.count()).select_from(WebhookEvent))
        written = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (OrderRefund, OrderTransaction, Fulfillment, InventoryItem, InventoryLevel)
        ]
    assert (events, written) == (0, [0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "topic",
    [
        "refunds/create",
        "order_transactions/create",
        "fulfillments/create",
        "fulfillments/update",
        "inventory_items/create",
        "inventory_items/update",
        "inventory_items/delete",
        "inventory_levels/update",
        "inventory_levels/connect",
        "inventory_levels/disconnect",
    ],
)
async def test_every_new_sample_fits_its_topic(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient, topic: str
) -> None:
    await create_tenant(backend.sessions)
    assert await post(http, served, topic, sample_payload(topic)) == "processed"


async def test_an_order_payload_does_not_tombstone_children_created_after_it(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    # The refund (created 2026-11-22) and the fulfillment (2026-11-21) arrive first ...
    assert await post(http, served, "refunds/create", sample_payload("refunds/create")) == (
        "processed"
    )
    assert await post(
        http, served, "fulfillments/create", sample_payload("fulfillments/create")
    ) == "processed"  # fmt: skip
    # ... then the order as it stood on 2026-11-20, without either: its lists are complete,
    # but older than both children, which therefore stay.
    order = sample_payload("orders/create")
    assert (order["refunds"], order["fulfillments"]) == ([], [])
    assert await post(http, served, "orders/create", order) == "processed"
    [refund] = await rows(backend, OrderRefund)
    [fulfillment] = await rows(backend, Fulfillment)
    assert (refund.deleted_at, fulfillment.deleted_at) == (None, None)

    # The order as it stands later, without the fulfillment: that one is gone.
    later = copy.deepcopy(order) | {"updated_at": "2026-11-25T09:00:00-05:00"}
    later["refunds"] = [sample_payload("refunds/create")]
    assert await post(http, served, "orders/updated", later) == "processed"
    [refund] = await rows(backend, OrderRefund)
    [fulfillment] = await rows(backend, Fulfillment)
    assert refund.deleted_at is None
    assert fulfillment.deleted_at is not None


async def test_a_deleted_record_takes_its_children_with_it(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    for topic in (
        "orders/cancelled",
        "order_transactions/create",
        "products/create",
        "inventory_items/create",
        "inventory_levels/update",
    ):
        assert await post(http, served, topic, sample_payload(topic)) == "processed"
    kinds = (
        OrderLineItem,
        OrderRefund,
        OrderRefundLineItem,
        OrderTransaction,
        Fulfillment,
        ProductVariant,
        InventoryLevel,
    )
    for model in kinds:
        found = await rows(backend, model)
        assert found, model
        assert all(row.deleted_at is None for row in found), model

    for topic in ("orders/delete", "products/delete", "inventory_items/delete"):
        assert await post(http, served, topic, sample_payload(topic)) == "processed"
    for model in kinds:
        assert all(row.deleted_at is not None for row in await rows(backend, model)), model
