"""Which webhook subscriptions a store should have, and how Shopify's list is judged against
them (backfill/subscriptions.py), without a network or a database."""

from __future__ import annotations

import re
from typing import Any

import pytest

from backfill.subscriptions import (
    INTENDED_TOPICS,
    RemoteSubscription,
    SubscriptionPlan,
    SubscriptionReport,
    _apply,
    app_scopes,
    enum_topic,
    intended_topics,
    plan,
    rest_topic,
    scope_hint,
    stray_reason,
    topic_resource,
)
from handlers import handled_topics
from handlers.resources import accepted_scopes, reconciled_names_for, required_scopes
from tests.fakeshop import admin_schema

URI = "https://receiver.example.com/webhooks/shopify"
OLD_URI = "https://old.example.com/webhooks/shopify"
COMPLIANCE = {"customers/data_request", "customers/redact", "shop/redact"}


def subscription(topic: str, uri: str = URI, number: int = 1, **fields: Any) -> RemoteSubscription:
    return RemoteSubscription(
        gid=f"gid://shopify/WebhookSubscription/{number}", topic=topic, uri=uri, **fields
    )


def schema_topics() -> set[str]:
    return set(admin_schema().get_type("WebhookSubscriptionTopic").values)  # type: ignore[union-attr]


def test_intended_topics_are_the_handled_ones_without_the_compliance_topics() -> None:
    assert set(intended_topics()) == set(handled_topics()) - COMPLIANCE
    assert "orders/create" in INTENDED_TOPICS
    assert "app/uninstalled" in INTENDED_TOPICS
    assert not COMPLIANCE & set(INTENDED_TOPICS)


def test_every_intended_topic_is_a_value_of_the_real_topic_enum() -> None:
    # A topic Shopify's enum lacks would fail every sync with a variable error.
    assert {enum_topic(topic) for topic in INTENDED_TOPICS} <= schema_topics()
    # The compliance topics cannot be subscribed through the API at all.
    assert not {enum_topic(topic) for topic in COMPLIANCE} & schema_topics()


@pytest.mark.parametrize(
    ("rest", "enum"),
    [
        ("orders/create", "ORDERS_CREATE"),
        ("orders/partially_fulfilled", "ORDERS_PARTIALLY_FULFILLED"),
        ("app/uninstalled", "APP_UNINSTALLED"),
        ("bulk_operations/finish", "BULK_OPERATIONS_FINISH"),
        ("shop/update", "SHOP_UPDATE"),
        ("order_transactions/create", "ORDER_TRANSACTIONS_CREATE"),
        ("inventory_items/update", "INVENTORY_ITEMS_UPDATE"),
        ("inventory_levels/disconnect", "INVENTORY_LEVELS_DISCONNECT"),
    ],
)
def test_topic_spellings_convert_both_ways(rest: str, enum: str) -> None:
    assert enum_topic(rest) == enum
    assert rest_topic(enum) == rest


def test_a_topic_we_do_not_know_keeps_its_enum_spelling_rather_than_a_guessed_slash() -> None:
    # Splitting at the first underscore would say "collection/listings_add".
    assert rest_topic("COLLECTION_LISTINGS_ADD") == "COLLECTION_LISTINGS_ADD"


def test_plan_sorts_shopify_list_into_ok_missing_stray_and_duplicates() -> None:
    topics = ["customers/create", "orders/create", "orders/paid", "products/update"]
    kept = subscription("orders/create", number=1)
    copy = subscription("orders/create", number=2)
    old_address = subscription("orders/paid", OLD_URI, number=3)
    unhandled = subscription("SHOP_UPDATE", number=4)
    xml = subscription("products/update", number=5, format="XML")
    filtered = subscription("customers/create", number=6, filter="total_price:>100")
    partial = subscription("customers/create", number=7, include_fields=("id",))

    found = plan([kept, copy, old_address, unhandled, xml, filtered, partial], URI, topics)

    assert found.ok == (kept,)
    assert found.duplicates == (copy,)
    assert found.stray == (old_address, unhandled, xml, filtered, partial)
    assert found.missing == ("customers/create", "orders/paid", "products/update")
    assert not found.in_sync
    assert found.unwanted == (old_address, unhandled, xml, filtered, partial, copy)
    reasons = [stray_reason(s, URI, topics) for s in found.unwanted]
    assert reasons == [
        "another address",
        "topic not handled",
        "XML format",
        "filtered (total_price:>100)",
        "partial payloads (includeFields)",
        "duplicate",
    ]


def test_plan_of_exactly_the_intended_list_is_in_sync() -> None:
    existing = [subscription(t, number=i) for i, t in enumerate(INTENDED_TOPICS)]
    found = plan(existing, URI)
    assert found.in_sync
    assert [s.topic for s in found.ok] == list(INTENDED_TOPICS)
    # The same list at another address is all stray, all missing.
    moved = plan(existing, OLD_URI)
    assert moved.missing == INTENDED_TOPICS
    assert len(moved.stray) == len(INTENDED_TOPICS)


def test_missing_resources_name_the_synced_resources_of_missing_topics() -> None:
    report = SubscriptionReport(
        shop="s.myshopify.com",
        uri=URI,
        dry_run=False,
        missing=["orders/paid", "app/uninstalled", "customers/delete", "orders/create"],
    )
    assert report.missing_resources() == ["customers", "orders"]
    assert not report.in_sync
    assert SubscriptionReport("s.myshopify.com", URI, False).missing_resources() == []


@pytest.mark.parametrize(
    ("topic", "resource"),
    [
        ("refunds/create", "orders"),
        ("order_transactions/create", "orders"),
        ("fulfillments/create", "orders"),
        ("fulfillments/update", "orders"),
        ("inventory_levels/connect", "inventory_items"),
        ("inventory_levels/update", "inventory_items"),
        ("inventory_levels/disconnect", "inventory_items"),
        ("inventory_items/create", "inventory_items"),
        ("inventory_items/update", "inventory_items"),
        ("inventory_items/delete", "inventory_items"),
        ("locations/update", "locations"),
        ("products/update", "products"),
    ],
)
def test_child_topics_map_to_the_resource_whose_backfill_repairs_them(
    topic: str, resource: str
) -> None:
    assert topic_resource(topic) == resource


def test_every_intended_topic_but_app_uninstalled_has_a_resource() -> None:
    unmapped = [topic for topic in INTENDED_TOPICS if topic_resource(topic) is None]
    assert unmapped == ["app/uninstalled"]


def test_a_gap_in_child_topics_backfills_and_reconciles_their_parents_and_children() -> None:
    report = SubscriptionReport(
        shop="s.myshopify.com",
        uri=URI,
        dry_run=False,
        missing=["inventory_levels/update", "refunds/create", "products/update"],
    )
    # The backfill's resources, in registry order; reconcile adds what each one covers.
    assert report.missing_resources() == ["products", "orders", "inventory_items"]
    assert reconciled_names_for(report.missing_resources()) == [
        "products",
        "product_variants",
        "orders",
        "inventory_items",
    ]


class ScriptedClient:
    """Answers mutations from a script, recording what was sent (stands in for AdminClient)."""

    def __init__(self, answers: list[dict[str, Any]], scopes: tuple[str, ...] = ()) -> None:
        self.answers = answers
        self.scopes = scopes
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def execute(
        self, query: str, variables: dict[str, Any] | None = None, *, cost: float = 0.0
    ) -> dict[str, Any]:
        if "accessScopes" in query:
            self.sent.append(("scopes", {}))
            handles = [{"handle": handle} for handle in self.scopes]
            return {"currentAppInstallation": {"accessScopes": handles}}
        name = "create" if "webhookSubscriptionCreate" in query else "delete"
        self.sent.append((name, dict(variables or {})))
        return self.answers.pop(0)


def created(errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"webhookSubscriptionCreate": {"webhookSubscription": None, "userErrors": errors or []}}


def deleted(errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "webhookSubscriptionDelete": {
            "deletedWebhookSubscriptionId": None,
            "userErrors": errors or [],
        }
    }


TAKEN = {
    "field": ["webhookSubscription", "callbackUrl"],
    "message": "Address for this topic has already been taken",
}
GONE = {"field": ["id"], "message": "Webhook subscription does not exist"}


async def test_an_address_held_by_an_xml_subscription_is_freed_and_the_create_retried() -> None:
    # Whether Shopify counts another format at the same address as taken is not documented;
    # either way the sync must end with a JSON subscription there.
    xml = subscription("orders/create", number=9, format="XML")
    found = plan([xml], URI, ["orders/create"])
    client = ScriptedClient([created([TAKEN]), deleted(), created()])
    report = SubscriptionReport("s.myshopify.com", URI, False)

    await _apply(client, found, report, "s.myshopify.com")  # type: ignore[arg-type]

    assert [name for name, _ in client.sent] == ["create", "delete", "create"]
    assert client.sent[1][1] == {"id": xml.gid}
    assert client.sent[2][1] == {
        "topic": "ORDERS_CREATE",
        "subscription": {"uri": URI, "format": "JSON"},
    }
    assert (report.created, report.deleted, report.errors) == (["orders/create"], [xml], [])


async def test_refusals_are_reported_and_an_already_deleted_subscription_is_not_an_error() -> None:
    stale = subscription("orders/paid", OLD_URI, number=3)
    found = SubscriptionPlan(URI, ok=(), missing=("orders/create",), stray=(stale,), duplicates=())
    refused = {"field": ["webhookSubscription", "callbackUrl"], "message": "Address is invalid"}
    # write_orders includes read_orders: the refusal is not about a scope.
    client = ScriptedClient([created([refused]), deleted([GONE])], scopes=("write_orders",))
    report = SubscriptionReport("s.myshopify.com", URI, False)

    await _apply(client, found, report, "s.myshopify.com")  # type: ignore[arg-type]

    assert report.created == []
    assert report.errors == ["could not subscribe to orders/create: Address is invalid"]
    assert report.deleted == [stale]


async def test_a_refusal_for_want_of_a_scope_names_the_scope_to_grant() -> None:
    topics = ("inventory_levels/update", "fulfillments/create", "orders/paid")
    found = SubscriptionPlan(URI, ok=(), missing=topics, stray=(), duplicates=())
    denied = {"field": ["topic"], "message": "Access denied"}
    client = ScriptedClient(
        [created([denied]), created([denied]), created()],
        scopes=("read_orders", "read_products"),
    )
    report = SubscriptionReport("s.myshopify.com", URI, False)

    await _apply(client, found, report, "s.myshopify.com")  # type: ignore[arg-type]

    # Shopify's granted scopes are asked once, after the first refusal.
    assert [name for name, _ in client.sent] == ["create", "scopes", "create", "create"]
    assert report.created == ["orders/paid"]
    [levels, fulfillments] = report.errors
    assert levels.startswith("could not subscribe to inventory_levels/update: Access denied")
    assert "not granted the read_inventory access scope" in levels
    assert "not granted the read_fulfillments access scope" in fulfillments


# --- access scopes ---------------------------------------------------------------------------

_REQUIRES = re.compile(
    r"Requires\s+(?:the\s+`(?P<one>\w+)`\s+scope"
    r"|at\s+least\s+one\s+of\s+the\s+following\s+scopes:\s+(?P<any>[\w,\s]+?)\.)"
)


def schema_scopes(enum: str) -> set[str]:
    """The scopes the real schema's description of a topic says Shopify requires."""
    value = admin_schema().get_type("WebhookSubscriptionTopic").values[enum]  # type: ignore[union-attr]
    found = _REQUIRES.search(value.description or "")
    if found is None:
        return set()
    if found["one"]:
        return {found["one"]}
    return {scope.strip() for scope in found["any"].split(",") if scope.strip()}


@pytest.mark.parametrize("topic", INTENDED_TOPICS)
def test_each_topic_asks_for_a_scope_shopify_accepts_for_it(topic: str) -> None:
    required = schema_scopes(enum_topic(topic))
    accepted = accepted_scopes(topic)
    if not required:
        assert accepted == ()
        return
    assert accepted, f"{topic} requires one of {sorted(required)}"
    assert set(accepted) <= required


def test_the_scopes_the_app_needs_are_listed_once_in_order() -> None:
    assert (
        app_scopes()
        == required_scopes(INTENDED_TOPICS)
        == [
            "read_customers",
            "read_fulfillments",
            "read_inventory",
            "read_locations",
            "read_orders",
            "read_products",
        ]
    )


def test_a_refusal_names_the_scope_only_when_the_app_lacks_it() -> None:
    granted = {"read_orders", "read_products"}
    assert "read_inventory" in scope_hint("inventory_levels/update", granted)
    assert scope_hint("orders/create", granted) == ""
    # inventory_items/* take read_products too.
    assert scope_hint("inventory_items/update", granted) == ""
    assert "read_fulfillments" in scope_hint("fulfillments/update", granted)
    assert "read_fulfillments" in scope_hint("fulfillments/update", None)
    assert scope_hint("app/uninstalled", set()) == ""
