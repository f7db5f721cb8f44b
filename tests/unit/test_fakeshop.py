"""The Shopify simulator (tests/fakeshop) answers the backfill's documents the way Shopify does.

Everything goes over real HTTP to an in-process server; time is a ManualClock, never a sleep.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backfill.queries import (
    BULK_RUN,
    BULK_STATUS,
    CUSTOMERS,
    ORDERS,
    PAGE_INFO,
    PRODUCTS,
    RESOURCES,
    Resource,
)
from handlers.resources import RESOURCES as HANDLED
from tests.fakeshop import (
    FakeShopServer,
    FakeStore,
    Fault,
    ManualClock,
    admin_schema,
    check_document,
    select,
)

GID = re.compile(r"^gid://shopify/(Order|Customer|Product)/\d+$")
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MONEY = re.compile(r"^-?\d+\.\d\d$")
UNAUTHORIZED = {
    "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
}

ORDERS_WITH_CHILDREN = HANDLED["orders"]

_shop_numbers = iter(range(1, 10_000))


@pytest.fixture(scope="module")
def server() -> Iterator[FakeShopServer]:
    # One server for the module; each test adds stores of its own under fresh names.
    with FakeShopServer([]) as served:
        yield served


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def add_store(server: FakeShopServer, **options: Any) -> FakeStore:
    options.setdefault("orders", 1000)
    options.setdefault("customers", 100)
    options.setdefault("products", 50)
    return server.add_store(FakeStore(f"shop-{next(_shop_numbers)}", **options))


def graphql(
    server: FakeShopServer,
    store: FakeStore,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
) -> httpx.Response:
    return httpx.post(
        server.graphql_url(store.shop_domain),
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": token or store.access_token},
        timeout=30,
    )


def flat_page_query(resource: Resource) -> str:
    """A page of records without their children: the simulator's paging, search, throttle
    and cost checks here do not depend on what children the backfill asks for (those are in
    test_fakeshop_children.py and the backfill's own tests)."""
    return (
        "query Backfill($first: Int!, $after: String, $query: String) {\n"
        f"  {resource.name}(first: $first, after: $after, query: $query, sortKey: ID) {{\n"
        f"    {PAGE_INFO}\n    nodes {{{resource.fields}    }}\n  }}\n}}\n"
    )


def flat_bulk_query(resource: Resource, search: str | None = None) -> str:
    arguments = f'(query: "{search}")' if search else ""
    return f"{{ {resource.name}{arguments} {{ edges {{ node {{{resource.fields}}} }} }} }}"


def all_pages(
    server: FakeShopServer, store: FakeStore, resource: str, size: int, search: str | None = None
) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    after = None
    while True:
        body = graphql(
            server,
            store,
            flat_page_query(RESOURCES[resource]),
            {"first": size, "after": after, "query": search},
        ).json()
        page = body["data"][resource]
        nodes.extend(page["nodes"])
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


def test_every_backfill_document_validates_against_the_2026_10_schema() -> None:
    documents = [BULK_RUN, BULK_STATUS]
    for resource in RESOURCES.values():
        documents += [resource.page_query, resource.bulk_query("updated_at:>='2024-01-01'")]
    for document in documents:
        checked = check_document(document)
        assert checked.errors == (), (document, checked.errors)
        assert checked.deprecated == (), checked.deprecated


def test_generated_records_use_only_fields_of_the_real_schema() -> None:
    store = FakeStore("fields", customers=3, products=3, orders=3)
    schema = admin_schema()
    for node in (store.customer_node(1), store.product_node(1), store.order_node(1)):
        assert node is not None
        known = set(schema.get_type(node["__typename"]).fields)  # type: ignore[union-attr]
        assert set(node) - {"__typename"} <= known


def test_a_page_comes_back_in_shopify_shapes(server: FakeShopServer) -> None:
    store = add_store(server)
    response = graphql(server, store, flat_page_query(ORDERS), {"first": 5})
    assert response.status_code == 200
    body = response.json()
    assert "errors" not in body
    page = body["data"]["orders"]
    assert page["pageInfo"]["hasNextPage"] is True
    for index, node in enumerate(page["nodes"]):
        # The order's own fields (its children are checked in test_fakeshop_children.py).
        expected = select(store.order_node(index), ORDERS.fields)  # type: ignore[arg-type]
        assert {key: node[key] for key in expected} == expected
        assert GID.match(node["id"])
        assert node["customer"] is None or GID.match(node["customer"]["id"])  # guests: None
        assert node["name"] == f"#{1001 + index}"
        assert DATETIME.match(node["createdAt"])
        assert node["updatedAt"] >= node["createdAt"]
        assert MONEY.match(node["totalPriceSet"]["shopMoney"]["amount"])
        assert node["totalPriceSet"]["shopMoney"]["currencyCode"] == "USD"
        assert node["displayFinancialStatus"] in {
            "PAID", "PENDING", "AUTHORIZED", "PARTIALLY_PAID", "PARTIALLY_REFUNDED", "REFUNDED",
            "EXPIRED", "VOIDED",
        }  # fmt: skip
        assert node["displayFulfillmentStatus"].isupper()
    customers = graphql(server, store, flat_page_query(CUSTOMERS), {"first": 5}).json()
    for node in customers["data"]["customers"]["nodes"]:
        assert isinstance(node["numberOfOrders"], str)
        assert node["numberOfOrders"].isdigit()
        assert node["state"] in {"ENABLED", "DISABLED", "INVITED", "DECLINED"}
        assert MONEY.match(node["amountSpent"]["amount"])
        assert "@" in node["defaultEmailAddress"]["emailAddress"]
    products = graphql(server, store, flat_page_query(PRODUCTS), {"first": 5}).json()
    for node in products["data"]["products"]["nodes"]:
        assert isinstance(node["tags"], list)
        assert all(isinstance(t, str) for t in node["tags"])
        assert node["status"] in {"ACTIVE", "DRAFT", "ARCHIVED"}


def test_nested_objects_node_lookup_and_counts(server: FakeShopServer) -> None:
    store = add_store(server)
    order = store.order_node(10)
    assert order is not None
    query = """
      query($id: ID!) {
        node(id: $id) { __typename ... on Order { name customer { id firstName } } }
        ordersCount(limit: null) { count precision }
        capped: ordersCount { count precision }
        shop { myshopifyDomain currencyCode }
      }
    """
    body = graphql(server, store, query, {"id": order["id"]}).json()
    assert "errors" not in body
    node = body["data"]["node"]
    assert node["__typename"] == "Order"
    assert node["name"] == "#1011"
    customer_index = int(node["customer"]["id"].rsplit("/", 1)[1]) - store.customers.base_id
    assert node["customer"]["firstName"] == store.customer_node(customer_index)["firstName"]  # type: ignore[index]
    assert body["data"]["ordersCount"] == {"count": 1000, "precision": "EXACT"}
    assert body["data"]["shop"]["myshopifyDomain"] == store.shop_domain
    big = add_store(server, orders=20_000)
    capped = graphql(server, big, "{ ordersCount { count precision } }").json()
    # Like Shopify, counts stop at 10,000 unless the client passes limit: null.
    assert capped["data"]["ordersCount"] == {"count": 10_000, "precision": "AT_LEAST"}


def test_a_field_shopify_does_not_have_is_a_validation_error(server: FakeShopServer) -> None:
    store = add_store(server)
    response = graphql(server, store, "{ customers(first: 5) { nodes { id total_spent } } }")
    assert response.status_code == 200
    body = response.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["message"] == "Field 'total_spent' doesn't exist on type 'Customer'"
    assert error["extensions"]["code"] == "undefinedField"
    assert error["locations"] == [{"line": 1, "column": 36}]
    assert store.stats.invalid == 1
    syntax = graphql(server, store, "{ customers(first: 5) { nodes { id }").json()
    assert syntax["errors"][0]["message"].startswith("syntax error")


def test_a_real_field_the_simulator_lacks_is_an_error_not_a_silent_null(
    server: FakeShopServer,
) -> None:
    store = add_store(server)
    body = graphql(server, store, "{ orders(first: 1) { nodes { id totalWeight } } }").json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_SIMULATED"
    assert body["errors"][0]["path"] == ["orders", "nodes", 0, "totalWeight"]


def test_paging_by_50_returns_every_order_exactly_once(server: FakeShopServer) -> None:
    store = add_store(server, throttle=False)
    nodes = all_pages(server, store, "orders", 50)
    ids = [node["id"] for node in nodes]
    assert len(ids) == 1000
    assert len(set(ids)) == 1000
    assert ids == [store.orders.gid(i) for i in range(1000)]
    assert store.stats.answered == 20


def test_updated_at_filters(server: FakeShopServer, clock: ManualClock) -> None:
    store = add_store(server, throttle=False, clock=clock)
    stamps = [store.order_node(i)["updatedAt"] for i in range(1000)]  # type: ignore[index]
    assert stamps == sorted(stamps)  # untouched records: updatedAt rises with the index
    since = stamps[600]
    for search in (f"updated_at:>='{since}'", f"updated_at:>={since}", f'updated_at:>="{since}"'):
        got = [n["id"] for n in all_pages(server, store, "orders", 60, search)]
        assert got == [store.orders.gid(i) for i in range(1000) if stamps[i] >= since]
    until = stamps[99]
    got = [n["id"] for n in all_pages(server, store, "orders", 60, f"updated_at:<='{until}'")]
    assert got == [store.orders.gid(i) for i in range(1000) if stamps[i] <= until]

    # A change made now moves an old order into an incremental window; a delete removes one.
    clock.advance(3600)
    changed = store.update_order(3, financial_status="refunded")
    assert changed["updatedAt"] == clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    store.delete_order(700)
    window = all_pages(server, store, "orders", 60, f"updated_at:>='{since}'")
    ids = [n["id"] for n in window]
    assert store.orders.gid(3) in ids
    assert store.orders.gid(700) not in ids
    assert ids == sorted(ids)  # still in id order with the changed record merged in
    [refunded] = [n for n in window if n["id"] == store.orders.gid(3)]
    assert refunded["displayFinancialStatus"] == "REFUNDED"
    count = graphql(
        server,
        store,
        "query($q: String) { ordersCount(query: $q) { count } }",
        {"q": f"updated_at:>='{since}'"},
    ).json()
    assert count["data"]["ordersCount"]["count"] == len(window)
    unknown = graphql(
        server, store, flat_page_query(ORDERS), {"first": 1, "query": "colour:blue"}
    ).json()
    assert unknown["extensions"]["search"][0]["warnings"][0]["field"] == "colour"


def test_same_seed_same_records_and_another_seed_other_records() -> None:
    first = FakeStore("a", seed=7, orders=500, customers=50)
    again = FakeStore("a", seed=7, orders=500, customers=50)
    other = FakeStore("a", seed=8, orders=500, customers=50)
    for index in (0, 1, 250, 499):
        assert first.order_node(index) == again.order_node(index)
        assert first.customer_node(index % 50) == again.customer_node(index % 50)
    differing = [i for i in range(50) if first.order_node(i) != other.order_node(i)]
    assert len(differing) == 50
    # Orders point at customers that exist.
    for index in range(500):
        customer = first.order_node(index)["customer"]  # type: ignore[index]
        if customer is not None:
            assert (
                first.customers.view().index_of(int(customer["id"].rsplit("/", 1)[1])) is not None
            )


def test_throttled_under_a_small_bucket_and_recovered_as_time_passes(
    server: FakeShopServer, clock: ManualClock
) -> None:
    store = add_store(server, clock=clock, maximum_available=1000, restore_rate=50)
    page = {"first": 40}
    first = graphql(server, store, flat_page_query(ORDERS), page).json()
    assert first["extensions"]["cost"]["throttleStatus"] == {
        "maximumAvailable": 1000.0,
        "currentlyAvailable": 1000 - (3 + 40 * ORDERS.node_cost),
        "restoreRate": 50.0,
    }
    throttled = graphql(server, store, flat_page_query(ORDERS), page)
    assert throttled.status_code == 200
    body = throttled.json()
    assert body["errors"][0]["message"] == "Throttled"
    assert body["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert body["extensions"]["cost"]["requestedQueryCost"] == 563
    assert "data" not in body
    clock.advance(2.6)  # 437 + 2.6 * 50 = 567 points
    recovered = graphql(server, store, flat_page_query(ORDERS), page).json()
    assert "errors" not in recovered
    assert recovered["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 4
    assert store.stats.throttled == 1
    assert store.stats.points_used == 2 * 563
    store.configure_throttle(status=429)
    assert graphql(server, store, flat_page_query(ORDERS), page).status_code == 429


def test_query_cost_like_shopify(server: FakeShopServer) -> None:
    small = add_store(server, orders=30)
    body = graphql(server, small, flat_page_query(ORDERS), {"first": 50}).json()
    # 2 for the connection, 1 for pageInfo, 14 per order (itself, five money bags of two
    # objects each and one more for the presentment side, its customer, its shipping
    # address); actual cost counts the 30 orders that exist.
    assert ORDERS.node_cost == 14
    assert body["extensions"]["cost"]["requestedQueryCost"] == 2 + 1 + 50 * ORDERS.node_cost
    assert body["extensions"]["cost"]["actualQueryCost"] == 2 + 1 + 30 * ORDERS.node_cost
    customers = graphql(server, small, flat_page_query(CUSTOMERS), {"first": 100}).json()
    assert customers["extensions"]["cost"]["requestedQueryCost"] == 3 + 100 * CUSTOMERS.node_cost
    products = graphql(server, small, flat_page_query(PRODUCTS), {"first": 100}).json()
    assert products["extensions"]["cost"]["requestedQueryCost"] == 3 + 100 * PRODUCTS.node_cost

    too_costly = graphql(server, small, flat_page_query(ORDERS), {"first": 250}).json()
    [error] = too_costly["errors"]
    assert error["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert error["extensions"]["cost"] == 3 + 250 * 14
    assert error["extensions"]["maxCost"] == 1000
    assert error["message"].startswith(f"Query cost is {3 + 250 * 14}, which exceeds")
    too_big = graphql(server, small, "{ products(first: 251) { nodes { id } } }").json()
    assert "Expected a page size from 0 to 250" in too_big["errors"][0]["message"]
    # Nested connections multiply: 2 + 10 x (the order + its line item connection of 5).
    nested = "{ orders(first: 10) { nodes { lineItems(first: 5) { nodes { id } } } } }"
    body = graphql(server, small, nested).json()
    assert body["extensions"]["cost"]["requestedQueryCost"] == 2 + 10 * (1 + 2 + 5 * 1)
    missing = graphql(server, small, "{ products { nodes { id } } }").json()
    assert missing["errors"][0]["message"] == "you must provide one of first or last"
    assert missing["data"] is None


def test_bulk_operation_lifecycle_and_jsonl_download(server: FakeShopServer) -> None:
    # One bulk query at a time, as before API version 2026-01 (later ones allow five).
    store = add_store(server, bulk_concurrency=1)
    started = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(ORDERS)}).json()
    payload = started["data"]["bulkOperationRunQuery"]
    assert payload["userErrors"] == []
    assert payload["bulkOperation"]["status"] == "CREATED"
    operation_id = payload["bulkOperation"]["id"]
    assert operation_id.startswith("gid://shopify/BulkOperation/")

    second = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(CUSTOMERS)}).json()
    assert second["data"]["bulkOperationRunQuery"]["bulkOperation"] is None
    [user_error] = second["data"]["bulkOperationRunQuery"]["userErrors"]
    assert user_error["message"] == (
        f"A bulk query operation for this app and shop is already in progress: {operation_id}."
    )

    running = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
    assert running["status"] == "RUNNING"
    assert running["url"] is None
    done = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
    assert done["status"] == "COMPLETED"
    assert done["errorCode"] is None
    assert done["objectCount"] == "1000"

    with httpx.stream("GET", done["url"], timeout=30) as download:
        assert download.status_code == 200
        lines = [json.loads(line) for line in download.iter_lines() if line]
    assert len(lines) == store.counts["orders"] == 1000
    assert lines[42] == select(store.order_node(42), ORDERS.fields)  # type: ignore[arg-type]

    # The query argument filters the export; the next operation may start now.
    since = store.order_node(900)["updatedAt"]  # type: ignore[index]
    search = f"updated_at:>='{since}'"
    filtered = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(ORDERS, search)}).json()
    filtered_id = filtered["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    current = "{ currentBulkOperation { id status objectCount url } }"
    graphql(server, store, current)
    finished = graphql(server, store, current).json()["data"]["currentBulkOperation"]
    assert finished["id"] == filtered_id
    assert finished["status"] == "COMPLETED"
    assert finished["objectCount"] == "100"
    assert len(httpx.get(finished["url"], timeout=30).text.splitlines()) == 100

    invalid = graphql(server, store, BULK_RUN, {"query": "{ orders { edges { node { bogus } } } }"})
    [problem] = invalid.json()["data"]["bulkOperationRunQuery"]["userErrors"]
    assert problem == {
        "field": ["query"],
        "message": "Invalid bulk query: Field 'bogus' doesn't exist on type 'Order'",
    }


def test_bulk_operation_failure_gives_partial_data(server: FakeShopServer) -> None:
    store = add_store(server, orders=10, bulk_polls_to_complete=1)
    store.bulk.fail_next("INTERNAL_SERVER_ERROR")
    started = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(PRODUCTS)}).json()
    operation_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    failed = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
    assert failed["status"] == "FAILED"
    assert failed["errorCode"] == "INTERNAL_SERVER_ERROR"
    assert failed["url"] is None
    assert len(httpx.get(failed["partialDataUrl"]).text.splitlines()) == 25  # of 50 products


def test_expiring_token_refresh_and_rejected_tokens(
    server: FakeShopServer, clock: ManualClock
) -> None:
    store = add_store(server, orders=5, clock=clock)
    grant = store.issue_expiring_token(expires_in=60)
    token = grant["access_token"]
    shop_query = "{ shop { name } }"
    assert graphql(server, store, shop_query, token=token).status_code == 200
    clock.advance(61)
    expired = graphql(server, store, shop_query, token=token)
    assert expired.status_code == 401
    assert expired.json() == UNAUTHORIZED

    credentials = {"client_id": store.tokens.client_id, "client_secret": store.tokens.client_secret}
    first_refresh = grant["refresh_token"]
    refreshed = httpx.post(
        server.token_url(store.shop_domain),
        data={**credentials, "grant_type": "refresh_token", "refresh_token": first_refresh},
    )
    assert refreshed.status_code == 200
    pair = refreshed.json()
    assert set(pair) == {
        "access_token", "expires_in", "refresh_token", "refresh_token_expires_in", "scope",
    }  # fmt: skip
    assert pair["expires_in"] == 60
    assert graphql(server, store, shop_query, token=pair["access_token"]).status_code == 200

    # The old refresh token stays valid until the new one is used (a lost response is
    # recoverable), and then it is dead.
    json_body = {**credentials, "grant_type": "refresh_token", "refresh_token": first_refresh}
    retried = httpx.post(server.token_url(store.shop_domain), json=json_body)
    assert retried.status_code == 200
    latest = retried.json()
    assert graphql(server, store, shop_query, token=pair["access_token"]).status_code == 401
    used_new = httpx.post(
        server.token_url(store.shop_domain),
        data={
            **credentials,
            "grant_type": "refresh_token",
            "refresh_token": latest["refresh_token"],
        },
    )
    assert used_new.status_code == 200
    stale = httpx.post(server.token_url(store.shop_domain), json=json_body)
    assert stale.status_code == 400
    assert stale.json()["error"] == "invalid_grant"
    bad_client = httpx.post(
        server.token_url(store.shop_domain),
        json={
            **json_body,
            "client_secret": "wrong",
            "refresh_token": used_new.json()["refresh_token"],
        },
    )
    assert bad_client.status_code == 401

    # A token Shopify expires early (as in a long job) is refreshable like an old one.
    newest = used_new.json()
    store.inject(Fault.expire_token())
    assert graphql(server, store, shop_query, token=newest["access_token"]).status_code == 401
    again = httpx.post(
        server.token_url(store.shop_domain),
        json={**json_body, "refresh_token": newest["refresh_token"]},
    )
    assert graphql(server, store, shop_query, token=again.json()["access_token"]).status_code == 200

    assert graphql(server, store, shop_query, token="shpat_unknown").status_code == 401
    store.revoke_token()
    revoked = graphql(server, store, shop_query)
    assert revoked.status_code == 401
    assert revoked.json() == UNAUTHORIZED


def test_injected_faults_are_visible_to_an_http_client(server: FakeShopServer) -> None:
    store = add_store(server, orders=5)
    query = "{ shop { name } }"
    store.inject(
        Fault.rate_limited(retry_after=3),
        Fault.http(500),
        Fault.http(502),
        Fault.http(503, times=2),
        Fault.throttled(),
    )
    limited = graphql(server, store, query)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert [graphql(server, store, query).status_code for _ in range(4)] == [500, 502, 503, 503]
    assert graphql(server, store, query).json()["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert graphql(server, store, query).status_code == 200  # the queue is used up

    store.inject(Fault.slow(0.3))
    started = time.monotonic()
    assert graphql(server, store, query).status_code == 200
    assert time.monotonic() - started >= 0.29  # the event loop may wake a hair early

    # Both surface as httpx transport errors (RemoteProtocolError, or ReadError on a reset).
    dropped = (httpx.RemoteProtocolError, httpx.ReadError)
    store.inject(Fault.drop())
    with pytest.raises(dropped):
        graphql(server, store, query)
    store.inject(Fault.drop_mid_body())
    with pytest.raises(dropped):
        graphql(server, store, query)

    store.inject(Fault.revoke_token())
    assert graphql(server, store, query).status_code == 401
    assert graphql(server, store, query).status_code == 401  # and from then on
    assert store.stats.faults["drop"] == 1
    assert store.stats.faults["status:503"] == 2


def test_a_prepared_bulk_file_is_the_file_streamed_and_completes_once_written(
    server: FakeShopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The benchmarks' mode (Shopify writes the file while the operation runs, then serves
    it statically) gives the bytes the streamed mode generates, children included."""
    options: dict[str, Any] = {"seed": 5, "orders": 300, "bulk_polls_to_complete": 1}
    streamed = add_store(server, **options)
    prepared = add_store(server, **options, bulk_prepare_files=True)
    gate = threading.Event()
    prepare = prepared.bulk._prepare

    def held(operation: Any) -> None:
        gate.wait(30)
        prepare(operation)

    monkeypatch.setattr(prepared.bulk, "_prepare", held)
    query = {"query": ORDERS_WITH_CHILDREN.bulk_query()}
    downloads: list[bytes] = []
    for store in (streamed, prepared):
        started = graphql(server, store, BULK_RUN, query).json()
        operation_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
        if store is prepared:
            writing = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()
            assert writing["data"]["node"]["status"] == "RUNNING"
            assert writing["data"]["node"]["objectCount"] == "0"
            gate.set()
            ready = store.bulk.current().ready  # type: ignore[union-attr]
            assert ready is not None
            assert ready.wait(60)
        done = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
        assert (done["status"], done["objectCount"]) == ("COMPLETED", "300")
        downloads.append(httpx.get(done["url"], timeout=30).content)
    assert downloads[0] == downloads[1]
    assert b'"__parentId"' in downloads[1]
    file = prepared.bulk.current().file  # type: ignore[union-attr]
    assert file is not None
    assert file.read_bytes() == downloads[1]

    prepared.bulk.fail_next("INTERNAL_SERVER_ERROR")
    failed = _prepared_operation(server, prepared, flat_bulk_query(ORDERS))
    assert failed["status"] == "FAILED"
    assert len(httpx.get(failed["partialDataUrl"]).text.splitlines()) == 150


def _prepared_operation(server: FakeShopServer, store: FakeStore, query: str) -> dict[str, Any]:
    """Run a bulk query on a store that prepares its files; the operation once its file is
    written, as a status poll shows it."""
    started = graphql(server, store, BULK_RUN, {"query": query}).json()
    operation_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    ready = store.bulk.current().ready  # type: ignore[union-attr]
    assert ready is not None
    assert ready.wait(60)
    node: dict[str, Any] = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"][
        "node"
    ]
    return node


def test_a_prepared_file_that_cannot_be_written_ends_the_operation_failed(
    server: FakeShopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = add_store(server, orders=50, bulk_polls_to_complete=1, bulk_prepare_files=True)
    lines = store.bulk.lines

    def broken(*args: Any, **kwargs: Any) -> Iterator[str]:
        yield from itertools.islice(lines(*args, **kwargs), 10)
        raise RuntimeError("disk full")

    monkeypatch.setattr(store.bulk, "lines", broken)
    node = _prepared_operation(server, store, flat_bulk_query(ORDERS))
    assert (node["status"], node["errorCode"], node["url"]) == (
        "FAILED",
        "INTERNAL_SERVER_ERROR",
        None,
    )
    assert len(httpx.get(node["partialDataUrl"]).text.splitlines()) == 10


def test_a_prepared_file_with_no_process_to_write_it_ends_the_operation_failed(
    server: FakeShopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = add_store(server, orders=50, bulk_polls_to_complete=1, bulk_prepare_files=True)

    def refused() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refused)
    node = _prepared_operation(server, store, flat_bulk_query(ORDERS))
    assert (node["status"], node["errorCode"]) == ("FAILED", "INTERNAL_SERVER_ERROR")


def test_a_prepared_file_is_written_apart_at_the_lowest_priority_and_canceling_stops_it(
    server: FakeShopServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renderer is a child process at nice 19 (the simulator's rendering takes what the
    client's ingest leaves of the machine); its progress shows in `objectCount`, and a cancel
    kills it. The child writes 10 records, then waits on a pipe nobody writes."""
    store = add_store(server, orders=50, bulk_polls_to_complete=1, bulk_prepare_files=True)
    lines = store.bulk.lines
    hold, release = os.pipe()

    def stuck(operation: Any, limit: Any = None, progress: Any = None) -> Iterator[str]:
        yield from itertools.islice(lines(operation, limit, progress), 10)
        os.read(hold, 1)

    monkeypatch.setattr(store.bulk, "lines", stuck)
    try:
        _cancel_a_prepared_file_being_written(server, store)
    finally:
        os.write(release, b"x")  # a child the cancel missed finishes (and the test fails)
        os.close(hold)
        os.close(release)


def _cancel_a_prepared_file_being_written(server: FakeShopServer, store: FakeStore) -> None:
    started = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(ORDERS)}).json()
    operation_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    operation = store.bulk.current()
    assert operation is not None
    assert operation.ready is not None
    counts = []
    deadline = time.monotonic() + 60
    while not counts or counts[-1] < 10:
        assert time.monotonic() < deadline, counts[-5:]
        node = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
        assert node["status"] == "RUNNING"
        counts.append(int(node["objectCount"]))
    assert counts[-1] == 10
    assert counts == sorted(counts)
    renderer = operation.renderer
    assert renderer is not None
    assert renderer != os.getpid()
    assert os.getpriority(os.PRIO_PROCESS, renderer) == 19

    cancel = "mutation($id: ID!) { bulkOperationCancel(id: $id) { userErrors { message } } }"
    answer = graphql(server, store, cancel, {"id": operation_id}).json()
    assert answer["data"]["bulkOperationCancel"]["userErrors"] == []
    assert operation.ready.wait(60)
    assert operation.renderer is None
    with pytest.raises(ProcessLookupError):
        os.kill(renderer, 0)
    node = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]
    assert node["status"] == "CANCELED"


def test_faults_on_the_bulk_download(server: FakeShopServer) -> None:
    store = add_store(server, orders=2000, bulk_polls_to_complete=1)
    started = graphql(server, store, BULK_RUN, {"query": flat_bulk_query(ORDERS)}).json()
    operation_id = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
    url = graphql(server, store, BULK_STATUS, {"id": operation_id}).json()["data"]["node"]["url"]
    store.inject(Fault.http(503, target="download"), Fault.drop_mid_body(target="download"))
    assert httpx.get(url).status_code == 503
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(url)
    assert len(httpx.get(url).text.splitlines()) == 2000


def test_shop_from_host_header_and_unknown_shops(server: FakeShopServer) -> None:
    store = add_store(server, orders=5)
    add_store(server, orders=5)
    response = httpx.post(
        f"{server.base_url}/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { myshopifyDomain } }"},
        headers={"Host": store.shop_domain, "X-Shopify-Access-Token": store.access_token},
    )
    assert response.json()["data"]["shop"]["myshopifyDomain"] == store.shop_domain
    short = store.shop_domain.removesuffix(".myshopify.com")
    by_short_name = httpx.post(
        f"{server.base_url}/{short}/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { name } }"},
        headers={"X-Shopify-Access-Token": store.access_token},
    )
    assert by_short_name.status_code == 200
    unknown = httpx.post(
        f"{server.base_url}/nope.myshopify.com/admin/api/2026-10/graphql.json",
        json={"query": "{ shop { name } }"},
    )
    assert unknown.status_code == 404


def test_the_graphql_core_executor_gives_the_same_answers(server: FakeShopServer) -> None:
    fast = add_store(server, seed=3)
    exact = add_store(server, seed=3, executor="graphql-core")
    for resource in RESOURCES.values():
        # With children: the first five records fit under the single-query limit.
        variables = {"first": 5, "query": "updated_at:>='2023-01-01'"}
        a = graphql(server, fast, resource.page_query, variables).json()
        b = graphql(server, exact, resource.page_query, variables).json()
        assert a["data"] == b["data"]
        assert (
            a["extensions"]["cost"]["actualQueryCost"] == b["extensions"]["cost"]["actualQueryCost"]
        )
