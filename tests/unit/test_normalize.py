"""handlers.normalize: one normaliser per resource, webhook (REST) and backfill (GraphQL) alike.

The GraphQL nodes below are written by hand in the shape the Admin GraphQL API returns (gids,
camelCase, MoneyBags, upper-case enums), describing the same object as the REST sample payload
of the webhook. Both must become the same row.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.normalize import (
    PayloadError,
    normalize_customer,
    normalize_order,
    normalize_product,
    parse_money,
    parse_shopify_id,
    parse_timestamp,
)
from models import Customer, Order, Product
from receiver.samples import sample_payload

ORDER_ID = 820982911946154508
CUSTOMER_ID = 706405506930370084
PRODUCT_ID = 788032119674292922
EMAIL = "russell.winfield@example.com"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def without_raw(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "raw"}


def assert_same_row(rest: dict[str, Any], graphql: dict[str, Any], model: type) -> None:
    columns = set(model.__table__.columns.keys())
    assert set(rest) == set(graphql)
    assert set(rest) <= columns, f"not columns of {model.__tablename__}: {set(rest) - columns}"
    assert without_raw(rest) == without_raw(graphql)
    for record in (rest, graphql):
        for key, value in record.items():
            assert not isinstance(value, float), f"{key} is a float"
            if isinstance(value, datetime):
                assert value.utcoffset() == timedelta(0), f"{key} is not UTC"


def money_bag(amount: str, currency: str = "USD") -> dict[str, Any]:
    return {
        "shopMoney": {"amount": amount, "currencyCode": currency},
        "presentmentMoney": {"amount": amount, "currencyCode": currency},
    }


# --- orders ---------------------------------------------------------------------------------


def graphql_order(
    *,
    updated_at: str,
    financial: str,
    fulfillment: str,
    cancelled_at: str | None = None,
    current_total: str = "112.96",
    tags: tuple[str, ...] = ("gift-wrap",),
    closed_at: str | None = None,
) -> dict[str, Any]:
    return {
        "presentmentCurrencyCode": "USD",
        "currentTotalPriceSet": money_bag(current_total),
        "totalTaxSet": money_bag("16.90"),
        "totalDiscountsSet": money_bag("0.00"),
        "tags": list(tags),
        "note": "Please leave the parcel with the concierge.",
        "closedAt": closed_at,
        "sourceName": "web",
        "test": False,
        "shippingAddress": {"countryCodeV2": "CA", "provinceCode": "ON"},
        "id": "gid://shopify/Order/820982911946154508",
        "legacyResourceId": "820982911946154508",
        "name": "#1001",
        "email": "russell.winfield@example.com",
        "createdAt": "2026-11-20T15:15:03Z",
        "updatedAt": updated_at,
        "processedAt": "2026-11-20T15:15:02Z",
        "cancelledAt": cancelled_at,
        "cancelReason": "CUSTOMER" if cancelled_at else None,
        "currencyCode": "USD",
        "totalPriceSet": money_bag("146.85"),
        "subtotalPriceSet": money_bag("119.96"),
        "displayFinancialStatus": financial,
        "displayFulfillmentStatus": fulfillment,
        "customer": {"id": "gid://shopify/Customer/706405506930370084"},
    }


ORDER_CASES = {
    # topic of the REST sample: (GraphQL node, the row written by hand from the sample)
    "orders/create": (
        graphql_order(
            updated_at="2026-11-20T15:15:04Z",
            financial="AUTHORIZED",
            fulfillment="UNFULFILLED",
            current_total="146.85",
            tags=(),
        ),
        {
            "updated": utc(2026, 11, 20, 15, 15, 4),
            "financial": "authorized",
            "fulfillment": None,
            "cancelled": None,
        },
    ),
    "orders/paid": (
        graphql_order(
            updated_at="2026-11-20T15:42:37Z", financial="PAID", fulfillment="UNFULFILLED", tags=()
        ),
        {
            "updated": utc(2026, 11, 20, 15, 42, 37),
            "financial": "paid",
            "fulfillment": None,
            "cancelled": None,
        },
    ),
    "orders/fulfilled": (
        graphql_order(updated_at="2026-11-21T14:05:11Z", financial="PAID", fulfillment="FULFILLED"),
        {
            "updated": utc(2026, 11, 21, 14, 5, 11),
            "financial": "paid",
            "fulfillment": "fulfilled",
            "cancelled": None,
        },
    ),
    "orders/partially_fulfilled": (
        graphql_order(
            updated_at="2026-11-20T18:20:44Z", financial="PAID", fulfillment="PARTIALLY_FULFILLED"
        ),
        {
            "updated": utc(2026, 11, 20, 18, 20, 44),
            "financial": "paid",
            "fulfillment": "partial",
            "cancelled": None,
        },
    ),
    "orders/cancelled": (
        graphql_order(
            updated_at="2026-11-21T20:48:26Z",
            financial="REFUNDED",
            fulfillment="UNFULFILLED",
            cancelled_at="2026-11-21T20:48:25Z",
            current_total="0.00",
            closed_at="2026-11-21T20:48:26Z",
        ),
        {
            "updated": utc(2026, 11, 21, 20, 48, 26),
            "financial": "refunded",
            "fulfillment": None,
            "cancelled": utc(2026, 11, 21, 20, 48, 25),
        },
    ),
}


@pytest.mark.parametrize("topic", sorted(ORDER_CASES))
def test_order_rest_and_graphql_give_the_same_row(topic):
    node, expected = ORDER_CASES[topic]
    rest = normalize_order(sample_payload(topic))
    graphql = normalize_order(node)
    assert_same_row(rest, graphql, Order)
    assert without_raw(graphql) == {
        "shopify_id": ORDER_ID,
        "shopify_created_at": utc(2026, 11, 20, 15, 15, 3),
        "shopify_updated_at": expected["updated"],
        "name": "#1001",
        "email": EMAIL,
        "customer_shopify_id": CUSTOMER_ID,
        "currency": "USD",
        "total_price": Decimal("146.85"),
        "subtotal_price": Decimal("119.96"),
        "financial_status": expected["financial"],
        "fulfillment_status": expected["fulfillment"],
        "cancelled_at": expected["cancelled"],
        "processed_at": utc(2026, 11, 20, 15, 15, 2),
        "presentment_currency": "USD",
        "total_price_presentment": Decimal("146.85"),
        "current_total_price": Decimal(node["currentTotalPriceSet"]["shopMoney"]["amount"]),
        "total_tax": Decimal("16.90"),
        "total_discounts": Decimal("0.00"),
        "tags": ", ".join(node["tags"]),
        "note": "Please leave the parcel with the concierge.",
        "cancel_reason": "customer" if expected["cancelled"] else None,
        "closed_at": expected["cancelled"] and utc(2026, 11, 21, 20, 48, 26),
        "source_name": "web",
        "test": False,
        "shipping_country_code": "CA",
        "shipping_province_code": "ON",
    }


def test_order_raw_is_the_payload_as_received():
    payload = sample_payload("orders/create")
    assert normalize_order(payload)["raw"] == payload
    node = ORDER_CASES["orders/paid"][0]
    assert normalize_order(node)["raw"] == node


def test_graphql_order_without_currency_code_takes_the_money_bag_currency():
    node = graphql_order(
        updated_at="2026-11-20T15:42:37Z", financial="PAID", fulfillment="UNFULFILLED"
    )
    del node["currencyCode"]
    node["totalPriceSet"] = money_bag("146.85", "CAD")
    assert normalize_order(node)["currency"] == "CAD"


def test_rest_order_with_only_price_sets_reads_the_shop_money():
    payload = sample_payload("orders/create")
    del payload["total_price"], payload["subtotal_price"]
    record = normalize_order(payload)
    assert record["total_price"] == Decimal("146.85")
    assert record["subtotal_price"] == Decimal("119.96")


def test_order_without_customer_has_no_customer_id():
    payload = sample_payload("orders/create") | {"customer": None}
    assert normalize_order(payload)["customer_shopify_id"] is None
    node = graphql_order(
        updated_at="2026-11-20T15:15:04Z", financial="PAID", fulfillment="UNFULFILLED"
    )
    node["customer"] = None
    assert normalize_order(node)["customer_shopify_id"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("total_price", "NaN"),
        ("total_price", "twelve"),
        ("created_at", "2026-11-20T10:15:03"),
        ("id", 2**63),
        ("id", True),
        ("customer", "not an object"),
    ],
)
def test_bad_rest_order_fields_raise_payload_error(field, value):
    payload = sample_payload("orders/create") | {field: value}
    with pytest.raises(PayloadError):
        normalize_order(payload)


@pytest.mark.parametrize("payload", [None, [], "order", 5, {"name": "#1001"}])
def test_payload_that_is_not_a_resource_raises_payload_error(payload):
    for normalize in (normalize_order, normalize_customer, normalize_product):
        with pytest.raises(PayloadError):
            normalize(copy.deepcopy(payload))


# --- customers ------------------------------------------------------------------------------


def graphql_customer(*, state: str, updated_at: str) -> dict[str, Any]:
    return {
        "id": "gid://shopify/Customer/706405506930370084",
        "email": "russell.winfield@example.com",
        "firstName": "Russell",
        "lastName": "Winfield",
        "phone": "+16135551111",
        "state": state,
        "createdAt": "2026-11-20T15:12:41Z",
        "updatedAt": updated_at,
        "amountSpent": {"amount": "199.9", "currencyCode": "USD"},
        "numberOfOrders": "3",
        "note": None if state == "DISABLED" else CUSTOMER_NOTE,
        "verifiedEmail": True,
    }


CUSTOMER_NOTE = "Prefers email contact. Asked about bulk pricing for team orders."


CUSTOMER_CASES = {
    "customers/create": ("DISABLED", "2026-11-20T15:12:41Z", utc(2026, 11, 20, 15, 12, 41)),
    "customers/enable": ("ENABLED", "2026-11-20T16:30:05Z", utc(2026, 11, 20, 16, 30, 5)),
    "customers/update": ("INVITED", "2026-11-20T16:02:17Z", utc(2026, 11, 20, 16, 2, 17)),
}


def before_2025_01(payload: dict[str, Any]) -> dict[str, Any]:
    """A customer webhook as API versions before 2025-01 sent it: with spend and order count."""
    return payload | {"total_spent": "199.90", "orders_count": 3}


@pytest.mark.parametrize("topic", sorted(CUSTOMER_CASES))
def test_customer_rest_and_graphql_give_the_same_row(topic):
    state, updated_text, updated = CUSTOMER_CASES[topic]
    rest = normalize_customer(before_2025_01(sample_payload(topic)))
    graphql = normalize_customer(graphql_customer(state=state, updated_at=updated_text))
    assert_same_row(rest, graphql, Customer)
    assert without_raw(graphql) == {
        "shopify_id": CUSTOMER_ID,
        "shopify_created_at": utc(2026, 11, 20, 15, 12, 41),
        "shopify_updated_at": updated,
        "email": EMAIL,
        "first_name": "Russell",
        "last_name": "Winfield",
        "phone": "+16135551111",
        "state": state.lower(),
        "amount_spent": Decimal("199.90"),
        "currency": "USD",
        "orders_count": 3,
        "note": None if state == "DISABLED" else CUSTOMER_NOTE,
        "verified_email": True,
    }
    assert isinstance(graphql["orders_count"], int)
    assert isinstance(graphql["amount_spent"], Decimal)


def test_graphql_customer_with_default_email_and_phone_objects():
    """Newer API versions move email and phone into defaultEmailAddress/defaultPhoneNumber."""
    node = graphql_customer(state="ENABLED", updated_at="2026-11-20T16:30:05Z")
    del node["email"], node["phone"]
    node["defaultEmailAddress"] = {"emailAddress": EMAIL}
    node["defaultPhoneNumber"] = {"phoneNumber": "+16135551111"}
    rest = normalize_customer(before_2025_01(sample_payload("customers/enable")))
    assert_same_row(rest, normalize_customer(node), Customer)


@pytest.mark.parametrize("topic", sorted(CUSTOMER_CASES))
def test_current_customer_webhook_leaves_spend_and_count_out(topic):
    """Since 2025-01 customer webhooks carry no spend or order count: the record has no such
    columns, so the upsert leaves what a backfill or purchasing summary stored."""
    record = normalize_customer(sample_payload(topic))
    assert not {"amount_spent", "currency", "orders_count"} & set(record)
    assert record["email"] == EMAIL


def test_key_present_with_null_still_writes_null():
    payload = sample_payload("customers/update") | {"total_spent": None, "phone": None}
    del payload["first_name"]
    record = normalize_customer(payload)
    assert record["amount_spent"] is None
    assert record["phone"] is None
    assert "first_name" not in record


def test_rest_customer_with_amount_spent_object():
    payload = sample_payload("customers/create")
    payload["amount_spent"] = {"amount": "199.90", "currency_code": "EUR"}
    record = normalize_customer(payload)
    assert (record["amount_spent"], record["currency"]) == (Decimal("199.90"), "EUR")


@pytest.mark.parametrize("count", ["-1", "three", True, 1.5, [3], "²"])
def test_bad_orders_count_raises_payload_error(count):
    node = graphql_customer(state="ENABLED", updated_at="2026-11-20T16:30:05Z")
    node["numberOfOrders"] = count
    with pytest.raises(PayloadError):
        normalize_customer(node)


# --- products -------------------------------------------------------------------------------


def graphql_product(**changes: Any) -> dict[str, Any]:
    return {
        "id": "gid://shopify/Product/788032119674292922",
        "legacyResourceId": "788032119674292922",
        "title": "Classic Cotton Tee",
        "handle": "classic-cotton-tee",
        "status": "ACTIVE",
        "vendor": "Example Apparel",
        "productType": "T-Shirts",
        "tags": ["Summer", "Sale", "cotton"],
        "createdAt": "2026-11-18T19:02:31Z",
        "updatedAt": "2026-11-18T19:02:33Z",
        "publishedAt": "2026-11-18T19:02:31Z",
        "category": {"fullName": "Apparel & Accessories > Clothing > Clothing Tops > T-Shirts"},
        "variants": {
            "edges": [{"node": {"id": "gid://shopify/ProductVariant/1", "price": "29.99"}}]
        },
    } | changes


def test_product_rest_and_graphql_give_the_same_row():
    rest = normalize_product(sample_payload("products/create"))
    graphql = normalize_product(graphql_product())
    assert_same_row(rest, graphql, Product)
    assert without_raw(graphql) == {
        "shopify_id": PRODUCT_ID,
        "shopify_created_at": utc(2026, 11, 18, 19, 2, 31),
        "shopify_updated_at": utc(2026, 11, 18, 19, 2, 33),
        "title": "Classic Cotton Tee",
        "handle": "classic-cotton-tee",
        "status": "active",
        "vendor": "Example Apparel",
        "product_type": "T-Shirts",
        "tags": "Summer, Sale, cotton",
        "published_at": utc(2026, 11, 18, 19, 2, 31),
        "category": "Apparel & Accessories > Clothing > Clothing Tops > T-Shirts",
    }


@pytest.mark.parametrize(
    ("rest_tags", "graphql_tags", "expected"),
    [
        ("a, b", ["a", "b"], "a, b"),
        ("a,b", ["a", "b"], "a, b"),
        ("", [], ""),
        (" spaced ,  out ", ["spaced", "out"], "spaced, out"),
    ],
)
def test_tags_agree_between_shapes(rest_tags, graphql_tags, expected):
    rest = sample_payload("products/create") | {"tags": rest_tags}
    assert normalize_product(rest)["tags"] == expected
    assert normalize_product(graphql_product(tags=graphql_tags))["tags"] == expected


@pytest.mark.parametrize("status", ["ACTIVE", "DRAFT", "ARCHIVED"])
def test_product_status_enum_becomes_the_rest_spelling(status):
    rest = sample_payload("products/create") | {"status": status.lower()}
    assert normalize_product(graphql_product(status=status))["status"] == status.lower()
    assert normalize_product(rest)["status"] == status.lower()


def test_product_tags_of_the_wrong_type_raise_payload_error():
    with pytest.raises(PayloadError):
        normalize_product(graphql_product(tags={"a": 1}))


# --- timestamps -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-03-29T18:00:27.877041743Z", utc(2023, 3, 29, 18, 0, 27, 877041)),
        # Cut, not rounded: rounding .9999999 would move the second.
        ("2023-03-29T18:00:27.999999999Z", utc(2023, 3, 29, 18, 0, 27, 999999)),
        ("2023-03-29T18:00:27.8Z", utc(2023, 3, 29, 18, 0, 27, 800000)),
        ("2023-03-29T18:00:27z", utc(2023, 3, 29, 18, 0, 27)),
        ("2023-03-29T18:00:27+00:00", utc(2023, 3, 29, 18, 0, 27)),
        ("2026-11-20T10:15:03-05:00", utc(2026, 11, 20, 15, 15, 3)),
        ("2026-11-20T10:15:03.123456789+05:30", utc(2026, 11, 20, 4, 45, 3, 123456)),
        ("2026-12-31T23:30:00-05:00", utc(2027, 1, 1, 4, 30)),
        ("  2023-03-29T18:00:27Z  ", utc(2023, 3, 29, 18, 0, 27)),
    ],
)
def test_parse_timestamp(text, expected):
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed.year, parsed.hour, parsed.microsecond) == (
        expected.year,
        expected.hour,
        expected.microsecond,
    )


@pytest.mark.parametrize("empty", [None, ""])
def test_parse_timestamp_absent_is_none(empty):
    assert parse_timestamp(empty) is None


@pytest.mark.parametrize(
    "value",
    [
        "2023-03-29T18:00:27",  # naive: which zone?
        "2023-03-29T18:00:27.877041743",
        "2023-03-29",
        "yesterday",
        "2023-13-01T00:00:00Z",
        "2023-03-29T25:00:00Z",
        # Shopify's 20-character form, read by its own fast path: still refused when wrong.
        "2023-02-29T18:00:27Z",
        "2023-03-29T18:00:60Z",
        "2023-03-29T18:00:2xZ",
        "2023-03-29T18:00:27+25:00",
        "Z",
        1680112827,
        1680112827.5,
        ["2023-03-29T18:00:27Z"],
        True,
    ],
)
def test_parse_timestamp_refuses(value):
    with pytest.raises(PayloadError):
        parse_timestamp(value, "updated_at")


@pytest.mark.parametrize(
    "text",
    [
        # Valid ISO-8601 with an offset, but the instant is outside datetime's range in UTC.
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_parse_timestamp_out_of_range_after_utc_conversion_is_a_payload_error(text):
    with pytest.raises(PayloadError):
        parse_timestamp(text, "triggered-at")


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)


@given(moment=aware_datetimes)
def test_any_aware_datetime_round_trips_through_isoformat(moment):
    parsed = parse_timestamp(moment.isoformat())
    assert parsed == moment
    assert parsed.utcoffset() == timedelta(0)
    assert parsed.tzinfo is UTC or parsed.tzinfo == UTC


@given(moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
def test_any_utc_moment_in_shopifys_form_is_read_to_the_second(moment):
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    parsed = parse_timestamp(moment.isoformat().replace("+00:00", "Z"))
    assert parsed == moment
    assert parsed.tzinfo is UTC


@given(moment=aware_datetimes, extra=st.integers(min_value=0, max_value=999))
def test_nanosecond_precision_is_cut_to_microseconds(moment, extra):
    text = moment.isoformat(timespec="microseconds")
    date_time, sign, offset = text[:26], text[26], text[27:]
    parsed = parse_timestamp(f"{date_time}{extra:03d}{sign}{offset}")
    assert parsed == moment


@given(moment=st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
def test_any_naive_timestamp_is_refused(moment):
    with pytest.raises(PayloadError):
        parse_timestamp(moment.isoformat())


# --- money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("29.99", Decimal("29.99")),
        ("0.00", Decimal("0.00")),
        ("-5.00", Decimal("-5.00")),
        ("1234567.891", Decimal("1234567.891")),
        (30, Decimal("30")),
        (0, Decimal("0")),
        (0.1, Decimal("0.1")),
        (146.85, Decimal("146.85")),
    ],
)
def test_parse_money(value, expected):
    amount = parse_money(value)
    assert isinstance(amount, Decimal)
    assert amount == expected
    assert str(amount) == str(expected)


@pytest.mark.parametrize(("text", "expected"), [("-0.00", "0.00"), ("12.50", "12.50")])
def test_an_amount_read_again_is_the_same_amount(text, expected):
    # The second reading comes from the amounts already read.
    assert [str(parse_money(text)) for _ in range(2)] == [expected, expected]


def test_amounts_already_read_are_bounded():
    from handlers import normalize

    for cents in range(3 * normalize._MAX_PLAIN_AMOUNTS):
        assert parse_money(f"{cents // 100}.{cents % 100:02d}") == Decimal(cents) / 100
    assert len(normalize._PLAIN_AMOUNTS) <= normalize._MAX_PLAIN_AMOUNTS


def test_float_money_does_not_carry_binary_error():
    assert Decimal.from_float(0.1) != Decimal("0.1")  # what a naive conversion would store
    assert parse_money(0.1) == Decimal("0.1")
    assert parse_money(0.1) + parse_money(0.2) == Decimal("0.3")


@pytest.mark.parametrize("empty", [None, ""])
def test_parse_money_absent_is_none(empty):
    assert parse_money(empty) is None


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-inf",
        "abc",
        "1,000.00",
        "$5.00",
        "5 USD",
        "1e999",
        "1e30",
        10**30,
        True,
        False,
        [],
        {"amount": "1.00"},
    ],
)
def test_parse_money_refuses(value):
    with pytest.raises(PayloadError):
        parse_money(value, "total_price")


two_place_amounts = st.decimals(
    min_value=Decimal("-1000000000000"),
    max_value=Decimal("1000000000000"),
    places=2,
    allow_nan=False,
    allow_infinity=False,
)


@given(amount=two_place_amounts)
def test_any_two_decimal_amount_round_trips_through_str(amount):
    parsed = parse_money(str(amount))
    assert parsed == amount
    assert str(parsed) == str(amount)


@given(amount=two_place_amounts)
def test_any_two_decimal_amount_sent_as_a_json_float_keeps_its_value(amount):
    """Up to 15 significant digits a float's shortest repr is exact, so nothing drifts."""
    assert parse_money(float(str(amount))) == amount


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (820982911946154508, 820982911946154508),
        ("820982911946154508", 820982911946154508),
        ("gid://shopify/Order/820982911946154508", 820982911946154508),
        ("gid://shopify/Customer/1", 1),
        (1, 1),
        (2**63 - 1, 2**63 - 1),
        (str(2**63 - 1), 2**63 - 1),
    ],
)
def test_parse_shopify_id(value, expected):
    parsed = parse_shopify_id(value)
    assert type(parsed) is int
    assert parsed == expected


@pytest.mark.parametrize(
    "value",
    [
        0,
        "0",
        -1,
        "-1",
        2**63,
        str(2**63),
        "gid://shopify/Order/9223372036854775808",
        2**64,
        True,
        False,
        1.0,
        "1.0",
        "",
        " 12",
        "12a",
        "0x1F",
        "gid://shopify/Order/",
        "gid://shopify/Order/abc",
        "gid://shopify/Order/000",
        # Thousands of digits: out of range without being read (int() would raise its own
        # ValueError past 4,300 digits).
        "9" * 5000,
        "gid://shopify/Order/" + "9" * 5000,
        "gid://shopify/Order/" + "0" * 30 + "1" * 20,
        None,
        [1],
        {"id": 1},
        "²",  # str.isdigit() is true for superscripts, int() is not
    ],
)
def test_parse_shopify_id_refuses(value):
    with pytest.raises(PayloadError):
        parse_shopify_id(value, "order.id")


@given(value=st.integers(min_value=1, max_value=2**63 - 1), zeros=st.integers(0, 3))
def test_any_64_bit_id_is_accepted_in_every_spelling(value, zeros):
    assert parse_shopify_id(value) == value
    assert parse_shopify_id(str(value)) == value
    assert parse_shopify_id(f"gid://shopify/Order/{value}") == value
    assert parse_shopify_id(f"gid://shopify/Order/{'0' * zeros}{value}") == value


@given(value=st.one_of(st.integers(max_value=0), st.integers(min_value=2**63)))
def test_any_id_outside_the_64_bit_range_is_refused(value):
    with pytest.raises(PayloadError):
        parse_shopify_id(value)
    with pytest.raises(PayloadError):
        parse_shopify_id(str(value))
