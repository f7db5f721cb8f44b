"""The simulator's webhooks: REST payloads that normalise exactly like the GraphQL nodes of
the same records, signed and addressed the way Shopify's are, delivered to subscriptions with
Shopify's semantics (fan-out, skipped without subscribers, removal after 8 failures) and on
demand out of order or twice.

Deliveries go through an ``httpx.MockTransport`` here (no server needed to see the bytes);
tests/integration/test_handoff.py sends them to the real receiver.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from backfill.queries import ORDER_FIELDS, RESOURCES
from handlers.normalize import (
    Record,
    normalize_customer,
    normalize_order,
    normalize_product,
    parse_timestamp,
)
from receiver.samples import sample_payload
from receiver.signature import verify_signature
from tests.fakeshop import FakeShopServer, FakeStore, GraphQLRequest, ManualClock, select
from tests.fakeshop.rest import RestRenderer
from tests.fakeshop.subscriptions import FAILURES_BEFORE_REMOVAL
from tests.unit.test_fakeshop import flat_page_query

SECRET = "shpss_webhook_test_secret"
URL = "https://receiver.example/webhooks/shopify"
OTHER_URL = "https://second.example/webhooks/shopify"
NORMALIZERS: dict[str, Callable[[Any], Record]] = {
    "orders": normalize_order,
    "customers": normalize_customer,
    "products": normalize_product,
    "locations": RESOURCES["locations"].normalize_rest,
}
# What the backfill selects: the GraphQL side of the comparison is the node it really reads.
BACKFILL_FIELDS = {name: resource.fields for name, resource in RESOURCES.items()}
# GraphQL fulfilment statuses with no REST counterpart: REST says null for them (see
# test_rest_and_graphql_agree_on_in_progress_and_on_hold_orders).
NO_REST_FULFILLMENT = {"IN_PROGRESS", "ON_HOLD"}


def changed_store(seed: int) -> FakeStore:
    """A store whose records cover the shapes that matter: generated ones (cancelled, guest,
    no phone, no tags), changed ones through every alias, created ones, and orders whose
    customer was deleted."""
    clock = ManualClock()
    store = FakeStore(
        f"equivalence-{seed}", seed=seed, customers=200, products=120, orders=800, clock=clock
    )
    clock.advance(90)
    store.update_order(3, financial_status="refunded", total_price="12.30", subtotal_price="10.00")
    store.update_order(4, fulfillment_status="fulfilled", cancel_reason="fraud", tags="a, b")
    store.update_order(5, customer=None, email="guest@example.net")
    store.update_order(6, cancelled_at="2025-06-01T12:00:00Z", note="late")
    store.update_customer(2, email="new@example.com", first_name="Ada", phone=None)
    store.update_customer(3, state="declined", amount_spent="0", orders_count=0, tags=[])
    store.update_product(4, status="archived", tags="x, y", title="Renamed", product_type="")
    store.delete_customer(7)  # orders of customer 7 now reference nobody, in both APIs
    clock.advance(30)
    store.create_order(email="new@example.org", total_price="1.00", customer=1)
    store.create_customer(email="created@example.com")
    store.create_product(title="Created", tags=["new"])
    return store


def live_nodes(store: FakeStore, resource: str) -> Iterator[tuple[int, dict[str, Any]]]:
    source = store.resource(resource)
    for index in range(source.total):
        node = source.node(index)
        if node is not None:
            yield index, node


def as_received(payload: dict[str, Any]) -> dict[str, Any]:
    """What the receiver parses: the JSON bytes read back."""
    loaded: dict[str, Any] = json.loads(json.dumps(payload))
    return loaded


def differences(graphql: Record, rest: Record) -> dict[str, tuple[Any, Any]]:
    """Columns both records write with different values (a column one leaves out, it leaves
    alone: absent is not null)."""
    return {
        column: (graphql[column], rest[column])
        for column in graphql
        if column != "raw" and column in rest and graphql[column] != rest[column]
    }


@pytest.mark.parametrize(
    ("seed", "utc_offset", "spend"),
    [
        (1, timedelta(hours=-5), "total_spent"),
        (2, timedelta(0), "amount_spent"),
        (3, timedelta(hours=5, minutes=30), "total_spent"),
        (4, timedelta(hours=-5), "current"),
    ],
)
def test_rest_payload_normalises_to_the_same_record_as_the_graphql_node(seed, utc_offset, spend):
    """The key property: a webhook and the backfill write identical rows for one record, so
    "the database equals the simulator's store" is checkable whichever path wrote a row."""
    store = changed_store(seed)
    renderer = RestRenderer(store, utc_offset=utc_offset, spend=spend)
    compared = 0
    for resource, normalize in NORMALIZERS.items():
        for index, node in live_nodes(store, resource):
            graphql = normalize(select(node, BACKFILL_FIELDS[resource]))
            rest = normalize(as_received(renderer.render(resource, node)))
            if resource == "orders" and node["displayFulfillmentStatus"] in NO_REST_FULFILLMENT:
                rest["fulfillment_status"] = graphql["fulfillment_status"]  # known, see below
            assert differences(graphql, rest) == {}, (resource, index)
            if resource == "customers" and spend == "current":
                # Absent, so left alone: customers/purchasing_summary carries them now.
                # So are tags and marketing consent (REMOVED_IN_2025_01 in the simulator).
                assert set(graphql) - set(rest) == {
                    "amount_spent",
                    "currency",
                    "orders_count",
                    "tags",
                    *(column for column in graphql if "marketing" in column),
                }
            else:
                assert set(rest) == set(graphql)
            compared += 1
    assert compared == sum(store.counts.values())


def test_rest_and_graphql_agree_on_in_progress_and_on_hold_orders():
    store = changed_store(1)
    renderer = RestRenderer(store)
    for _, node in live_nodes(store, "orders"):
        if node["displayFulfillmentStatus"] in NO_REST_FULFILLMENT:
            graphql = normalize_order(select(node, ORDER_FIELDS))
            rest = normalize_order(as_received(renderer.order(node)))
            assert graphql["fulfillment_status"] == rest["fulfillment_status"]


@pytest.mark.parametrize("resource", ["orders", "customers", "products"])
def test_rest_payloads_use_shopify_s_field_names_and_types(resource):
    """Every field rendered is one Shopify's sample of that topic has, with its type."""
    store = changed_store(4)
    sample = sample_payload(f"{resource}/create")
    node = store.resource(resource).node(3)
    assert node is not None
    payload = RestRenderer(store, spend="current").render(resource, node)
    assert set(payload) <= set(sample), set(payload) - set(sample)
    assert isinstance(payload["id"], int)
    assert payload["admin_graphql_api_id"] == node["id"]
    assert parse_timestamp(payload["updated_at"]) == parse_timestamp(node["updatedAt"])
    assert payload["updated_at"].endswith("-05:00")  # the shop's zone, as REST renders it
    if resource != "customers":
        assert isinstance(payload["tags"], str)
    if resource == "orders":
        assert isinstance(payload["total_price"], str)
        assert payload["total_price_set"]["shop_money"] == {
            "amount": payload["total_price"],
            "currency_code": payload["currency"],
        }
        assert payload["financial_status"] == payload["financial_status"].lower()
        line = payload["line_items"][0]
        assert set(line) <= set(sample["line_items"][0])
        # Line items are kept as the order was placed (changing its totals later moves none).
        placed = store.orders.build(3, *store.orders.generated_times(3))
        subtotal = placed["subtotalPriceSet"]["shopMoney"]["amount"]
        total = sum(int(item["price"].replace(".", "")) for item in payload["line_items"])
        assert total == int(subtotal.replace(".", ""))
        assert set(payload["customer"]) <= set(sample["customer"])
    if resource == "customers":
        assert payload["state"] == payload["state"].lower()
        assert "total_spent" not in payload
        assert "orders_count" not in payload
        old_shape = RestRenderer(store).render(resource, node)
        assert isinstance(old_shape["total_spent"], str)
    if resource == "products":
        assert payload["variants"]
        assert set(payload["variants"][0]) <= set(sample["variants"][0])
        assert all(isinstance(variant["price"], str) for variant in payload["variants"])


# -- the emitter --


class Recorder:
    """A webhook endpoint in memory: records each request, answers with ``status``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status: Callable[[httpx.Request], int] = lambda request: 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status(request))

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def store(recorder: Recorder) -> Iterator[FakeStore]:
    clock = ManualClock()
    shop = FakeStore("emitter", seed=9, customers=20, products=10, orders=50, clock=clock)
    shop.webhooks.enable(SECRET, client=httpx.Client(transport=httpx.MockTransport(recorder)))
    yield shop
    shop.webhooks.disable()


def subscribe(store: FakeStore, *topics: str, uri: str = URL) -> None:
    for topic in topics:
        store.subscriptions.create(topic, uri)


def test_emission_is_off_unless_enabled():
    store = FakeStore("quiet", orders=5, customers=2, products=2)
    store.subscriptions.create("orders/updated", URL)
    store.update_order(1, total_price="1.00")
    store.create_order()
    store.delete_order(0)
    assert store.webhooks.log == []
    assert store.webhooks.counts["emitted"] == 0


def test_each_change_becomes_its_topic_with_a_signed_rest_body(store, recorder):
    topics = [f"{r}/{a}" for r in ("customers", "products") for a in ("create", "update", "delete")]
    subscribe(store, *topics, "orders/create", "orders/updated", "orders/delete")
    store.update_customer(1, first_name="Grace")
    store.create_customer(email="c@example.com")
    store.delete_customer(2)
    store.update_product(1, title="New")
    store.create_product(title="Made")
    store.delete_product(2)
    store.update_order(1, financial_status="refunded")
    store.create_order(email="o@example.com")
    store.delete_order(2)
    sent = [request.headers["X-Shopify-Topic"] for request in recorder.requests]
    assert sent == [
        "customers/update",
        "customers/create",
        "customers/delete",
        "products/update",
        "products/create",
        "products/delete",
        "orders/updated",
        "orders/create",
        "orders/delete",
    ]
    for request in recorder.requests:
        assert verify_signature(request.content, request.headers["X-Shopify-Hmac-Sha256"], [SECRET])
        assert not verify_signature(
            request.content, request.headers["X-Shopify-Hmac-Sha256"], ["x"]
        )
        assert request.headers["X-Shopify-Shop-Domain"] == "emitter.myshopify.com"
        assert request.headers["X-Shopify-API-Version"] == "2026-10"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["X-Shopify-Webhook-Id"]
        assert request.headers["X-Shopify-Event-Id"]
        triggered = request.headers["X-Shopify-Triggered-At"]
        assert triggered.endswith("000Z")  # nanoseconds, as Shopify sends them
        assert parse_timestamp(triggered) == store.clock.now()
    bodies = recorder.bodies()
    assert bodies[0]["first_name"] == "Grace"
    assert bodies[2] == {
        "id": store.customers.numeric_id(2),
        "tax_exemptions": [],
        "admin_graphql_api_id": store.customers.gid(2),
    }
    assert bodies[6]["financial_status"] == "refunded"
    assert bodies[8] == {"id": store.orders.numeric_id(2)}
    node = store.order_node(1)
    assert node is not None
    assert normalize_order(bodies[6])["shopify_updated_at"] == parse_timestamp(node["updatedAt"])
    assert len({request.headers["X-Shopify-Event-Id"] for request in recorder.requests}) == 9
    # A created or deleted product also sends its inventory items' topics (and the created
    # one's levels): nobody here subscribed to them.
    inventory = [event for event in store.webhooks.log if event.topic.startswith("inventory_")]
    assert {event.topic for event in inventory} >= {
        "inventory_items/create",
        "inventory_items/delete",
    }
    assert all(event.skipped for event in inventory)
    assert store.webhooks.counts == {
        "emitted": 9 + len(inventory),
        "delivered": 9,
        "failed": 0,
        "skipped": len(inventory),
        "duplicates": 0,
        "pending": 0,
    }


def test_without_a_subscription_nothing_is_sent_and_the_event_counts_as_skipped(store, recorder):
    subscribe(store, "orders/create")
    store.update_order(1, financial_status="paid")
    assert recorder.requests == []
    assert store.webhooks.skipped == 1
    assert store.webhooks.last is not None
    assert store.webhooks.last.skipped
    store.subscriptions.drop("orders/create")  # as Shopify does after repeated failures
    store.create_order()
    assert recorder.requests == []
    assert store.webhooks.skipped == 2


def test_one_event_fans_out_with_one_event_id_and_a_webhook_id_per_subscription(store, recorder):
    subscribe(store, "products/update")
    subscribe(store, "products/update", uri=OTHER_URL)
    store.update_product(3, vendor="Acme")
    first, second = recorder.requests
    assert {str(first.url), str(second.url)} == {URL, OTHER_URL}
    assert first.headers["X-Shopify-Event-Id"] == second.headers["X-Shopify-Event-Id"]
    assert first.headers["X-Shopify-Webhook-Id"] != second.headers["X-Shopify-Webhook-Id"]
    assert first.content == second.content


def test_a_redelivery_repeats_the_bytes_and_both_ids(store, recorder):
    subscribe(store, "orders/updated")
    store.update_order(2, total_price="9.99")
    event = store.webhooks.last
    assert event is not None
    store.webhooks.redeliver(event)
    store.webhooks.enable(SECRET, duplicate=True)
    store.update_order(3, total_price="8.88")
    first, again, third, third_again = recorder.requests
    for one, other in ((first, again), (third, third_again)):
        assert one.content == other.content
        assert dict(one.headers) == dict(other.headers)
    assert store.webhooks.duplicates == 2
    assert store.webhooks.delivered == 4


def test_held_events_are_released_in_the_order_asked(store, recorder):
    subscribe(store, "orders/updated")
    with store.webhooks.held("reverse") as delivered:
        for version in range(1, 4):
            store.clock.advance(1)
            store.update_order(5, note=f"v{version}")
        assert recorder.requests == []
        assert store.webhooks.pending == 3
    assert [event.payload["note"] for event in delivered] == ["v3", "v2", "v1"]
    assert [body["note"] for body in recorder.bodies()] == ["v3", "v2", "v1"]
    stamps = [parse_timestamp(body["updated_at"]) for body in recorder.bodies()]
    assert stamps == sorted(stamps, reverse=True)

    def shuffled(seed: int) -> list[str]:
        store.webhooks.hold()
        for version in range(6):
            store.update_order(6, note=f"s{version}")
        return [event.payload["note"] for event in store.webhooks.release("shuffled", seed=seed)]

    assert shuffled(4) == shuffled(4)
    assert sorted(shuffled(5)) == [f"s{version}" for version in range(6)]
    store.webhooks.hold()
    for version in range(3):
        store.update_order(7, note=f"p{version}")
    chosen = store.webhooks.release([2, 0, 1])
    assert [event.payload["note"] for event in chosen] == ["p2", "p0", "p1"]


def test_queued_mode_delivers_on_flush(store, recorder):
    subscribe(store, "customers/update")
    store.webhooks.enable(SECRET, queued=True)
    store.update_customer(1, last_name="Hopper")
    assert recorder.requests == []
    assert store.webhooks.flush()
    assert len(recorder.requests) == 1


def test_eight_failures_in_a_row_remove_the_subscription(store, recorder):
    subscribe(store, "orders/updated")
    recorder.status = lambda request: 500
    store.update_order(1, note="fails")
    for _ in range(FAILURES_BEFORE_REMOVAL - 2):
        assert store.webhooks.retry_failed() == 1
    assert store.subscriptions.for_topic("orders/updated") != []
    assert store.webhooks.retry_failed() == 1  # the eighth failure
    assert store.subscriptions.for_topic("orders/updated") == []
    assert [s.uri for s in store.subscriptions.removed] == [URL]
    assert store.webhooks.failed == FAILURES_BEFORE_REMOVAL
    webhook_ids = {request.headers["X-Shopify-Webhook-Id"] for request in recorder.requests}
    assert len(webhook_ids) == 1  # retries keep the webhook id
    assert store.webhooks.retry_failed() == 0
    store.update_order(1, note="nobody listens")
    assert store.webhooks.skipped == 1


def test_a_success_resets_the_failure_count(store, recorder):
    subscribe(store, "orders/updated")
    answers = iter([500] * 7 + [200] + [500] * 7)
    recorder.status = lambda request: next(answers)
    for version in range(15):
        store.update_order(1, note=f"v{version}")
    assert store.subscriptions.for_topic("orders/updated") != []
    assert (store.webhooks.delivered, store.webhooks.failed) == (1, 14)


def test_a_redirect_or_a_dead_endpoint_is_a_failure(store, recorder):
    subscribe(store, "orders/updated")
    recorder.status = lambda request: 302
    store.update_order(1, note="moved")
    store.webhooks.enable(SECRET, client=httpx.Client(transport=httpx.MockTransport(refuse)))
    store.update_order(1, note="refused")
    assert store.webhooks.failed == 2
    attempts = [event.deliveries[0].attempts[0] for event in store.webhooks.log]
    assert [(attempt.status, attempt.ok) for attempt in attempts] == [(302, False), (None, False)]
    assert attempts[1].error is not None
    assert "ConnectError" in attempts[1].error


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_include_fields_cut_the_body_and_its_signature(store, recorder):
    store.subscriptions.create("orders/updated", URL, include_fields=("id", "updated_at"))
    store.update_order(1, note="cut")
    (request,) = recorder.requests
    assert set(json.loads(request.content)) == {"id", "updated_at"}
    assert verify_signature(request.content, request.headers["X-Shopify-Hmac-Sha256"], [SECRET])


def test_explicit_topics_render_the_record(store, recorder):
    subscribe(store, "orders/paid")
    store.update_order(4, financial_status="paid")
    store.webhooks.emit("orders/paid", resource="orders", index=4)
    (request,) = recorder.requests
    assert request.headers["X-Shopify-Topic"] == "orders/paid"
    assert json.loads(request.content)["financial_status"] == "paid"


# -- request hooks --


def test_a_hook_runs_between_answer_and_response():
    clock = ManualClock()
    store = FakeStore("hooked", seed=2, customers=5, products=5, orders=30, clock=clock)
    seen: list[GraphQLRequest] = []

    def change_after_first_page(request: GraphQLRequest) -> None:
        seen.append(request)
        if request.page_of("orders") and len(seen) == 1:
            clock.advance(5)
            store.update_order(1, note="changed in the hook")
            store.update_order(20, note="changed in the hook")

    store.on_request(change_after_first_page)
    query = flat_page_query(RESOURCES["orders"])
    with FakeShopServer(store) as server, httpx.Client() as client:

        def page(after: str | None) -> dict[str, Any]:
            response = client.post(
                server.graphql_url(),
                json={"query": query, "variables": {"first": 10, "after": after}},
                headers={"X-Shopify-Access-Token": store.access_token},
            )
            data: dict[str, Any] = response.json()["data"]["orders"]
            return data

        first = page(None)
        second = page(first["pageInfo"]["endCursor"])
        third = page(second["pageInfo"]["endCursor"])
    assert [request.number for request in seen] == [1, 2, 3]
    assert seen[0].root_fields == ("orders",)
    assert seen[0].variables["first"] == 10
    updated = {node["id"]: node["updatedAt"] for node in first["nodes"] + third["nodes"]}
    # The page already computed keeps the old record; the next one has the change.
    assert updated[store.orders.gid(1)] < "2025"
    assert updated[store.orders.gid(20)] == clock.now().isoformat().replace("+00:00", "Z")
    assert store.hooks.errors == []


def test_a_failing_hook_is_recorded_and_the_answer_still_sent():
    store = FakeStore("hook-error", seed=2, customers=5, products=5, orders=5)

    def broken(request: GraphQLRequest) -> None:
        raise AssertionError("inside the hook")

    store.on_request(broken)
    with FakeShopServer(store) as server:
        response = httpx.post(
            server.graphql_url(),
            json={"query": "{ shop { name } }"},
            headers={"X-Shopify-Access-Token": store.access_token},
        )
    assert response.status_code == 200
    assert [str(error) for error in store.hooks.errors] == ["inside the hook"]


def test_stamps_match_the_clock():
    clock = ManualClock(start=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    store = FakeStore("stamps", seed=1, customers=2, products=2, orders=2, clock=clock)
    node = store.update_order(1, note="x")
    payload = RestRenderer(store).order(node)
    assert payload["updated_at"] == "2026-01-01T22:04:05-05:00"


def test_a_filter_keeps_non_matching_events_from_its_subscription(store, recorder):
    store.subscriptions.create("orders/updated", URL, filter="financial_status:refunded")
    store.subscriptions.create(
        "orders/updated", OTHER_URL, filter="total_price:>=100 AND line_items.quantity:1"
    )
    store.update_order(1, financial_status="refunded", total_price="5.00")
    store.update_order(2, financial_status="paid", total_price="150.00")
    store.update_order(3, financial_status="paid", total_price="5.00")
    sent = [(str(r.url), json.loads(r.content)["id"]) for r in recorder.requests]
    assert sent == [(URL, store.orders.numeric_id(1)), (OTHER_URL, store.orders.numeric_id(2))]
    assert store.webhooks.skipped == 1
    store.subscriptions.create("orders/create", URL, filter="status:a OR status:b")
    with pytest.raises(NotImplementedError, match="not simulated"):
        store.create_order()
