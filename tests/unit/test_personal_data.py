"""handlers.personal_data: customers/redact keeps ids and drops what identifies a person."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from handlers.personal_data import mentions, scrub
from receiver.samples import sample_payload

CUSTOMER_ID = 706405506930370084
ORDER_ID = 820982911946154508
EMAIL = "russell.winfield@example.com"
PHONE = "+16135551111"

# Every string in the samples that identifies Russell or where he lives.
PERSONAL_STRINGS = [
    EMAIL,
    PHONE,
    "Russell",
    "Winfield",
    "151 O'Connor Street",
    "Suite 400",
    "K2P 2L8",
    "203.0.113.42",  # browser_ip
    "Please leave the parcel with the concierge.",  # free-text note
]


def dumped(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def all_values(value: Any, key: str) -> list[Any]:
    """Every value stored under `key` anywhere in a JSON document."""
    found: list[Any] = []
    if isinstance(value, dict):
        for name, item in value.items():
            if name == key:
                found.append(item)
            found.extend(all_values(item, key))
    elif isinstance(value, list):
        for item in value:
            found.extend(all_values(item, key))
    return found


@pytest.mark.parametrize("topic", ["orders/create", "customers/create"])
def test_samples_do_carry_the_personal_strings(topic):
    """Guards the tests below: they would pass vacuously if the samples changed."""
    text = dumped(sample_payload(topic))
    for needle in [EMAIL, PHONE, "Russell", "Winfield", "151 O'Connor Street"]:
        assert needle in text


@pytest.mark.parametrize("identifiers", [(EMAIL, PHONE), ()])
@pytest.mark.parametrize("topic", ["orders/create", "customers/create"])
def test_scrub_removes_every_personal_string(topic, identifiers):
    scrubbed = dumped(scrub(sample_payload(topic), identifiers))
    for needle in PERSONAL_STRINGS:
        assert needle not in scrubbed, f"{needle!r} survived scrubbing {topic}"
    assert "russell" not in scrubbed.lower()
    assert "winfield" not in scrubbed.lower()


def test_scrub_keeps_the_order_facts():
    original = sample_payload("orders/create")
    scrubbed = scrub(original, [EMAIL, PHONE])
    assert scrubbed["id"] == ORDER_ID
    assert scrubbed["admin_graphql_api_id"] == f"gid://shopify/Order/{ORDER_ID}"
    assert scrubbed["name"] == "#1001"
    assert scrubbed["customer"]["id"] == CUSTOMER_ID
    assert scrubbed["total_price"] == "146.85"
    assert scrubbed["subtotal_price"] == "119.96"
    assert scrubbed["currency"] == "USD"
    assert scrubbed["created_at"] == original["created_at"]
    assert scrubbed["updated_at"] == original["updated_at"]
    assert [line["id"] for line in scrubbed["line_items"]] == [
        487817672276298554,
        976318377106520349,
    ]
    assert [line["title"] for line in scrubbed["line_items"]] == ["Classic Cotton Tee"] * 2
    assert [line["price"] for line in scrubbed["line_items"]] == ["29.99", "29.99"]
    assert [line["quantity"] for line in scrubbed["line_items"]] == [3, 1]
    assert [line["sku"] for line in scrubbed["line_items"]] == ["CCT-WHT-S", "CCT-WHT-M"]
    assert scrubbed["shipping_lines"][0]["title"] == "Standard Shipping"
    assert scrubbed["shipping_lines"][0]["price"] == "9.99"


def test_scrub_keeps_the_customer_facts():
    scrubbed = scrub(sample_payload("customers/create"), [EMAIL, PHONE])
    assert scrubbed["id"] == CUSTOMER_ID
    assert scrubbed["admin_graphql_api_id"] == f"gid://shopify/Customer/{CUSTOMER_ID}"
    assert scrubbed["state"] == "disabled"
    summary = scrub(sample_payload("customers/purchasing_summary"), [EMAIL, PHONE])
    assert summary == sample_payload("customers/purchasing_summary")
    assert summary["numberOfOrders"] == 3
    assert summary["lastOrderId"] == f"gid://shopify/Order/{ORDER_ID}"


@pytest.mark.parametrize("topic", ["orders/create", "customers/create"])
def test_scrub_empties_personal_fields_rather_than_dropping_the_structure(topic):
    original = sample_payload(topic)
    scrubbed = scrub(original, [EMAIL, PHONE])
    assert set(scrubbed) == set(original)  # same keys: the document stays queryable
    for key in ("email", "first_name", "last_name", "phone"):
        assert all(value in (None, "") for value in all_values(scrubbed, key)), key
    for key in ("default_address", "billing_address", "shipping_address"):
        assert all(not value for value in all_values(scrubbed, key)), key


def test_scrub_leaves_its_input_untouched():
    original = sample_payload("orders/create")
    before = copy.deepcopy(original)
    scrub(original, [EMAIL, PHONE])
    assert original == before


def test_scrub_removes_the_identifiers_under_any_key_case_insensitively():
    payload = {
        "id": 1,
        "note_for_staff": "keep",
        "properties": [{"name": "gift_to", "value": EMAIL.upper()}],
        "metafield": {"value": PHONE},
    }
    scrubbed = dumped(scrub(payload, [EMAIL, PHONE]))
    assert EMAIL not in scrubbed.lower()
    assert PHONE not in scrubbed
    assert "keep" in scrubbed


def test_scrub_handles_graphql_shaped_payloads():
    node = {
        "id": f"gid://shopify/Customer/{CUSTOMER_ID}",
        "firstName": "Russell",
        "lastName": "Winfield",
        "displayName": "Russell Winfield",
        "defaultEmailAddress": {"emailAddress": EMAIL},
        "defaultPhoneNumber": {"phoneNumber": PHONE},
        "defaultAddress": {"address1": "151 O'Connor Street", "city": "Ottawa"},
        "numberOfOrders": "3",
    }
    scrubbed = scrub(node, [])
    text = dumped(scrubbed)
    for needle in ["Russell", "Winfield", EMAIL, PHONE, "151 O'Connor Street"]:
        assert needle not in text
    assert scrubbed["id"] == node["id"]
    assert scrubbed["numberOfOrders"] == "3"


# --- mentions -------------------------------------------------------------------------------

UNRELATED_CUSTOMER = 111111111111
UNRELATED_ORDER = 222222222222


def test_order_payload_mentions_its_customer_by_id():
    assert mentions(sample_payload("orders/create"), CUSTOMER_ID, [], [])


def test_order_payload_mentions_by_order_id_to_redact():
    assert mentions(sample_payload("orders/create"), UNRELATED_CUSTOMER, [ORDER_ID], [])


def test_payload_mentions_by_email_alone():
    payload = {"id": 5, "contact_email": EMAIL.upper()}
    assert mentions(payload, UNRELATED_CUSTOMER, [UNRELATED_ORDER], [EMAIL])
    assert not mentions(payload, UNRELATED_CUSTOMER, [UNRELATED_ORDER], [])


def test_payload_mentions_by_phone_alone():
    payload = {"id": 5, "billing_address": {"phone": PHONE}}
    assert mentions(payload, UNRELATED_CUSTOMER, [], [PHONE])


def test_customer_payload_mentions_the_customer():
    payload = sample_payload("customers/create")
    assert mentions(payload, CUSTOMER_ID, [], [])
    assert mentions(payload, UNRELATED_CUSTOMER, [], [EMAIL])


def test_graphql_gid_mentions_the_customer():
    node = {"id": f"gid://shopify/Customer/{CUSTOMER_ID}", "numberOfOrders": "3"}
    assert mentions(node, CUSTOMER_ID, [], [])


def test_redact_request_payload_mentions_the_customer():
    payload = sample_payload("customers/redact")
    customer_id = payload["customer"]["id"]
    assert mentions(payload, customer_id, [], [])


def test_unrelated_product_payload_is_not_a_mention():
    product = sample_payload("products/create")
    assert not mentions(product, CUSTOMER_ID, [ORDER_ID], [EMAIL, PHONE])


def test_order_of_someone_else_is_not_a_mention():
    other = sample_payload("orders/create")
    other = json.loads(
        json.dumps(other)
        .replace(str(CUSTOMER_ID), str(UNRELATED_CUSTOMER))
        .replace(str(ORDER_ID), str(UNRELATED_ORDER))
        .replace(EMAIL, "someone.else@example.org")
        .replace(PHONE, "+15550000000")
    )
    assert not mentions(other, CUSTOMER_ID, [ORDER_ID], [EMAIL, PHONE])


def test_empty_identifiers_never_match_empty_strings():
    payload = {"id": 5, "email": "", "phone": ""}
    assert not mentions(payload, UNRELATED_CUSTOMER, [], ["", None])  # type: ignore[list-item]
