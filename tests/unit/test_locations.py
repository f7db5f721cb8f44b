"""Locations, the registry's demonstration resource: one normaliser for webhooks and backfill."""

from __future__ import annotations

import pytest

from handlers.normalize import PayloadError, normalize_location
from handlers.resources import RESOURCES, resource_for_topic
from receiver.samples import sample_payload

GRAPHQL_NODE = {
    "id": "gid://shopify/Location/98765432101",
    "name": "Ottawa Warehouse",
    "isActive": True,
    "createdAt": "2026-11-20T14:15:00Z",
    "updatedAt": "2026-11-20T14:15:00Z",
    "address": {
        "address1": "150 Elgin Street",
        "address2": "Suite 800",
        "city": "Ottawa",
        "zip": "K2P 1L4",
        "provinceCode": "ON",
        "countryCode": "CA",
        "phone": "+16135550100",
    },
}


def test_a_webhook_and_a_graphql_node_make_the_same_record() -> None:
    rest = normalize_location(sample_payload("locations/create"))
    graphql = normalize_location(GRAPHQL_NODE)
    assert {key: value for key, value in rest.items() if key != "raw"} == {
        key: value for key, value in graphql.items() if key != "raw"
    }
    assert rest["shopify_id"] == 98765432101
    assert rest["active"] is True
    assert rest["province_code"] == "ON"


def test_absent_fields_are_left_out_and_null_ones_kept() -> None:
    record = normalize_location({"id": 5, "updated_at": "2026-11-20T14:15:00Z", "city": None})
    assert record["city"] is None
    assert "name" not in record
    assert "active" not in record
    node = normalize_location({"id": "gid://shopify/Location/5", "isActive": False})
    assert node["active"] is False
    assert "city" not in node


def test_a_malformed_active_flag_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match=r"location\.active"):
        normalize_location({"id": 5, "active": "yes"})


def test_the_registry_entry_routes_the_location_topics() -> None:
    locations = RESOURCES["locations"]
    for topic in ("locations/create", "locations/update", "locations/delete"):
        assert resource_for_topic(topic) is locations
    # The phone on a location is the shop's: customers/redact has nothing to clear here.
    assert locations.personal_fields == ()
    assert locations.table == "locations"
