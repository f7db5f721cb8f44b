"""Metafields of the kept namespaces, from signed webhooks through the served app, on both
backends: only kept namespaces are stored, under their owner; one that vanished from a
complete list is tombstoned; a body without `metafields` or an older body changes nothing."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from handlers import metafields
from models import Metafield
from receiver.samples import sample_payload
from tests.conftest import Backend, ServedApp
from tests.factories import create_tenant
from tests.integration.test_compliance import (
    CUSTOMER_ID,
    dump_tenant,
    other_customer,
    run_queued_jobs,
)
from tests.integration.test_compliance import post as compliance_post
from tests.integration.test_store_children import PRODUCT_ID, later, post, rows


@pytest.fixture
def kept(served: ServedApp) -> Iterator[None]:
    # After `served`: starting the app applies its settings' namespaces (none).
    metafields.configure(["custom", "reviews-app"])
    try:
        yield
    finally:
        metafields.configure([])


def metafield(
    number: int, namespace: str, key: str, value: Any, kind: str = "single_line_text_field"
) -> dict[str, Any]:
    """One entry of a REST body's `metafields`, as Shopify sends it."""
    return {
        "id": number,
        "namespace": namespace,
        "key": key,
        "value": value,
        "description": None,
        "owner_id": PRODUCT_ID,
        "created_at": "2026-03-01T10:00:00-05:00",
        "updated_at": "2026-03-02T10:00:00-05:00",
        "owner_resource": "product",
        "type": kind,
        "admin_graphql_api_id": f"gid://shopify/Metafield/{number}",
    }


def with_metafields(payload: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any]:
    changed = copy.deepcopy(payload)
    changed["metafields"] = entries
    return changed


async def stored(backend: Backend) -> dict[int, tuple[Any, ...]]:
    return {
        row.shopify_id: (
            row.owner_type, row.owner_shopify_id, row.namespace, row.key, row.type, row.value,
            row.deleted_at is not None,
        )
        for row in await rows(backend, Metafield)
    }  # fmt: skip


@pytest.mark.usefixtures("kept")
async def test_a_products_kept_metafields_land_and_a_vanished_one_is_tombstoned(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    first = with_metafields(
        sample_payload("products/update"),
        [
            metafield(11, "custom", "material", "cotton"),
            metafield(12, "other_app", "token", "not ours"),
            metafield(13, "reviews-app", "rating", 4, "number_integer"),
            metafield(14, "custom", "care", '{"wash":"cold"}', "json"),
        ],
    )
    assert await post(http, served, "products/update", first) == "processed"
    assert await stored(backend) == {
        11: ("PRODUCT", PRODUCT_ID, "custom", "material", "single_line_text_field", "cotton",
             False),
        13: ("PRODUCT", PRODUCT_ID, "reviews-app", "rating", "number_integer", "4", False),
        14: ("PRODUCT", PRODUCT_ID, "custom", "care", "json", '{"wash":"cold"}', False),
    }  # fmt: skip

    # A later body: one changed, one gone from its namespace, the other namespace untouched.
    second = with_metafields(
        later(sample_payload("products/update"), 20),
        [
            metafield(11, "custom", "material", "linen"),
            metafield(12, "other_app", "token", "still not ours"),
            metafield(13, "reviews-app", "rating", 5, "number_integer"),
        ],
    )
    assert await post(http, served, "products/update", second) == "processed"
    after = await stored(backend)
    assert after[11][5:] == ("linen", False)
    assert after[13][5:] == ("5", False)
    assert after[14][6], "a kept metafield missing from a complete list is tombstoned"
    assert 12 not in after

    # No `metafields` key: nothing to say about them. An older body: not applied at all.
    without = later(sample_payload("products/update"), 40)
    without.pop("metafields", None)
    assert await post(http, served, "products/update", without) == "processed"
    older = with_metafields(sample_payload("products/update"), [])
    await post(http, served, "products/update", older)
    assert await stored(backend) == after


@pytest.mark.usefixtures("kept")
async def test_an_orders_and_a_customers_metafields_keep_their_owner_type(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    order = sample_payload("orders/updated")
    order["metafields"] = [
        {**metafield(21, "custom", "gift_note", "for mum"), "owner_resource": "order",
         "owner_id": order["id"]},
    ]  # fmt: skip
    customer = sample_payload("customers/update")
    customer["metafields"] = [
        {**metafield(22, "custom", "size", "M"), "owner_resource": "customer",
         "owner_id": customer["id"]},
    ]  # fmt: skip
    assert await post(http, served, "orders/updated", order) == "processed"
    assert await post(http, served, "customers/update", customer) == "processed"
    found = await stored(backend)
    assert found[21][:3] == ("ORDER", order["id"], "custom")
    assert found[22][:3] == ("CUSTOMER", customer["id"], "custom")
    # The customer's complete list leaves the order's metafield alone (another owner type).
    customer = later(customer, 10)
    customer["metafields"] = []
    assert await post(http, served, "customers/update", customer) == "processed"
    found = await stored(backend)
    assert (found[22][6], found[21][6]) == (True, False)


async def test_without_kept_namespaces_no_metafield_is_stored(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    body = with_metafields(
        sample_payload("products/update"), [metafield(31, "custom", "material", "cotton")]
    )
    assert await post(http, served, "products/update", body) == "processed"
    assert await stored(backend) == {}


SECRET_SIZE = "inseam 31, sensitive fit notes"
SECRET_NOTE = "Happy birthday Grandma Winnie"
OTHER_APP_SECRET = "loyalty tier of a named person"


def owned(
    number: int, namespace: str, key: str, value: str, owner: str, owner_id: int
) -> dict[str, Any]:
    return metafield(number, namespace, key, value) | {
        "owner_resource": owner,
        "owner_id": owner_id,
    }


@pytest.mark.usefixtures("kept")
async def test_customer_redact_empties_the_customers_and_their_orders_metafields(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    tenant_id = await create_tenant(backend.sessions)
    customer = sample_payload("customers/create")
    customer["metafields"] = [
        owned(41, "custom", "fit", SECRET_SIZE, "customer", CUSTOMER_ID),
        # Not kept, yet in the stored body and the row's raw: the customer's all the same.
        owned(42, "other_app", "tier", OTHER_APP_SECRET, "customer", CUSTOMER_ID),
    ]
    order = sample_payload("orders/create")
    assert order["customer"]["id"] == CUSTOMER_ID
    order["metafields"] = [owned(43, "custom", "gift_note", SECRET_NOTE, "order", order["id"])]
    other, other_order = other_customer()
    other["metafields"] = [owned(44, "custom", "fit", "stays", "customer", other["id"])]
    product = with_metafields(
        sample_payload("products/create"), [metafield(45, "custom", "material", "wool")]
    )
    for topic, body in (
        ("customers/create", customer),
        ("orders/create", order),
        ("customers/create", other),
        ("orders/create", other_order),
        ("products/create", product),
    ):
        assert await post(http, served, topic, body) == "processed"
    before = await dump_tenant(backend, tenant_id)
    assert all(value in before for value in (SECRET_SIZE, SECRET_NOTE, OTHER_APP_SECRET))

    # Redaction reaches the metafields already stored, whatever is configured by then.
    metafields.configure([])
    # The sample as the store's own (its shop domain).
    assert await compliance_post(http, served, "customers/redact") == "processed"
    await run_queued_jobs(backend, served)

    after = await dump_tenant(backend, tenant_id)
    assert [v for v in (SECRET_SIZE, SECRET_NOTE, OTHER_APP_SECRET) if v in after] == []
    by_id = {row.shopify_id: row for row in await rows(backend, Metafield)}
    assert sorted(by_id) == [41, 43, 44, 45]
    for number in (41, 43):
        row = by_id[number]
        assert (row.namespace, row.key, row.value, row.raw) == (
            "custom", row.key, None, {"id": number}
        )  # fmt: skip
    assert (by_id[44].value, by_id[45].value) == ("stays", "wool")
