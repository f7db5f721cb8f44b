"""Locations end to end: signed webhooks through the served app, and the backfill, on both
backends. Everything here comes from the one registry entry (handlers/resources.py)."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from models import Location
from receiver.samples import sample_payload
from tests.conftest import Backend, ServedApp
from tests.factories import create_tenant, delivery

LOCATION_ID = 98765432101


async def post(http: httpx.AsyncClient, served: ServedApp, topic: str, payload=None) -> str:
    body, headers = delivery(topic, payload)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def location(backend: Backend, tenant_id: int) -> Location | None:
    async with backend.sessions() as session:
        return await session.scalar(
            select(Location).where(
                Location.tenant_id == tenant_id, Location.shopify_id == LOCATION_ID
            )
        )


async def test_location_webhooks_create_update_and_tombstone(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    assert await post(http, served, "locations/create") == "processed"
    row = await location(backend, tenant_id)
    assert row is not None
    assert (row.name, row.city, row.province_code, row.country_code, row.active) == (
        "Ottawa Warehouse", "Ottawa", "ON", "CA", True
    )  # fmt: skip
    assert row.address2 == "Suite 800"

    assert await post(http, served, "locations/update") == "processed"
    row = await location(backend, tenant_id)
    assert row is not None
    assert (row.active, row.address2) == (False, None)

    # An older version arriving late changes nothing (order-safe, like every resource).
    assert await post(http, served, "locations/create", sample_payload("locations/create") | {
        "name": "Stale name"
    }) == "processed"  # fmt: skip
    row = await location(backend, tenant_id)
    assert row is not None
    assert row.name == "Ottawa Warehouse"

    assert await post(http, served, "locations/delete") == "processed"
    row = await location(backend, tenant_id)
    assert row is not None
    assert row.deleted_at is not None


async def test_a_whole_location_sent_as_a_delete_is_refused(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    assert await post(http, served, "locations/create") == "processed"
    body, headers = delivery("locations/delete", sample_payload("locations/update"))
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 400
    row = await location(backend, tenant_id)
    assert row is not None
    assert row.deleted_at is None
