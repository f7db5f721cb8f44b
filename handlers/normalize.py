"""One normaliser per resource: webhook (REST-shaped) and backfill (GraphQL node) payloads
become the same record, so both paths write identical rows.

A record is a dict of column values for the resource's table, without `tenant_id`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Record = dict[str, Any]

MAX_SHOPIFY_ID = 2**63 - 1


class PayloadError(ValueError):
    """A payload that cannot be turned into a record; the event is marked failed, not lost."""


def is_graphql_node(payload: Mapping[str, Any]) -> bool:
    node_id = payload.get("id")
    return isinstance(node_id, str) and node_id.startswith("gid://")


# Digits of MAX_SHOPIFY_ID: a longer number is out of range without being read (int() of
# thousands of digits is slow, and past 4,300 it raises a plain ValueError).
_MAX_ID_DIGITS = len(str(MAX_SHOPIFY_ID))


def parse_shopify_id(value: Any, field: str = "id") -> int:
    """Numeric id from an integer, a numeric string or a gid (`gid://shopify/Order/123`)."""
    if type(value) is str and value.startswith("gid://"):
        # Nearly every id a bulk line carries: a gid ending in its number, read in one pass
        # (anything else, a `?` suffix or a bad number, takes the checks below).
        text = value[value.rfind("/") + 1 :]
        if text.isascii() and text.isdigit() and len(text) < _MAX_ID_DIGITS:
            number = int(text)
            if number:
                return number
    if isinstance(value, bool):
        raise PayloadError(f"{field}: expected an id, got {value!r}")
    if isinstance(value, str):
        text = value.rsplit("/", 1)[-1] if value.startswith("gid://") else value
        text = text.split("?", 1)[0]
        # isascii: "²" and "١٢٣" are digits to str.isdigit but not ids.
        if not (text.isascii() and text.isdigit()):
            raise PayloadError(f"{field}: {value!r} is not a Shopify id")
        if len(text.lstrip("0")) > _MAX_ID_DIGITS:
            raise PayloadError(f"{field}: {value!r} is outside the 64-bit id range")
        value = int(text)
    if not isinstance(value, int):
        raise PayloadError(f"{field}: expected an id, got {value!r}")
    if not 0 < value <= MAX_SHOPIFY_ID:
        raise PayloadError(f"{field}: {value} is outside the 64-bit id range")
    return value


def optional_shopify_id(value: Any, field: str) -> int | None:
    return None if value is None else parse_shopify_id(value, field)


def parse_timestamp(value: Any, field: str = "timestamp") -> datetime | None:
    """ISO-8601 to an aware UTC datetime; fractions beyond microseconds are cut, not rounded."""
    if type(value) is str and len(value) == 20 and value[10] == "T" and value[19] == "Z":
        # Shopify's own form (`2024-03-01T10:20:30Z`), which Python 3.11 reads as UTC as it
        # stands; what it does not read gets the checks (and the error) below.
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is UTC:
                return parsed
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{field}: expected an ISO-8601 string, got {value!r}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    date_part, sep, time_part = text.partition("T")
    if sep and "." in time_part:
        # Python parses at most six fractional digits; Shopify headers carry nine.
        whole, _, rest = time_part.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        time_part = f"{whole}.{rest[:digits][:6]}{rest[digits:]}"
        text = f"{date_part}T{time_part}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PayloadError(f"{field}: {value!r} is not an ISO-8601 timestamp") from exc
    if parsed.tzinfo is None:
        raise PayloadError(f"{field}: {value!r} has no UTC offset")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # year 1 or 9999 with an offset falls off the calendar
        raise PayloadError(f"{field}: {value!r} is out of range") from exc


# Money bounds: under 10^16 (what NUMERIC(20, 4) held before) with at most 20 decimals. Shopify
# sends 2 to 4; a hostile `1e999999` or ten thousand digits is refused here, the same on both
# backends, instead of bloating rows or failing in one database and not the other.
MAX_MONEY = Decimal("1e16")
MAX_MONEY_DECIMALS = 20
# Plain decimal text as Shopify writes it (Python's Decimal would also take "1_000", " 5 ",
# "Infinity"). The length cap keeps a hostile string from being parsed at all.
_MONEY_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]{1,7})?")
_MAX_MONEY_TEXT = 64
# Most amounts Shopify sends: a sign, at most 15 whole digits, two decimals. These need none of
# parse_money's range checks.
_PLAIN_MONEY = re.compile(r"-?[0-9]{1,15}\.[0-9]{2}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


# Plain amounts already read: a store's prices, taxes and zeros repeat across its line
# items, refunds and transactions (Decimals are immutable, so one may serve every record).
_PLAIN_AMOUNTS: dict[str, Decimal] = {}
_MAX_PLAIN_AMOUNTS = 4096


def parse_money(value: Any, field: str = "amount") -> Decimal | None:
    """The amount exactly as sent, in the one form both backends store and return alike:
    `12.3456789` stays so, `0.10` keeps its two places, `1E+2` becomes `100` (PostgreSQL keeps
    no positive exponent) and `-0.00` becomes `0.00` (nor a negative zero)."""
    if type(value) is str:
        known = _PLAIN_AMOUNTS.get(value)
        if known is not None:
            return known
        if _PLAIN_MONEY.fullmatch(value):
            amount = Decimal(value)
            if amount.is_zero():
                amount = abs(amount)
            if len(_PLAIN_AMOUNTS) >= _MAX_PLAIN_AMOUNTS:
                _PLAIN_AMOUNTS.clear()
            _PLAIN_AMOUNTS[value] = amount
            return amount
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(f"{field}: expected an amount, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise PayloadError(f"{field}: {value!r} is not a finite amount")
    # str() first: Decimal(0.1) would carry the float's binary error into the books.
    text = value if isinstance(value, str) else str(value)
    if len(text) > _MAX_MONEY_TEXT or not _MONEY_TEXT.fullmatch(text):
        raise PayloadError(f"{field}: {_shown(value)} is not an amount")
    try:
        amount = Decimal(text)
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise PayloadError(f"{field}: {_shown(value)} is not an amount") from exc
    exponent = amount.as_tuple().exponent
    if not isinstance(exponent, int) or abs(amount) >= MAX_MONEY:
        raise PayloadError(f"{field}: {_shown(value)} is out of range")
    if exponent < -MAX_MONEY_DECIMALS:
        raise PayloadError(f"{field}: {_shown(value)} has more than {MAX_MONEY_DECIMALS} decimals")
    if exponent > 0:
        amount = amount.quantize(Decimal(1))
    if amount.is_zero():
        amount = abs(amount)
    return amount


def parse_count(value: Any, field: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PayloadError(f"{field}: expected a count, got {value!r}")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= MAX_SHOPIFY_ID:
        raise PayloadError(f"{field}: {value!r} is not a count")
    return value


def optional_text(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is str:  # nearly always: spares the checks below
        return value or None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise PayloadError(f"{field}: expected text, got {type(value).__name__}")
    text = str(value)
    return text or None


def lower_enum(value: Any, field: str) -> str | None:
    """GraphQL enums (`PARTIALLY_PAID`) and REST values (`partially_paid`) to the REST spelling."""
    text = optional_text(value, field)
    return text.lower() if text else None


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if type(value) is dict:  # a parsed body's objects: spares the abstract-class check
        return value
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PayloadError(f"{field}: expected an object, got {type(value).__name__}")
    return value


def _require_object(payload: Any, resource: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise PayloadError(f"{resource}: payload must be a JSON object")
    if "id" not in payload:
        raise PayloadError(f"{resource}: payload has no id")
    return payload


def _shop_money(bag: Any, field: str) -> tuple[Decimal | None, str | None]:
    """Amount and currency from a GraphQL MoneyBag or a REST `*_set` (shop currency side)."""
    bag = _mapping(bag, field)
    money = _mapping(bag.get("shopMoney", bag.get("shop_money")), field)
    amount = parse_money(money.get("amount"), field)
    currency = optional_text(money.get("currencyCode", money.get("currency_code")), field)
    return amount, currency


def _common(payload: Mapping[str, Any], resource: str) -> Record:
    graphql = is_graphql_node(payload)
    created_key = "createdAt" if graphql else "created_at"
    record: Record = {
        "shopify_id": parse_shopify_id(payload["id"], f"{resource}.id"),
        # Always present: it is the order guard, and an absent one (None) only ever writes
        # over a row that has none either.
        "shopify_updated_at": parse_timestamp(
            payload.get("updatedAt" if graphql else "updated_at"), f"{resource}.updated_at"
        ),
        "raw": dict(payload),
    }
    if created_key in payload:
        record["shopify_created_at"] = parse_timestamp(
            payload[created_key], f"{resource}.created_at"
        )
    return record


def _present(
    record: Record, payload: Mapping[str, Any], sources: Mapping[str, tuple[str, ...]]
) -> Record:
    """`record` without the columns none of whose payload keys are there: a field absent from a
    payload is unknown, not empty, so it must not erase what is stored (absent is not null).
    A key that is present with null still writes NULL."""
    for column, keys in sources.items():
        if not any(key in payload for key in keys):
            record.pop(column, None)
    return record


_CUSTOMER_GRAPHQL_SOURCES = {
    "email": ("email", "defaultEmailAddress"),
    "first_name": ("firstName",),
    "last_name": ("lastName",),
    "phone": ("phone", "defaultPhoneNumber"),
    "state": ("state",),
    "amount_spent": ("amountSpent",),
    "currency": ("amountSpent",),
    "orders_count": ("numberOfOrders",),
}
# Since API version 2025-01 customer webhooks carry no `total_spent` / `orders_count` (they come
# on customers/purchasing_summary): the currency is written only beside its amount.
_CUSTOMER_REST_SOURCES = {
    "email": ("email",),
    "first_name": ("first_name",),
    "last_name": ("last_name",),
    "phone": ("phone",),
    "state": ("state",),
    "amount_spent": ("total_spent", "amount_spent"),
    "currency": ("total_spent", "amount_spent"),
    "orders_count": ("orders_count",),
}
_PRODUCT_SOURCES = {
    "title": ("title",),
    "handle": ("handle",),
    "status": ("status",),
    "vendor": ("vendor",),
    "product_type": ("product_type", "productType"),
    "tags": ("tags",),
}
_ORDER_GRAPHQL_SOURCES = {
    "name": ("name",),
    "email": ("email",),
    "customer_shopify_id": ("customer",),
    "currency": ("currencyCode", "totalPriceSet"),
    "total_price": ("totalPriceSet",),
    "subtotal_price": ("subtotalPriceSet",),
    "financial_status": ("displayFinancialStatus",),
    "fulfillment_status": ("displayFulfillmentStatus",),
    "cancelled_at": ("cancelledAt",),
    "processed_at": ("processedAt",),
}
_ORDER_REST_SOURCES = {
    "name": ("name",),
    "email": ("email",),
    "customer_shopify_id": ("customer",),
    "currency": ("currency",),
    "total_price": ("total_price", "total_price_set"),
    "subtotal_price": ("subtotal_price", "subtotal_price_set"),
    "financial_status": ("financial_status",),
    "fulfillment_status": ("fulfillment_status",),
    "cancelled_at": ("cancelled_at",),
    "processed_at": ("processed_at",),
}


def normalize_customer(payload: Any) -> Record:
    payload = _require_object(payload, "customer")
    record = _common(payload, "customer")
    if is_graphql_node(payload):
        email = payload.get("email") or _mapping(
            payload.get("defaultEmailAddress"), "customer.defaultEmailAddress"
        ).get("emailAddress")
        phone = payload.get("phone") or _mapping(
            payload.get("defaultPhoneNumber"), "customer.defaultPhoneNumber"
        ).get("phoneNumber")
        amount, currency = _shop_money(
            {"shopMoney": payload.get("amountSpent")}, "customer.amountSpent"
        )
        record |= {
            "email": optional_text(email, "customer.email"),
            "first_name": optional_text(payload.get("firstName"), "customer.firstName"),
            "last_name": optional_text(payload.get("lastName"), "customer.lastName"),
            "phone": optional_text(phone, "customer.phone"),
            "state": lower_enum(payload.get("state"), "customer.state"),
            "amount_spent": amount,
            "currency": currency,
            "orders_count": parse_count(payload.get("numberOfOrders"), "customer.numberOfOrders"),
        }
        record |= read_fields(payload, CUSTOMER_FIELDS, "customer", graphql=True)
        return _present(record, payload, _CUSTOMER_GRAPHQL_SOURCES)
    # REST: older versions send `total_spent` (string) and `orders_count`, newer ones may send
    # `amount_spent` as a money object; accept both.
    spent = payload.get("amount_spent")
    if isinstance(spent, Mapping):
        amount = parse_money(spent.get("amount"), "customer.amount_spent")
        currency = optional_text(spent.get("currency_code"), "customer.amount_spent")
    else:
        amount = parse_money(payload.get("total_spent", spent), "customer.total_spent")
        currency = None
    record |= {
        "email": optional_text(payload.get("email"), "customer.email"),
        "first_name": optional_text(payload.get("first_name"), "customer.first_name"),
        "last_name": optional_text(payload.get("last_name"), "customer.last_name"),
        "phone": optional_text(payload.get("phone"), "customer.phone"),
        "state": lower_enum(payload.get("state"), "customer.state"),
        "amount_spent": amount,
        "currency": currency or optional_text(payload.get("currency"), "customer.currency"),
        "orders_count": parse_count(payload.get("orders_count"), "customer.orders_count"),
    }
    record |= read_fields(payload, CUSTOMER_FIELDS, "customer", graphql=False)
    return _present(record, payload, _CUSTOMER_REST_SOURCES)


def normalize_tags(value: Any, field: str = "product.tags") -> str | None:
    """REST sends "a, b", GraphQL sends ["a", "b"]; both become "a, b"."""
    if value is None:
        return None
    if isinstance(value, str):
        tags = value.split(",")
    elif isinstance(value, list):
        tags = [optional_text(tag, field) or "" for tag in value]
    else:
        raise PayloadError(f"{field}: expected a string or a list, got {type(value).__name__}")
    return ", ".join(tag.strip() for tag in tags if tag.strip())


def normalize_product(payload: Any) -> Record:
    payload = _require_object(payload, "product")
    record = _common(payload, "product")
    graphql = is_graphql_node(payload)
    record |= {
        "title": optional_text(payload.get("title"), "product.title"),
        "handle": optional_text(payload.get("handle"), "product.handle"),
        "status": lower_enum(payload.get("status"), "product.status"),
        "vendor": optional_text(payload.get("vendor"), "product.vendor"),
        "product_type": optional_text(
            payload.get("productType" if graphql else "product_type"), "product.product_type"
        ),
        "tags": normalize_tags(payload.get("tags")),
    }
    _present(record, payload, _PRODUCT_SOURCES)
    return record | read_fields(payload, PRODUCT_FIELDS, "product", graphql=graphql)


# GraphQL's displayFulfillmentStatus spelled the way REST's fulfillment_status is. REST knows
# only these three values and null: IN_PROGRESS, ON_HOLD, SCHEDULED, OPEN and the rest read
# null there, so they do here too, or a webhook and the backfill would write different rows.
FULFILLMENT_FROM_GRAPHQL = {
    "FULFILLED": "fulfilled",
    "PARTIALLY_FULFILLED": "partial",
    "RESTOCKED": "restocked",
}


def normalize_order(payload: Any) -> Record:
    payload = _require_object(payload, "order")
    record = _common(payload, "order")
    if is_graphql_node(payload):
        total, total_currency = _shop_money(payload.get("totalPriceSet"), "order.totalPriceSet")
        subtotal, _ = _shop_money(payload.get("subtotalPriceSet"), "order.subtotalPriceSet")
        customer = _mapping(payload.get("customer"), "order.customer")
        fulfillment = optional_text(
            payload.get("displayFulfillmentStatus"), "order.displayFulfillmentStatus"
        )
        record |= {
            "name": optional_text(payload.get("name"), "order.name"),
            "email": optional_text(payload.get("email"), "order.email"),
            "customer_shopify_id": optional_shopify_id(customer.get("id"), "order.customer.id"),
            "currency": optional_text(payload.get("currencyCode"), "order.currencyCode")
            or total_currency,
            "total_price": total,
            "subtotal_price": subtotal,
            "financial_status": lower_enum(
                payload.get("displayFinancialStatus"), "order.displayFinancialStatus"
            ),
            "fulfillment_status": FULFILLMENT_FROM_GRAPHQL.get(fulfillment or ""),
            "cancelled_at": parse_timestamp(payload.get("cancelledAt"), "order.cancelledAt"),
            "processed_at": parse_timestamp(payload.get("processedAt"), "order.processedAt"),
        }
        _present(record, payload, _ORDER_GRAPHQL_SOURCES)
        return record | read_fields(payload, ORDER_FIELDS, "order", graphql=True)
    customer = _mapping(payload.get("customer"), "order.customer")
    total = parse_money(payload.get("total_price"), "order.total_price")
    if total is None:
        total, _ = _shop_money(payload.get("total_price_set"), "order.total_price_set")
    subtotal = parse_money(payload.get("subtotal_price"), "order.subtotal_price")
    if subtotal is None:
        subtotal, _ = _shop_money(payload.get("subtotal_price_set"), "order.subtotal_price_set")
    record |= {
        "name": optional_text(payload.get("name"), "order.name"),
        "email": optional_text(payload.get("email"), "order.email"),
        "customer_shopify_id": optional_shopify_id(customer.get("id"), "order.customer.id"),
        "currency": optional_text(payload.get("currency"), "order.currency"),
        "total_price": total,
        "subtotal_price": subtotal,
        "financial_status": lower_enum(payload.get("financial_status"), "order.financial_status"),
        "fulfillment_status": lower_enum(
            payload.get("fulfillment_status"), "order.fulfillment_status"
        ),
        "cancelled_at": parse_timestamp(payload.get("cancelled_at"), "order.cancelled_at"),
        "processed_at": parse_timestamp(payload.get("processed_at"), "order.processed_at"),
    }
    _present(record, payload, _ORDER_REST_SOURCES)
    return record | read_fields(payload, ORDER_FIELDS, "order", graphql=False)


def normalize_purchasing_summary(payload: Any) -> Record:
    """customers/purchasing_summary (API 2025-01 and later): a customer's lifetime spend and
    order count, which the customer webhooks no longer carry. Its `occurredAt` orders it
    against other summaries (`purchasing_summary_at`); a key it lacks is left alone."""
    if not isinstance(payload, Mapping):
        raise PayloadError("purchasing_summary: payload must be a JSON object")
    if "customerId" not in payload:
        raise PayloadError("purchasing_summary: payload has no customerId")
    record: Record = {
        "shopify_id": parse_shopify_id(payload["customerId"], "purchasing_summary.customerId"),
        "purchasing_summary_at": parse_timestamp(
            payload.get("occurredAt"), "purchasing_summary.occurredAt"
        ),
    }
    if "amountSpent" in payload:
        spent = _mapping(payload["amountSpent"], "purchasing_summary.amountSpent")
        record["amount_spent"] = parse_money(spent.get("amount"), "purchasing_summary.amountSpent")
        record["currency"] = optional_text(
            spent.get("currencyCode", spent.get("currency_code")), "purchasing_summary.currency"
        )
    if "numberOfOrders" in payload:
        record["orders_count"] = parse_count(
            payload["numberOfOrders"], "purchasing_summary.numberOfOrders"
        )
    return record


_LOCATION_ADDRESS = (
    "address1",
    "address2",
    "city",
    "zip",
    "province_code",
    "country_code",
    "phone",
)
_LOCATION_REST_SOURCES = {
    "name": ("name",),
    "active": ("active",),
    **{column: (column,) for column in _LOCATION_ADDRESS},
}
_LOCATION_GRAPHQL_SOURCES = {
    "name": ("name",),
    "active": ("isActive",),
    **{column: ("address",) for column in _LOCATION_ADDRESS},
}
# GraphQL's LocationAddress spells these in camelCase; REST has them at the top level.
_LOCATION_GRAPHQL_ADDRESS = {
    "address1": "address1",
    "address2": "address2",
    "city": "city",
    "zip": "zip",
    "province_code": "provinceCode",
    "country_code": "countryCode",
    "phone": "phone",
}


def _optional_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PayloadError(f"{field}: expected true or false, got {type(value).__name__}")


def normalize_location(payload: Any) -> Record:
    """A location (locations/* webhooks, or a GraphQL `Location` node with its `address`).
    The phone and address are the business's, not a person's."""
    payload = _require_object(payload, "location")
    record = _common(payload, "location")
    if is_graphql_node(payload):
        address = _mapping(payload.get("address"), "location.address")
        record |= {
            "name": optional_text(payload.get("name"), "location.name"),
            "active": _optional_bool(payload.get("isActive"), "location.isActive"),
        }
        record |= {
            column: optional_text(address.get(key), f"location.address.{key}")
            for column, key in _LOCATION_GRAPHQL_ADDRESS.items()
        }
        return _present(record, payload, _LOCATION_GRAPHQL_SOURCES)
    record |= {
        "name": optional_text(payload.get("name"), "location.name"),
        "active": _optional_bool(payload.get("active"), "location.active"),
    }
    record |= {
        column: optional_text(payload.get(column), f"location.{column}")
        for column in _LOCATION_ADDRESS
    }
    return _present(record, payload, _LOCATION_REST_SOURCES)


# -- Columns read by declaration ------------------------------------------------------------
# Most columns are one value at one path of the payload, parsed one way. Declaring them keeps
# the REST and GraphQL readings of a column side by side, and absent-is-not-null in one place.

Parse = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Field:
    """Column `column` is `parse(value at rest)` in a REST body and `parse(value at node)` in a
    GraphQL node (dotted paths; None: that shape does not carry it). A key of the path that
    is missing leaves the column out (absent is not null); a null on the way writes NULL
    (`shipping_address: null` empties the shipping country)."""

    column: str
    rest: str | None
    node: str | None
    parse: Parse


_PATH_PARTS: dict[str, tuple[str, ...]] = {}


def _path_parts(path: str) -> tuple[str, ...]:
    # Paths come from the resource declarations only, so this stays small.
    parts = _PATH_PARTS[path] = tuple(path.split("."))
    return parts


# What read_fields does with each field of a (fields, resource, shape), worked out once:
# (column, path's keys, parse, the name errors give). Keyed by the tuple's identity (hashing
# the fields on every read cost more than reading them); the tuple is kept with its plan.
_PLANS: dict[
    tuple[int, str, bool],
    tuple[tuple[Field, ...], list[tuple[str, tuple[str, ...], Parse, str]]],
] = {}


def _plan(
    fields: tuple[Field, ...], resource: str, graphql: bool
) -> list[tuple[str, tuple[str, ...], Parse, str]]:
    key = (id(fields), resource, graphql)
    found = _PLANS.get(key)
    if found is not None and found[0] is fields:
        return found[1]
    plan = [
        (field.column, _path_parts(path), field.parse, f"{resource}.{path}")
        for field in fields
        if (path := field.node if graphql else field.rest) is not None
    ]
    if len(_PLANS) < 1000:  # field tuples are declarations: a handful
        _PLANS[key] = (fields, plan)
    return plan


def read_fields(
    payload: Mapping[str, Any], fields: tuple[Field, ...], resource: str, *, graphql: bool
) -> Record:
    record: Record = {}
    for column, parts, parse, name in _plan(fields, resource, graphql):
        value: Any = payload
        for part in parts:
            if value is None:
                break
            container = value if type(value) is dict else _mapping(value, name)
            if part not in container:
                break
            value = container[part]
        else:
            record[column] = parse(value, name)
            continue
        if value is None:
            record[column] = None
    return record


def parse_bool(value: Any, field: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PayloadError(f"{field}: expected true or false, got {type(value).__name__}")


def text_list(value: Any, field: str) -> list[str] | None:
    """A list of strings (tracking numbers, urls); a lone string is a list of one."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise PayloadError(f"{field}: expected a list, got {type(value).__name__}")
    return [text for item in value if (text := optional_text(item, field))]


def whole_count(value: Any, field: str) -> int | None:
    """A quantity that may be negative (stock can be oversold)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise PayloadError(f"{field}: expected a whole number, got {value!r}")
    if abs(value) > MAX_SHOPIFY_ID:
        raise PayloadError(f"{field}: {value} is out of range")
    return value


def gid_or_id(value: Any, field: str) -> int | None:
    """An id given as a number, a gid string, or a GraphQL `{ id }` object."""
    if type(value) is dict or isinstance(value, Mapping):  # dict first: spares the ABC check
        value = value.get("id")
    return optional_shopify_id(value, field)


def _order_fields() -> tuple[Field, ...]:
    money = parse_money
    return (
        Field("presentment_currency", "presentment_currency", "presentmentCurrencyCode",
              optional_text),
        Field("total_price_presentment", "total_price_set.presentment_money.amount",
              "totalPriceSet.presentmentMoney.amount", money),
        Field("current_total_price", "current_total_price",
              "currentTotalPriceSet.shopMoney.amount", money),
        Field("total_tax", "total_tax", "totalTaxSet.shopMoney.amount", money),
        Field("total_discounts", "total_discounts", "totalDiscountsSet.shopMoney.amount", money),
        Field("tags", "tags", "tags", normalize_tags),
        Field("note", "note", "note", optional_text),
        Field("cancel_reason", "cancel_reason", "cancelReason", lower_enum),
        Field("closed_at", "closed_at", "closedAt", parse_timestamp),
        Field("source_name", "source_name", "sourceName", optional_text),
        Field("test", "test", "test", parse_bool),
        Field("shipping_country_code", "shipping_address.country_code",
              "shippingAddress.countryCodeV2", optional_text),
        Field("shipping_province_code", "shipping_address.province_code",
              "shippingAddress.provinceCode", optional_text),
    )  # fmt: skip


ORDER_FIELDS = _order_fields()


def marketing_state(value: Any, field: str) -> str | None:
    """REST's consent states; the phone number's newer GraphQL consent says NEVER_SUBSCRIBED
    where REST and the older enums say not_subscribed."""
    state = lower_enum(value, field)
    return "not_subscribed" if state == "never_subscribed" else state


CUSTOMER_FIELDS = (
    Field("tags", "tags", "tags", normalize_tags),
    Field("note", "note", "note", optional_text),
    Field("verified_email", "verified_email", "verifiedEmail", parse_bool),
    # Consent moved onto the email address and phone number in GraphQL; REST keeps the
    # customer-level objects.
    Field("email_marketing_state", "email_marketing_consent.state",
          "defaultEmailAddress.marketingState", lower_enum),
    Field("email_marketing_opt_in_level", "email_marketing_consent.opt_in_level",
          "defaultEmailAddress.marketingOptInLevel", lower_enum),
    Field("email_marketing_updated_at", "email_marketing_consent.consent_updated_at",
          "defaultEmailAddress.marketingUpdatedAt", parse_timestamp),
    Field("sms_marketing_state", "sms_marketing_consent.state",
          "defaultPhoneNumber.smsMarketingConsent.state", marketing_state),
    Field("sms_marketing_opt_in_level", "sms_marketing_consent.opt_in_level",
          "defaultPhoneNumber.smsMarketingConsent.optInLevel", lower_enum),
    Field("sms_marketing_updated_at", "sms_marketing_consent.consent_updated_at",
          "defaultPhoneNumber.smsMarketingConsent.updatedAt", parse_timestamp),
)  # fmt: skip

PRODUCT_FIELDS = (
    Field("published_at", "published_at", "publishedAt", parse_timestamp),
    # REST product bodies name the category by its taxonomy gid and full name like GraphQL.
    Field("category", "category.full_name", "category.fullName", optional_text),
)
