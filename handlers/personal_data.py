"""Finding and removing a customer's personal data inside stored JSON payloads.

Shopify's rule for customers/redact: keep ids, drop what identifies a person. Payloads come
in REST (snake_case) and GraphQL (camelCase) shapes, so both spellings are listed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

PERSONAL_KEYS = frozenset(
    {
        "email",
        "contact_email",
        "first_name",
        "last_name",
        "phone",
        "note",
        "browser_ip",
        "company",
        "address1",
        "address2",
        "zip",
        "latitude",
        "longitude",
        "firstName",
        "lastName",
        "displayName",
        "emailAddress",
        "phoneNumber",
        "defaultEmailAddress",
        "defaultPhoneNumber",
        # A transaction's payment_details: the cardholder's name as on the card.
        "credit_card_name",
    }
)
# Whole objects that describe where and who a person is.
PERSONAL_OBJECT_KEYS = frozenset(
    {
        "billing_address",
        "shipping_address",
        "default_address",
        "addresses",
        "client_details",
        "note_attributes",
        "billingAddress",
        "shippingAddress",
        "defaultAddress",
        # Where a fulfillment was shipped (REST fulfillment bodies).
        "destination",
    }
)


def scrub(value: Any, identifiers: Collection[str] = ()) -> Any:
    """A copy of `value` with personal fields emptied and any string equal to one of
    `identifiers` (the customer's email or phone, compared case-insensitively) removed."""
    known = {identifier.casefold() for identifier in identifiers if identifier}
    return _scrub(value, known)


def _scrub(value: Any, known: set[str]) -> Any:
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            if key in PERSONAL_OBJECT_KEYS:
                cleaned[key] = [] if isinstance(item, list) else None
            elif key in PERSONAL_KEYS:
                cleaned[key] = None
            else:
                cleaned[key] = _scrub(item, known)
        return cleaned
    if isinstance(value, list):
        return [_scrub(item, known) for item in value]
    if isinstance(value, str) and value.casefold() in known:
        return None
    return value


# Keys whose value is the id of a customer or order (REST and GraphQL-style payloads, such as
# customers/purchasing_summary's customerId and lastOrderId).
_ID_KEYS = frozenset({"id", "order_id", "customer_id", "customerId", "orderId", "lastOrderId"})


def mentions(
    value: Any, customer_id: int, order_ids: Collection[int], identifiers: Collection[str]
) -> bool:
    """Whether a stored payload refers to the customer: by customer id, by one of the orders
    to redact, or by carrying the customer's email or phone anywhere."""
    known = {identifier.casefold() for identifier in identifiers if identifier}
    wanted_ids = {customer_id, *order_ids}
    return _mentions(value, wanted_ids, known)


def _id_value(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        tail = value.rsplit("/", 1)[-1]
        return int(tail) if tail.isdigit() else None
    return None


def _mentions(value: Any, wanted_ids: set[int], known: set[str]) -> bool:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _ID_KEYS and _id_value(item) in wanted_ids:
                return True
            if _mentions(item, wanted_ids, known):
                return True
        return False
    if isinstance(value, list):
        return any(
            _id_value(item) in wanted_ids or _mentions(item, wanted_ids, known) for item in value
        )
    return isinstance(value, str) and value.casefold() in known
