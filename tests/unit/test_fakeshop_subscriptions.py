"""The simulator's webhook subscription API (tests/fakeshop/subscription_api.py) answers like
Shopify: documents validated against the real 2026-10 schema, Shopify's userErrors, paging,
cost. Everything goes over real HTTP to an in-process server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backfill.subscriptions import DOCUMENTS, LIST_SUBSCRIPTIONS
from tests.fakeshop import FakeShopServer, FakeStore, check_document

URI = "https://receiver.example.com/webhooks/shopify"
CREATE = """
mutation Create($topic: WebhookSubscriptionTopic!, $input: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $input) {
    webhookSubscription { id topic uri format }
    userErrors { field message }
  }
}
"""
UPDATE = """
mutation Update($id: ID!, $input: WebhookSubscriptionInput!) {
  webhookSubscriptionUpdate(id: $id, webhookSubscription: $input) {
    webhookSubscription { id topic uri format updatedAt }
    userErrors { field message }
  }
}
"""
DELETE = """
mutation Delete($id: ID!) {
  webhookSubscriptionDelete(id: $id) { deletedWebhookSubscriptionId userErrors { field message } }
}
"""
PAGE = """
query Page($first: Int, $last: Int, $after: String, $before: String, $reverse: Boolean,
           $topics: [WebhookSubscriptionTopic!], $uri: String) {
  webhookSubscriptions(first: $first, last: $last, after: $after, before: $before,
                       reverse: $reverse, topics: $topics, uri: $uri) {
    edges { cursor node { legacyResourceId topic } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""
EVERY_FIELD = """
query Every {
  webhookSubscriptions(first: 5) {
    nodes {
      id legacyResourceId topic uri format name filter includeFields metafieldNamespaces
      createdAt updatedAt apiVersion { handle displayName supported }
      callbackUrl
      endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } }
    }
  }
}
"""

_numbers = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeShopServer]:
    with FakeShopServer([]) as served:
        yield served


@pytest.fixture
def store(server: FakeShopServer) -> FakeStore:
    return server.add_store(FakeStore(f"subs-{next(_numbers)}", customers=1, products=1, orders=1))


def post(
    server: FakeShopServer, store: FakeStore, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = httpx.post(
        server.graphql_url(store.shop_domain),
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": store.access_token},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def create(
    server: FakeShopServer, store: FakeStore, topic: str, **input_fields: Any
) -> dict[str, Any]:
    body = post(server, store, CREATE, {"topic": topic, "input": {"uri": URI} | input_fields})
    result: dict[str, Any] = body["data"]["webhookSubscriptionCreate"]
    return result


def test_our_documents_validate_against_the_real_schema_without_deprecated_fields() -> None:
    for document in DOCUMENTS:
        checked = check_document(document)
        assert checked.errors == (), (document, checked.errors)
        assert checked.deprecated == (), checked.deprecated


def test_created_subscriptions_are_listed_with_every_field(
    server: FakeShopServer, store: FakeStore
) -> None:
    made = create(server, store, "ORDERS_PARTIALLY_FULFILLED")
    assert made["userErrors"] == []
    assert made["webhookSubscription"]["topic"] == "ORDERS_PARTIALLY_FULFILLED"
    assert made["webhookSubscription"]["uri"] == URI

    body = post(server, store, EVERY_FIELD)
    assert "errors" not in body, body
    [node] = body["data"]["webhookSubscriptions"]["nodes"]
    assert node["id"] == made["webhookSubscription"]["id"]
    assert node["id"] == f"gid://shopify/WebhookSubscription/{node['legacyResourceId']}"
    assert node | {"createdAt": None, "updatedAt": None} == {
        "id": node["id"],
        "legacyResourceId": node["legacyResourceId"],
        "topic": "ORDERS_PARTIALLY_FULFILLED",
        "uri": URI,
        "format": "JSON",
        "name": None,
        "filter": None,
        "includeFields": [],
        "metafieldNamespaces": [],
        "createdAt": None,
        "updatedAt": None,
        "apiVersion": {"handle": "2026-10", "displayName": "2026-10", "supported": True},
        "callbackUrl": URI,
        "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": URI},
    }
    assert node["createdAt"].endswith("Z")
    # Still answered, and counted, as Shopify still answers deprecated fields.
    assert store.stats.deprecated_fields["WebhookSubscription.callbackUrl"] == 1
    assert store.stats.deprecated_fields["WebhookSubscription.endpoint"] == 1
    assert store.subscriptions.list()[0].topic == "ORDERS_PARTIALLY_FULFILLED"


def test_user_errors_read_like_shopify(server: FakeShopServer, store: FakeStore) -> None:
    first = create(server, store, "ORDERS_CREATE")["webhookSubscription"]
    taken_field = ["webhookSubscription", "callbackUrl"]
    assert create(server, store, "ORDERS_CREATE") == {
        "webhookSubscription": None,
        "userErrors": [
            {"field": taken_field, "message": "Address for this topic has already been taken"}
        ],
    }
    # Another topic, or another format, at the same address is another subscription.
    assert create(server, store, "ORDERS_PAID")["userErrors"] == []
    assert create(server, store, "ORDERS_CREATE", format="XML")["userErrors"] == []
    assert create(server, store, "ORDERS_UPDATED", uri="")["userErrors"] == [
        {"field": taken_field, "message": "Address can't be blank"}
    ]
    assert create(server, store, "ORDERS_UPDATED", uri="receiver.example.com")["userErrors"] == [
        {"field": taken_field, "message": "Address is invalid"}
    ]

    unknown = "gid://shopify/WebhookSubscription/999"
    not_found = [{"field": ["id"], "message": "Webhook subscription does not exist"}]
    assert post(server, store, DELETE, {"id": unknown})["data"]["webhookSubscriptionDelete"] == {
        "deletedWebhookSubscriptionId": None,
        "userErrors": not_found,
    }
    updated = post(server, store, UPDATE, {"id": unknown, "input": {"uri": URI}})
    assert updated["data"]["webhookSubscriptionUpdate"] == {
        "webhookSubscription": None,
        "userErrors": not_found,
    }
    # Moving the first one onto an address its topic already has there is refused too.
    store.subscriptions.create("ORDERS_CREATE", "https://elsewhere.example/hooks")
    moved = post(
        server,
        store,
        UPDATE,
        {"id": first["id"], "input": {"uri": "https://elsewhere.example/hooks"}},
    )["data"]["webhookSubscriptionUpdate"]
    assert moved["userErrors"][0]["message"] == "Address for this topic has already been taken"

    gone = post(server, store, DELETE, {"id": first["id"]})["data"]["webhookSubscriptionDelete"]
    assert gone == {"deletedWebhookSubscriptionId": first["id"], "userErrors": []}
    again = post(server, store, DELETE, {"id": first["id"]})["data"]["webhookSubscriptionDelete"]
    assert again["userErrors"] == not_found


def test_update_changes_the_address_and_keeps_the_id(
    server: FakeShopServer, store: FakeStore
) -> None:
    made = create(server, store, "CUSTOMERS_UPDATE")["webhookSubscription"]
    new_uri = "https://new.example.com/webhooks/shopify"
    answer = post(server, store, UPDATE, {"id": made["id"], "input": {"callbackUrl": new_uri}})
    result = answer["data"]["webhookSubscriptionUpdate"]
    assert result["userErrors"] == []
    assert (result["webhookSubscription"]["id"], result["webhookSubscription"]["uri"]) == (
        made["id"],
        new_uri,
    )
    assert [s.uri for s in store.subscriptions.list()] == [new_uri]


def test_shopify_refuses_plain_http_and_internal_addresses_when_asked_to(
    server: FakeShopServer, store: FakeStore
) -> None:
    store.subscriptions.https_only = True
    errors = create(server, store, "ORDERS_CREATE", uri="http://localhost:8000/webhooks")
    assert [e["message"] for e in errors["userErrors"]] == [
        "Address protocol http:// is not supported",
        "Address cannot be a Shopify or an internal domain",
    ]
    assert store.subscriptions.list() == []


def test_topics_outside_the_enum_and_unknown_fields_are_refused_by_validation(
    server: FakeShopServer, store: FakeStore
) -> None:
    # Compliance topics are app configuration, not API subscriptions.
    body = post(server, store, CREATE, {"topic": "SHOP_REDACT", "input": {"uri": URI}})
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "INVALID_VARIABLE"
    assert "SHOP_REDACT" in body["errors"][0]["message"]
    wrong = post(server, store, "{ webhookSubscriptions(first: 1) { nodes { address } } }")
    assert wrong["errors"][0]["message"] == (
        "Field 'address' doesn't exist on type 'WebhookSubscription'"
    )


def test_mutations_cost_10_and_a_list_page_costs_by_its_size(
    server: FakeShopServer, store: FakeStore
) -> None:
    body = post(server, store, CREATE, {"topic": "ORDERS_CREATE", "input": {"uri": URI}})
    assert body["extensions"]["cost"]["requestedQueryCost"] == 10
    page = post(server, store, LIST_SUBSCRIPTIONS, {"first": 100})
    # 2 for the connection, 1 per node (its fields are scalars), 1 for pageInfo.
    assert page["extensions"]["cost"]["requestedQueryCost"] == 103
    assert page["extensions"]["cost"]["actualQueryCost"] == 4


def topics_of(page: dict[str, Any]) -> list[str]:
    return [edge["node"]["topic"] for edge in page["edges"]]


def test_paging_forwards_backwards_and_filtered(server: FakeShopServer, store: FakeStore) -> None:
    topics = ["ORDERS_CREATE", "ORDERS_PAID", "PRODUCTS_UPDATE", "SHOP_UPDATE", "APP_UNINSTALLED"]
    for topic in topics:
        store.subscriptions.create(topic, URI)
    store.subscriptions.create("ORDERS_PAID", "https://old.example.com/hooks")

    def page(**variables: Any) -> dict[str, Any]:
        body = post(server, store, PAGE, variables)
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]["webhookSubscriptions"]
        return result

    first = page(first=2)
    assert topics_of(first) == topics[:2]
    assert (first["pageInfo"]["hasNextPage"], first["pageInfo"]["hasPreviousPage"]) == (True, False)
    second = page(first=2, after=first["pageInfo"]["endCursor"])
    assert topics_of(second) == topics[2:4]
    assert second["pageInfo"]["hasPreviousPage"] is True
    third = page(first=2, after=second["pageInfo"]["endCursor"])
    assert topics_of(third) == [topics[4], "ORDERS_PAID"]
    assert third["pageInfo"]["hasNextPage"] is False

    last = page(last=2, before=third["pageInfo"]["startCursor"])
    assert topics_of(last) == topics[2:4]
    assert last["pageInfo"]["hasPreviousPage"] is True
    assert topics_of(page(first=2, reverse=True)) == ["ORDERS_PAID", topics[4]]

    assert topics_of(page(first=10, topics=["ORDERS_PAID"])) == ["ORDERS_PAID", "ORDERS_PAID"]
    assert len(page(first=10, uri=URI)["edges"]) == 5
    assert page(first=10, topics=["CARTS_CREATE"])["edges"] == []
    assert post(server, store, PAGE, {})["errors"][0]["message"] == (
        "you must provide one of first or last"
    )

    third_id = store.subscriptions.list()[2].legacy_id
    searched = post(
        server,
        store,
        """query S($q: String) {
          webhookSubscriptions(first: 10, query: $q) { nodes { topic } }
          webhookSubscriptionsCount(query: $q) { count precision }
        }""",
        {"q": f"id:>{third_id}"},
    )["data"]
    assert [n["topic"] for n in searched["webhookSubscriptions"]["nodes"]] == [
        "SHOP_UPDATE",
        "APP_UNINSTALLED",
        "ORDERS_PAID",
    ]
    assert searched["webhookSubscriptionsCount"] == {"count": 3, "precision": "EXACT"}


def test_a_subscription_shopify_dropped_is_gone_from_the_api(
    server: FakeShopServer, store: FakeStore
) -> None:
    made = create(server, store, "ORDERS_CREATE")["webhookSubscription"]
    create(server, store, "ORDERS_PAID")
    dropped = store.subscriptions.drop("orders/create")
    assert [s.id for s in dropped] == [made["id"]]
    listed = post(server, store, LIST_SUBSCRIPTIONS, {"first": 10})["data"]
    assert [n["topic"] for n in listed["webhookSubscriptions"]["nodes"]] == ["ORDERS_PAID"]
    node = post(server, store, "query N($id: ID!) { node(id: $id) { id } }", {"id": made["id"]})
    assert node["data"]["node"] is None
    deleted = post(server, store, DELETE, {"id": made["id"]})["data"]["webhookSubscriptionDelete"]
    assert deleted["userErrors"][0]["message"] == "Webhook subscription does not exist"


def test_graphql_core_executes_the_subscription_documents_alike(server: FakeShopServer) -> None:
    answers = []
    for executor in ("fast", "graphql-core"):
        store = server.add_store(
            FakeStore(
                f"subs-exec-{next(_numbers)}", customers=1, products=1, orders=1, executor=executor
            )
        )
        created = create(server, store, "ORDERS_CREATE")
        listed = post(server, store, EVERY_FIELD)["data"]
        for subscription in listed["webhookSubscriptions"]["nodes"]:
            subscription.pop("createdAt"), subscription.pop("updatedAt")
        answers.append((created["userErrors"], listed))
    assert answers[0] == answers[1]
