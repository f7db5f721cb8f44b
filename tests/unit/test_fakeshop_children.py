"""The simulator serves a store's children (issue #13): line items, refunds, transactions,
fulfillments, addresses, variants, inventory items and levels, over GraphQL (paged, priced),
bulk (JSONL with ``__parentId``) and webhooks (REST bodies, new topics), and changes to them.

GraphQL goes over real HTTP to an in-process server; webhooks are recorded by an httpx mock
transport (the simulator is the sender); time is a ManualClock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import LINE_ITEM_STRIDE, OrderChildren, children_of, value_of

SAMPLES = Path(__file__).resolve().parents[2] / "receiver" / "webhook_samples"
RUN = """mutation($q: String!, $group: Boolean! = false) {
  bulkOperationRunQuery(query: $q, groupObjects: $group) {
  bulkOperation { id status } userErrors { field message code } } }"""
POLL = "query($id: ID!) { node(id: $id) { ... on BulkOperation { status url objectCount } } }"

ORDER_CHILDREN = """
id name currentTotalPriceSet { shopMoney { amount currencyCode } }
presentmentCurrencyCode totalDiscountsSet { shopMoney { amount } } tags note cancelReason
closedAt sourceName test totalRefundedSet { shopMoney { amount } } subtotalLineItemsQuantity
currentSubtotalLineItemsQuantity transactionsCount { count } fulfillmentsCount { count }
paymentGatewayNames originalTotalPriceSet { shopMoney { amount } }
shippingAddress { id firstName lastName address1 city province provinceCode country
  countryCodeV2 zip phone formatted(withName: true) }
lineItems(first: 5) {
  pageInfo { hasNextPage endCursor }
  nodes { id name title variantTitle sku vendor quantity currentQuantity unfulfilledQuantity
    taxable requiresShipping isGiftCard unfulfilledOriginalTotalSet { shopMoney { amount } }
    originalUnitPriceSet { shopMoney { amount currencyCode } }
    totalDiscountSet { shopMoney { amount } }
    product { id } variant { id sku } }
}
refunds(first: 5) {
  id legacyResourceId note createdAt processedAt
  totalRefundedSet { shopMoney { amount currencyCode } }
  refundLineItems(first: 10) { nodes { id quantity restockType restocked
    subtotalSet { shopMoney { amount } } totalTaxSet { shopMoney { amount } }
    lineItem { id } } }
  transactions(first: 5) { nodes { id kind status } }
}
transactions(first: 10) {
  id kind status gateway test processedAt createdAt errorCode maximumRefundableV2 { amount }
  order { id }
  amountSet { shopMoney { amount currencyCode } } parentTransaction { id }
}
fulfillments(first: 5) {
  id name status displayStatus createdAt updatedAt location { id }
  trackingInfo(first: 5) { company number url }
  fulfillmentLineItems(first: 10) { nodes { id quantity lineItem { id } } }
}
"""
PRODUCT_CHILDREN = """
id publishedAt category { id name fullName } variantsCount { count } hasOnlyDefaultVariant
variants(first: 5) {
  pageInfo { hasNextPage }
  nodes { id title sku barcode price compareAtPrice position taxable inventoryQuantity
    selectedOptions { name value }
    inventoryItem { id sku tracked unitCost { amount currencyCode }
      measurement { weight { unit value } }
      inventoryLevels(first: 5) { nodes { id location { id }
        quantities(names: ["available", "on_hand", "committed", "incoming"]) { name quantity }
      } } } }
}
"""
CUSTOMER_CHILDREN = """
id note tags verifiedEmail
defaultEmailAddress { emailAddress marketingState marketingOptInLevel }
defaultAddress { id address1 city provinceCode countryCodeV2 zip }
addressesV2(first: 5) { nodes { id firstName lastName address1 city countryCodeV2 } }
"""

_numbers = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeShopServer]:
    with FakeShopServer([]) as served:
        yield served


def add_store(server: FakeShopServer, **options: Any) -> FakeStore:
    options.setdefault("orders", 300)
    options.setdefault("customers", 40)
    options.setdefault("products", 30)
    options.setdefault("clock", ManualClock())
    return server.add_store(FakeStore(f"kids-{next(_numbers)}", seed=13, **options))


def graphql(
    server: FakeShopServer,
    store: FakeStore,
    query: str,
    variables: dict[str, Any] | None = None,
    version: str = "2026-10",
) -> dict[str, Any]:
    response = httpx.post(
        server.graphql_url(store.shop_domain, version=version),
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": store.access_token},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def heavy_order(store: FakeStore) -> int:
    return next(i for i in range(store.orders.total) if store.order_children.is_heavy(i))


def run_bulk(
    server: FakeShopServer,
    store: FakeStore,
    query: str,
    version: str = "2026-10",
    group: bool = False,
) -> list[dict[str, Any]]:
    started = graphql(server, store, RUN, {"q": query, "group": group}, version)["data"][
        "bulkOperationRunQuery"
    ]
    assert started["userErrors"] == [], started
    operation = started["bulkOperation"]["id"]
    while True:
        node = graphql(server, store, POLL, {"id": operation}, version)["data"]["node"]
        if node["status"] == "COMPLETED":
            break
    text = httpx.get(node["url"], timeout=60).text
    return [json.loads(line) for line in text.splitlines()]


def sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    return loaded


# -- GraphQL --


def test_children_complete_under_graphql_core_exactly_as_under_the_fast_executor(
    server: FakeShopServer,
) -> None:
    # graphql-core checks every value against the real schema's types (enums, non-null,
    # lists); the fast executor must give the same answer.
    # Priced far over 1,000 points: these stores lift the limit to look at everything at once.
    exact = add_store(server, executor="graphql-core", max_query_cost=10**9, throttle=False)
    fast = add_store(server, max_query_cost=10**9, throttle=False)
    for root, fields in (
        ("orders", ORDER_CHILDREN),
        ("products", PRODUCT_CHILDREN),
        ("customers", CUSTOMER_CHILDREN),
    ):
        query = f"{{ {root}(first: 12) {{ nodes {{ {fields} }} }} }}"
        checked = graphql(server, exact, query)
        assert "errors" not in checked, checked["errors"][:2]
        answered = graphql(server, fast, query)
        assert "errors" not in answered
        assert answered["data"] == checked["data"]
    kinds = {t["kind"] for order in checked_orders(server, exact) for t in order["transactions"]}
    assert {"SALE", "REFUND"} <= kinds


def checked_orders(server: FakeShopServer, store: FakeStore) -> list[dict[str, Any]]:
    query = f"{{ orders(first: 100) {{ nodes {{ {ORDER_CHILDREN} }} }} }}"
    body = graphql(server, store, query.replace("lineItems(first: 5)", "lineItems(first: 1)"))
    assert "errors" not in body, body.get("errors")
    nodes: list[dict[str, Any]] = body["data"]["orders"]["nodes"]
    return nodes


def test_generated_children_agree_with_their_parent(server: FakeShopServer) -> None:
    store = add_store(server, max_query_cost=10**9, throttle=False)
    orders = checked_orders(server, store)
    refunded = [o for o in orders if o["refunds"]]
    assert refunded, "the seed should give some refunded orders"
    for order in orders:
        total = sum(float(r["totalRefundedSet"]["shopMoney"]["amount"]) for r in order["refunds"])
        index = int(order["id"].rsplit("/", 1)[1]) - store.orders.base_id
        node = store.order_node(index)
        assert node is not None
        price = float(node["totalPriceSet"]["shopMoney"]["amount"])
        current = float(order["currentTotalPriceSet"]["shopMoney"]["amount"])
        assert round(price - total, 2) == current
        refund_ids = {t["id"] for r in order["refunds"] for t in r["transactions"]["nodes"]}
        assert refund_ids <= {t["id"] for t in order["transactions"]}
        for transaction in order["transactions"]:
            if transaction["kind"] in ("CAPTURE", "VOID", "REFUND"):
                assert transaction["parentTransaction"] is not None


def test_an_order_with_many_line_items_pages_its_overflow(server: FakeShopServer) -> None:
    store = add_store(server)
    index = heavy_order(store)
    order_id = store.orders.gid(index)
    query = """query($id: ID!, $after: String) { order(id: $id) {
      lineItems(first: 100, after: $after) { pageInfo { hasNextPage endCursor }
        nodes { id quantity } } } }"""
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        body = graphql(server, store, query, {"id": order_id, "after": after})
        connection = body["data"]["order"]["lineItems"]
        seen.extend(node["id"] for node in connection["nodes"])
        pages += 1
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert pages == 3
    assert len(seen) == len(set(seen)) == store.many_line_items == 300
    node = store.order_node(index)
    assert node is not None
    assert seen == [line["id"] for line in children_of(node, "lineItems")]
    # last/before page backwards from the end.
    tail = graphql(
        server,
        store,
        """query($id: ID!) { order(id: $id) { lineItems(last: 2) { nodes { id } } } }""",
        {"id": order_id},
    )
    assert [n["id"] for n in tail["data"]["order"]["lineItems"]["nodes"]] == seen[-2:]


def test_a_product_with_many_variants_pages_them(server: FakeShopServer) -> None:
    store = add_store(server)
    index = next(i for i in range(30) if store.product_children.is_heavy(i))
    query = """query($id: ID!, $after: String) { product(id: $id) {
      variants(first: 100, after: $after) { pageInfo { hasNextPage endCursor }
        nodes { id position } } } }"""
    first = graphql(server, store, query, {"id": store.products.gid(index)})
    page = first["data"]["product"]["variants"]
    assert page["pageInfo"]["hasNextPage"] is True
    rest = graphql(
        server,
        store,
        query,
        {"id": store.products.gid(index), "after": page["pageInfo"]["endCursor"]},
    )["data"]["product"]["variants"]
    positions = [n["position"] for n in page["nodes"] + rest["nodes"]]
    assert positions == list(range(1, store.many_variants + 1))
    assert rest["pageInfo"]["hasNextPage"] is False


def test_nested_connections_multiply_their_cost(server: FakeShopServer) -> None:
    store = add_store(server)
    fits = "{ orders(first: 10) { nodes { id lineItems(first: 50) { nodes { id } } } } }"
    body = graphql(server, store, fits)
    assert body["extensions"]["cost"]["requestedQueryCost"] == 2 + 10 * (1 + 2 + 50 * 1)
    # Actual cost counts the line items that came back (refunded to the bucket).
    returned = [len(order["lineItems"]["nodes"]) for order in body["data"]["orders"]["nodes"]]
    assert body["extensions"]["cost"]["actualQueryCost"] == 2 + sum(1 + 2 + n for n in returned)
    # A plain list sized by first: priced like a connection's nodes.
    listed = "{ orders(first: 10) { nodes { id refunds(first: 5) { id } } } }"
    body = graphql(server, store, listed)
    assert body["extensions"]["cost"]["requestedQueryCost"] == 2 + 10 * (1 + 5 * 1)
    too_much = "{ orders(first: 50) { nodes { id lineItems(first: 50) { nodes { id } } } } }"
    body = graphql(server, store, too_much)
    assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert body["errors"][0]["extensions"]["cost"] == 2 + 50 * (1 + 2 + 50 * 1)
    assert "data" not in body


def test_inventory_items_page_the_whole_catalogue_with_their_levels(
    server: FakeShopServer,
) -> None:
    store = add_store(server, products=12)
    query = """query($after: String) { inventoryItems(first: 7, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { id sku inventoryLevels(first: 10) { nodes { id location { id }
        quantities(names: ["available", "on_hand", "committed"]) { name quantity } } } } } }"""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        page = graphql(server, store, query, {"after": after})["data"]["inventoryItems"]
        items.extend(page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    expected = [
        variant["inventoryItem"]["id"]
        for i in range(12)
        for variant in children_of(store.product_node(i) or {}, "variants")
    ]
    assert [item["id"] for item in items] == expected
    for item in items:
        assert item["inventoryLevels"]["nodes"], "every item is stocked at the first location"
        for level in item["inventoryLevels"]["nodes"]:
            quantity = {q["name"]: q["quantity"] for q in level["quantities"]}
            assert quantity["on_hand"] == quantity["available"] + quantity["committed"]
            assert level["id"].endswith(f"?inventory_item_id={item['id'].rsplit('/', 1)[1]}")


def test_children_are_found_by_node_id(server: FakeShopServer) -> None:
    store = add_store(server)
    order = store.order_node(heavy_order(store))
    product = store.product_node(3)
    assert order is not None
    assert product is not None
    line = children_of(order, "lineItems")[250]
    variant = children_of(product, "variants")[0]
    level = children_of(variant["inventoryItem"], "inventoryLevels")[0]
    ids = [line["id"], variant["id"], variant["inventoryItem"]["id"], level["id"]]
    body = graphql(
        server, store, "query($ids: [ID!]!) { nodes(ids: $ids) { id __typename } }", {"ids": ids}
    )
    assert [n["id"] for n in body["data"]["nodes"]] == ids
    assert [n["__typename"] for n in body["data"]["nodes"]] == [
        "LineItem",
        "ProductVariant",
        "InventoryItem",
        "InventoryLevel",
    ]
    missing = (
        store.orders.gid(0)
        .replace("Order", "LineItem")
        .replace(str(store.orders.base_id), str(14_000_000_000_000 + LINE_ITEM_STRIDE - 1))
    )
    assert graphql(server, store, f'{{ node(id: "{missing}") {{ id }} }}')["data"]["node"] is None


def test_children_ids_are_unique_and_stable() -> None:
    first = FakeStore("ids", seed=4, orders=400, products=40, customers=30)
    again = FakeStore("ids", seed=4, orders=400, products=40, customers=30)
    ids: list[str] = []
    for index in range(400):
        order = first.order_node(index)
        other = again.order_node(index)
        assert order is not None
        assert other is not None
        for field in ("lineItems", "refunds", "transactions", "fulfillments"):
            mine = [c["id"] for c in children_of(order, field)]
            assert mine == [c["id"] for c in children_of(other, field)]
            ids.extend(mine)
        for refund in children_of(order, "refunds"):
            ids.extend(c["id"] for c in children_of(refund, "refundLineItems"))
    for index in range(40):
        product = first.product_node(index)
        assert product is not None
        for variant in children_of(product, "variants"):
            ids.extend([variant["id"], variant["inventoryItem"]["id"]])
            ids.extend(lv["id"] for lv in children_of(variant["inventoryItem"], "inventoryLevels"))
    for index in range(30):
        customer = first.customer_node(index)
        assert customer is not None
        ids.extend(a["id"] for a in children_of(customer, "addresses"))
    numbers = [int(i.rsplit("/", 1)[1].split("?")[0]) for i in ids]
    assert len(numbers) == len(set(numbers))


def test_a_page_of_orders_generates_no_children_it_did_not_select(
    server: FakeShopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = add_store(server, orders=1_000_000, customers=1000, products=100)
    generated: list[int] = []
    original = OrderChildren.generate

    def counting(self: OrderChildren, index: int, node: dict[str, Any]) -> dict[str, Any]:
        generated.append(index)
        return original(self, index, node)

    monkeypatch.setattr(OrderChildren, "generate", counting)
    flat = graphql(server, store, "{ orders(first: 250, reverse: true) { nodes { id } } }")
    assert len(flat["data"]["orders"]["nodes"]) == 250
    assert generated == []
    graphql(
        server,
        store,
        "{ orders(first: 3, reverse: true) { nodes { lineItems(first: 1) { nodes { id } } } } }",
    )
    assert generated == [999_999, 999_998, 999_997]


# -- bulk --


def test_bulk_exports_nested_children_after_their_parent(server: FakeShopServer) -> None:
    store = add_store(server)
    query = (
        "{ orders { edges { node { id name refunds { id } "
        "lineItems { edges { node { id sku quantity } } } } } } }"
    )
    for group in (True, False):
        lines = run_bulk(server, store, query, group=group)
        roots = [line for line in lines if "__parentId" not in line]
        assert len(roots) == 300
        assert all("lineItems" not in root for root in roots)
        seen: set[str] = set()
        adjacent = True
        parent = None
        per_order: dict[str, list[str]] = {}
        for line in lines:
            if "__parentId" not in line:
                parent = line["id"]
                seen.add(parent)
                continue
            assert line["__parentId"] in seen  # always after its parent
            adjacent = adjacent and line["__parentId"] == parent
            per_order.setdefault(line["__parentId"], []).append(line["id"])
        # groupObjects: true keeps children next to their parent; the default (false, since
        # 2026-01) does not promise it, and the simulator makes use of that.
        assert adjacent is group
        for index in range(300):
            node = store.order_node(index)
            assert node is not None
            expected = [c["id"] for c in children_of(node, "lineItems")]
            assert per_order.get(node["id"], []) == expected
        assert len(per_order[store.orders.gid(heavy_order(store))]) == 300


def test_bulk_exports_inventory_levels_through_inventory_items(server: FakeShopServer) -> None:
    store = add_store(server, products=10)
    lines = run_bulk(
        server,
        store,
        "{ inventoryItems { edges { node { id sku inventoryLevels { edges { node { id "
        'location { id } quantities(names: ["available", "on_hand"]) { name quantity } '
        "} } } } } } }",
    )
    levels = [line for line in lines if "__parentId" in line]
    items = [line for line in lines if "__parentId" not in line]
    assert {level["__parentId"] for level in levels} <= {item["id"] for item in items}
    expected = sum(
        len(children_of(v["inventoryItem"], "inventoryLevels"))
        for i in range(10)
        for v in children_of(store.product_node(i) or {}, "variants")
    )
    assert len(levels) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "{ products { edges { node { id variants { edges { node { id inventoryItem { "
            "inventoryLevels { edges { node { id } } } } } } } } } } }",
            "Bulk queries cannot contain connections with a nesting depth greater than 2.",
        ),
        (
            "{ orders { edges { node { id refunds { refundLineItems { edges { node { id } } } "
            "} } } } }",
            "Queries that contain a connection field within a list field are not currently "
            "supported.",
        ),
        (
            "{ orders { edges { node { id a: lineItems { edges { node { id } } } "
            "b: lineItems { edges { node { id } } } c: lineItems { edges { node { id } } } "
            "d: lineItems { edges { node { id } } } e: lineItems { edges { node { id } } } "
            "} } } }",
            "Bulk queries cannot contain more than 5 connections.",
        ),
        (
            "{ products { nodes { id variants { nodes { id } } } } }",
            "All connection fields in a bulk query must select their contents using 'edges' > "
            "'node', e.g: 'products { edges { node {'. Selecting via 'nodes' is not supported. "
            "Invalid connection fields: 'products', 'variants'.",
        ),
        (
            "{ products { edges { node { title variants { edges { node { id } } } } } } }",
            "The parent 'node' field for a nested connection must select the 'id' field "
            "without an alias and must be of 'ID' return type. Connection fields without "
            "'id': products.",
        ),
        (
            '{ node(id: "gid://shopify/Product/1") { id } }',
            "Bulk queries cannot contain a top level `node` field.",
        ),
    ],
)
def test_bulk_refuses_queries_beyond_shopifys_limits(
    server: FakeShopServer, query: str, message: str
) -> None:
    store = add_store(server)
    body = graphql(server, store, RUN, {"q": query})["data"]["bulkOperationRunQuery"]
    assert body["bulkOperation"] is None
    assert body["userErrors"][0] == {"field": ["query"], "message": message, "code": "INVALID"}


def test_bulk_concurrency_follows_the_api_version(server: FakeShopServer) -> None:
    store = add_store(server, bulk_concurrency=None)
    query = "{ customers { edges { node { id } } } }"
    started = [
        graphql(server, store, RUN, {"q": query})["data"]["bulkOperationRunQuery"] for _ in range(6)
    ]
    assert all(s["userErrors"] == [] for s in started[:5])
    assert started[5]["bulkOperation"] is None
    assert started[5]["userErrors"][0]["code"] == "LIMIT_REACHED"
    older = add_store(server, bulk_concurrency=None)
    graphql(server, older, RUN, {"q": query}, version="2025-10")
    second = graphql(server, older, RUN, {"q": query}, version="2025-10")
    [error] = second["data"]["bulkOperationRunQuery"]["userErrors"]
    assert error["code"] == "OPERATION_IN_PROGRESS"
    assert error["message"].startswith(
        "A bulk query operation for this app and shop is already in progress"
    )


# -- webhooks --


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append((request.headers["X-Shopify-Topic"], json.loads(request.content)))
        return httpx.Response(200)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.bodies]

    def last(self, topic: str) -> dict[str, Any]:
        return next(body for t, body in reversed(self.bodies) if t == topic)


TOPICS = (
    "orders/updated",
    "products/update",
    "customers/update",
    "refunds/create",
    "order_transactions/create",
    "fulfillments/create",
    "fulfillments/update",
    "inventory_items/create",
    "inventory_items/update",
    "inventory_items/delete",
    "inventory_levels/update",
    "inventory_levels/connect",
    "inventory_levels/disconnect",
)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def shop(server: FakeShopServer, recorder: Recorder) -> Iterator[FakeStore]:
    store = add_store(server)
    store.webhooks.enable(client=httpx.Client(transport=httpx.MockTransport(recorder)))
    for topic in TOPICS:
        store.subscriptions.create(topic, "http://127.0.0.1:9/hooks")
    yield store
    store.webhooks.disable()


def test_rest_bodies_carry_the_children_graphql_serves(shop: FakeStore, recorder: Recorder) -> None:
    order_sample = sample("orders_create")
    index = next(
        i
        for i in range(300)
        if (node := shop.order_node(i))
        and children_of(node, "refunds")
        and children_of(node, "fulfillments")
        and value_of(node, "shippingAddress")
    )
    shop.update_order(index, note="children")
    body = recorder.last("orders/updated")
    node = shop.order_node(index)
    assert node is not None
    lines = children_of(node, "lineItems")
    assert [line["admin_graphql_api_id"] for line in body["line_items"]] == [
        line["id"] for line in lines
    ]
    for rest, line in zip(body["line_items"], lines, strict=True):
        assert set(rest) <= set(order_sample["line_items"][0])
        assert rest["current_quantity"] == line["currentQuantity"]
        assert rest["price"] == line["originalUnitPriceSet"]["shopMoney"]["amount"]
    assert set(body["shipping_address"]) == set(order_sample["shipping_address"])
    address = value_of(node, "shippingAddress")
    assert body["shipping_address"]["country_code"] == address["countryCodeV2"]
    [refund] = body["refunds"]
    assert refund["admin_graphql_api_id"] == children_of(node, "refunds")[0]["id"]
    assert (
        refund["refund_line_items"][0]["line_item"]["id"]
        == refund["refund_line_items"][0]["line_item_id"]
    )
    assert refund["transactions"][0]["kind"] == "refund"
    fulfillment = body["fulfillments"][0]
    assert fulfillment["tracking_numbers"]
    assert fulfillment["tracking_company"]
    assert fulfillment["status"] == "success"
    for key in ("current_total_price", "total_discounts", "source_name", "test", "tags"):
        assert key in body
        assert key in order_sample


def test_product_bodies_cut_variants_but_list_every_gid(
    shop: FakeStore, recorder: Recorder
) -> None:
    product_sample = sample("products_update")
    index = next(i for i in range(30) if shop.product_children.is_heavy(i))
    shop.update_product(index, title="Many")
    body = recorder.last("products/update")
    assert len(body["variants"]) == 100
    assert len(body["variant_gids"]) == shop.many_variants == 150
    assert set(body["variants"][0]) <= set(product_sample["variants"][0])
    assert set(body["variant_gids"][0]) == set(product_sample["variant_gids"][0])
    assert set(body["category"] or product_sample["category"]) == set(product_sample["category"])


def test_customer_bodies_carry_addresses_and_the_default(
    shop: FakeStore, recorder: Recorder
) -> None:
    customer_sample = sample("customers_create")
    index = next(
        i for i in range(40) if len(children_of(shop.customer_node(i) or {}, "addresses")) > 1
    )
    shop.update_customer(index, first_name="Ada")
    body = recorder.last("customers/update")
    assert len(body["addresses"]) > 1
    for address in body["addresses"]:
        assert set(address) == set(customer_sample["addresses"][0])
    assert body["default_address"] == body["addresses"][0]
    assert body["default_address"]["default"] is True
    assert [a["default"] for a in body["addresses"][1:]] == [False] * (len(body["addresses"]) - 1)


def test_a_refund_changes_graphql_and_bulk_and_is_announced(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    index = next(
        i
        for i in range(300)
        if (node := shop.order_node(i))
        and node["displayFinancialStatus"] == "PAID"
        and len(children_of(node, "lineItems")) >= 2
    )
    export = "{ orders { edges { node { id refunds { id } } } } }"
    before = run_bulk(server, shop, export)
    started = graphql(server, shop, RUN, {"q": export})["data"]["bulkOperationRunQuery"][
        "bulkOperation"
    ]["id"]
    refund = shop.add_refund(index, [(1, 1)], note="damaged")
    assert recorder.topics()[-3:] == [
        "refunds/create",
        "order_transactions/create",
        "orders/updated",
    ]
    announced = recorder.last("refunds/create")
    assert announced["admin_graphql_api_id"] == refund["id"]
    assert announced["note"] == "damaged"
    [item] = announced["refund_line_items"]
    assert item["quantity"] == 1
    assert item["restock_type"] == "return"
    assert recorder.last("orders/updated")["financial_status"] == "partially_refunded"
    query = """query($id: ID!) { order(id: $id) { displayFinancialStatus
      refunds(first: 5) { id refundLineItems(first: 5) { nodes { quantity lineItem { id } } } }
      lineItems(first: 5) { nodes { id currentQuantity quantity } } } }"""
    order = graphql(server, shop, query, {"id": shop.orders.gid(index)})["data"]["order"]
    assert order["displayFinancialStatus"] == "PARTIALLY_REFUNDED"
    assert [r["id"] for r in order["refunds"]] == [refund["id"]]
    second = order["lineItems"]["nodes"][1]
    assert second["currentQuantity"] == second["quantity"] - 1
    # The export started before the refund keeps its snapshot; a new one sees the refund.
    while True:
        status = graphql(server, shop, POLL, {"id": started})["data"]["node"]
        if status["status"] == "COMPLETED":
            break
    old = [json.loads(x) for x in httpx.get(status["url"]).text.splitlines()]
    assert old == before
    after = run_bulk(server, shop, export)
    target = shop.orders.gid(index)
    assert next(x for x in after if x["id"] == target)["refunds"] == [{"id": refund["id"]}]


def test_fulfilling_and_tracking_are_announced(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    index = next(
        i
        for i in range(300)
        if (node := shop.order_node(i))
        and node["displayFulfillmentStatus"] == "UNFULFILLED"
        and not children_of(node, "refunds")
    )
    fulfillment = shop.add_fulfillment(index, tracking_company="UPS", tracking_numbers=["1Z1"])
    created = recorder.last("fulfillments/create")
    assert created["admin_graphql_api_id"] == fulfillment["id"]
    assert created["tracking_numbers"] == ["1Z1"]
    assert created["tracking_company"] == "UPS"
    shop.update_fulfillment(index, 0, tracking_numbers=["1Z2"], display_status="DELIVERED")
    updated = recorder.last("fulfillments/update")
    assert updated["tracking_numbers"] == ["1Z2"]
    assert updated["shipment_status"] == "delivered"
    query = """query($id: ID!) { order(id: $id) { displayFulfillmentStatus
      fulfillments(first: 3) { id trackingInfo(first: 3) { number } } } }"""
    order = graphql(server, shop, query, {"id": shop.orders.gid(index)})["data"]["order"]
    assert order["displayFulfillmentStatus"] == "FULFILLED"
    assert order["fulfillments"] == [{"id": fulfillment["id"], "trackingInfo": [{"number": "1Z2"}]}]


def test_removing_a_variant_removes_it_everywhere(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    index = next(
        i for i in range(30) if len(children_of(shop.product_node(i) or {}, "variants")) == 3
    )
    product = shop.product_node(index)
    assert product is not None
    gone = children_of(product, "variants")[1]
    shop.remove_variant(index, 1)
    body = recorder.last("products/update")
    assert gone["id"] not in [v["admin_graphql_api_id"] for v in body["variants"]]
    assert gone["id"] not in [v["admin_graphql_api_id"] for v in body["variant_gids"]]
    assert recorder.last("inventory_items/delete") == {
        "id": int(gone["inventoryItem"]["id"].rsplit("/", 1)[1])
    }
    query = """query($id: ID!) { product(id: $id) { variants(first: 5) { nodes { id } } } }"""
    served = graphql(server, shop, query, {"id": shop.products.gid(index)})["data"]["product"]
    assert gone["id"] not in [v["id"] for v in served["variants"]["nodes"]]
    assert len(served["variants"]["nodes"]) == 2
    items = graphql(server, shop, "{ inventoryItems(first: 250) { nodes { id } } }")
    assert gone["inventoryItem"]["id"] not in [
        n["id"] for n in items["data"]["inventoryItems"]["nodes"]
    ]


def test_an_inventory_change_is_announced_and_served(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    product = shop.product_node(2)
    assert product is not None
    shop.clock.advance(60)  # type: ignore[attr-defined]
    shop.set_inventory(2, 0, 0, available=17, committed=3)
    body = recorder.last("inventory_levels/update")
    variant = children_of(shop.product_node(2) or {}, "variants")[0]
    assert body["inventory_item_id"] == int(variant["inventoryItem"]["id"].rsplit("/", 1)[1])
    assert body["location_id"] == shop.locations.numeric_id(0)
    assert body["available"] == 17
    assert set(body) == {
        "inventory_item_id",
        "location_id",
        "available",
        "updated_at",
        "admin_graphql_api_id",
    }
    query = """query($id: ID!) { inventoryItem(id: $id) { inventoryLevels(first: 5) { nodes {
      location { id } quantities(names: ["available", "committed", "on_hand"]) { name quantity }
    } } } }"""
    item = graphql(server, shop, query, {"id": variant["inventoryItem"]["id"]})
    level = item["data"]["inventoryItem"]["inventoryLevels"]["nodes"][0]
    assert {q["name"]: q["quantity"] for q in level["quantities"]} == {
        "available": 17,
        "committed": 3,
        "on_hand": 20,
    }
    # An inventory change is not a product change.
    assert (shop.product_node(2) or {})["updatedAt"] == product["updatedAt"]
    shop.disconnect_inventory(2, 0, 0)
    assert recorder.last("inventory_levels/disconnect") == {
        "inventory_item_id": body["inventory_item_id"],
        "location_id": body["location_id"],
    }
    again = graphql(server, shop, query, {"id": variant["inventoryItem"]["id"]})
    locations = [
        n["location"]["id"] for n in again["data"]["inventoryItem"]["inventoryLevels"]["nodes"]
    ]
    assert shop.locations.gid(0) not in locations


def test_transaction_and_inventory_item_bodies(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    index = next(
        i
        for i in range(300)
        if (node := shop.order_node(i)) and node["displayFinancialStatus"] == "AUTHORIZED"
    )
    capture = shop.add_transaction(index, "capture", amount="3.50")
    body = recorder.last("order_transactions/create")
    assert body["admin_graphql_api_id"] == capture["id"]
    assert body["order_id"] == shop.orders.numeric_id(index)
    assert body["kind"] == "capture"
    assert body["status"] == "success"
    assert body["amount"] == "3.50"
    authorization = capture["parentTransaction"]
    assert authorization["kind"] == "AUTHORIZATION"
    assert body["parent_id"] == int(authorization["id"].rsplit("/", 1)[1])
    served = graphql(
        server,
        shop,
        """query($id: ID!) { order(id: $id) { transactions(first: 10) { id kind
          parentTransaction { id } } } }""",
        {"id": shop.orders.gid(index)},
    )["data"]["order"]["transactions"]
    assert served[-1] == {
        "id": capture["id"],
        "kind": "CAPTURE",
        "parentTransaction": {"id": authorization["id"]},
    }
    variant = shop.add_variant(4, price="9.99", sku="NEW-1", title="Extra")
    created = recorder.last("inventory_items/create")
    assert created["admin_graphql_api_id"] == variant["inventoryItem"]["id"]
    assert created["sku"] == "NEW-1"
    assert recorder.last("inventory_levels/connect")["inventory_item_id"] == created["id"]
    listed = recorder.last("products/update")
    assert listed["variants"][-1]["price"] == "9.99"
    assert listed["variants"][-1]["inventory_item_id"] == created["id"]
    exported = run_bulk(
        server,
        shop,
        "{ products { edges { node { id variants { edges { node { id sku } } } } } } }",
    )
    assert {"id": variant["id"], "sku": "NEW-1", "__parentId": shop.products.gid(4)} in exported


def test_an_address_added_is_served_as_the_default(
    server: FakeShopServer, shop: FakeStore, recorder: Recorder
) -> None:
    address = shop.add_address(5, city="Paris", country_code="FR", address1="1 Rue", default=True)
    body = recorder.last("customers/update")
    assert body["default_address"]["city"] == "Paris"
    assert body["default_address"]["id"] == int(address["id"].split("?")[0].rsplit("/", 1)[1])
    served = graphql(
        server,
        shop,
        """query($id: ID!) { customer(id: $id) { defaultAddress { id city countryCodeV2 }
          addressesV2(first: 1) { nodes { id } } } }""",
        {"id": shop.customers.gid(5)},
    )["data"]["customer"]
    assert served["defaultAddress"] == {"id": address["id"], "city": "Paris", "countryCodeV2": "FR"}
    assert served["addressesV2"]["nodes"] == [{"id": address["id"]}]


def test_records_a_test_creates_are_never_big(shop: FakeStore) -> None:
    order = shop.order_node(shop.create_order(email="late@example.com"))
    product = shop.product_node(shop.create_product(title="New"))
    assert order is not None
    assert product is not None
    assert len(children_of(order, "lineItems")) <= 5
    assert len(children_of(product, "variants")) <= 3


def test_child_cursors_page_backwards_and_reject_strangers(server: FakeShopServer) -> None:
    store = add_store(server)
    index = heavy_order(store)
    query = """query($id: ID!, $before: String) { order(id: $id) {
      lineItems(last: 3, before: $before) { pageInfo { hasPreviousPage hasNextPage startCursor }
        nodes { id } } } }"""
    node = store.order_node(index)
    assert node is not None
    ids = [line["id"] for line in children_of(node, "lineItems")]
    end = graphql(server, store, query, {"id": store.orders.gid(index)})["data"]["order"]
    assert [n["id"] for n in end["lineItems"]["nodes"]] == ids[-3:]
    assert end["lineItems"]["pageInfo"]["hasPreviousPage"] is True
    before = end["lineItems"]["pageInfo"]["startCursor"]
    earlier = graphql(server, store, query, {"id": store.orders.gid(index), "before": before})
    page = earlier["data"]["order"]["lineItems"]
    assert [n["id"] for n in page["nodes"]] == ids[-6:-3]
    assert page["pageInfo"]["hasNextPage"] is True
    stranger = graphql(server, store, query, {"id": store.orders.gid(0), "before": before})
    assert stranger["errors"][0]["message"] == "Invalid cursor for current pagination sort."


def test_concurrent_exports_are_listed_by_bulk_operations(server: FakeShopServer) -> None:
    store = add_store(server, bulk_concurrency=None)
    queries = [
        "{ customers { edges { node { id addressesV2 { edges { node { id } } } } } } }",
        "{ products { edges { node { id variants { edges { node { id } } } } } } }",
        "{ orders { edges { node { id lineItems { edges { node { id } } } } } } }",
    ]
    ids = [
        graphql(server, store, RUN, {"q": q})["data"]["bulkOperationRunQuery"]["bulkOperation"][
            "id"
        ]
        for q in queries
    ]
    listing = """query($q: String) { bulkOperations(first: 10, query: $q) {
      nodes { id status url } pageInfo { hasNextPage } } }"""
    first = graphql(server, store, listing)["data"]["bulkOperations"]
    assert [n["id"] for n in first["nodes"]] == ids
    assert {n["status"] for n in first["nodes"]} == {"RUNNING"}
    done = graphql(server, store, listing, {"q": "status:completed"})["data"]["bulkOperations"]
    assert [n["id"] for n in done["nodes"]] == ids
    assert (
        graphql(server, store, listing, {"q": "status:running"})["data"]["bulkOperations"]["nodes"]
        == []
    )
    parents = {"customers": "Customer", "products": "Product", "orders": "Order"}
    for node, (resource, typename) in zip(done["nodes"], parents.items(), strict=True):
        lines = [json.loads(x) for x in httpx.get(node["url"]).text.splitlines()]
        roots = [line for line in lines if "__parentId" not in line]
        assert len(roots) == store.counts[resource]
        assert all(f"/{typename}/" in line["id"] for line in roots)


def test_line_items_keep_what_was_bought_and_follow_the_catalogue(
    server: FakeShopServer, shop: FakeStore
) -> None:
    """An order's line items are read again and again (bulk exports, refund reads): what
    they record of their product is kept per snapshot of the catalogue, so a removed variant
    and a deleted product must show on the next read, and what was bought must not change."""
    query = """query($id: ID!) { order(id: $id) { lineItems(first: 10) {
      nodes { title sku variantTitle vendor product { id } variant { id } } } } }"""

    def lines(index: int) -> list[dict[str, Any]]:
        order = graphql(server, shop, query, {"id": shop.orders.gid(index)})["data"]["order"]
        return order["lineItems"]["nodes"]  # type: ignore[no-any-return]

    index, line = next(
        (i, line)
        for i in range(200)
        for line in lines(i)
        if line["variant"] is not None
        and len(children_of(shop.product_node(_product_index(shop, line)) or {}, "variants")) > 1
    )
    product_index = _product_index(shop, line)
    variants = children_of(shop.product_node(product_index) or {}, "variants")
    position = next(p for p, v in enumerate(variants) if v["id"] == line["variant"]["id"])
    assert lines(index) == lines(index)  # read twice, nothing changed between
    shop.remove_variant(product_index, position)
    after_removal = next(item for item in lines(index) if item["sku"] == line["sku"])
    assert after_removal == {**line, "variant": None}
    shop.delete_product(product_index)
    after_deletion = next(item for item in lines(index) if item["sku"] == line["sku"])
    assert after_deletion == {**line, "variant": None, "product": None}


def _product_index(shop: FakeStore, line: dict[str, Any]) -> int:
    index = shop.products.view().index_of(int(line["product"]["id"].rsplit("/", 1)[1]))
    assert index is not None
    return index


def test_the_variants_count_is_what_the_variants_list_holds(
    server: FakeShopServer, shop: FakeStore
) -> None:
    """`productVariantsCount` counts without building the variants (`variant_stamps`); it
    must still count exactly what `productVariants` lists, whole and by time, as variants are
    added, changed and removed and products deleted."""
    clock = shop.clock
    assert isinstance(clock, ManualClock)
    clock.advance(3600)
    shop.update_variant(8, 0, sku="EARLY")  # keeps this time when its product changes later
    clock.advance(60)
    since = clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(60)
    shop.add_variant(2, title="Added", price="9.00")
    shop.update_variant(4, 0, price="1.50")
    shop.remove_variant(5, 0)
    shop.delete_product(6)
    shop.update_product(8, title="Later")
    query = """query($q: String) {
      productVariantsCount(query: $q, limit: null) { count precision }
      productVariants(first: 250, query: $q) { nodes { id } pageInfo { hasNextPage } } }"""
    counted: dict[str | None, int] = {}
    for search in (None, f"updated_at:>'{since}'", f"created_at:>'{since}'"):
        data = graphql(server, shop, query, {"q": search})["data"]
        listed = data["productVariants"]
        assert not listed["pageInfo"]["hasNextPage"]
        assert data["productVariantsCount"] == {
            "count": len(listed["nodes"]),
            "precision": "EXACT",
        }, search
        counted[search] = len(listed["nodes"])
    assert counted[f"updated_at:>'{since}'"] >= 2  # the added and the changed one
