"""The simulator's sortKey UPDATED_AT and nodes(ids:), which reconcile relies on, answer like
Shopify: records in (updatedAt, id) order with changed records merged in, nulls for ids that
do not exist. Real HTTP to an in-process server; time is a ManualClock."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backfill.queries import RESOURCES
from backfill.reconcile import SCOPES_QUERY, counts_query, nodes_query, summary_query
from handlers.resources import RECONCILE_TARGETS
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock, check_document, select

UPDATED_PAGE = """
query Page($first: Int, $last: Int, $after: String, $before: String, $query: String,
           $reverse: Boolean) {
  orders(first: $first, last: $last, after: $after, before: $before, query: $query,
         reverse: $reverse, sortKey: UPDATED_AT) {
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    nodes { id updatedAt }
  }
}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeShopServer]:
    with FakeShopServer([]) as served:
        yield served
    _http.close()


_names = iter(range(1, 1000))
# One keep-alive connection for the module's many small requests.
_http = httpx.Client()


def add_store(server: FakeShopServer, **options: Any) -> FakeStore:
    options.setdefault("customers", 20)
    options.setdefault("products", 20)
    options.setdefault("orders", 600)
    options.setdefault("throttle", False)
    return server.add_store(FakeStore(f"sorted-{next(_names)}", **options))


def graphql(
    server: FakeShopServer, store: FakeStore, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    response = _http.post(
        server.graphql_url(store.shop_domain),
        json={"query": query, "variables": variables or {}},
        headers={"X-Shopify-Access-Token": store.access_token},
        timeout=30,
    )
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def walk(server: FakeShopServer, store: FakeStore, size: int, **variables: Any) -> list[str]:
    """Every page forwards (or backwards with `last`), as ids in the order served."""
    ids: list[str] = []
    cursor: str | None = None
    backwards = "last" in variables or size < 0
    while True:
        page_variables = dict(variables)
        if backwards:
            page_variables |= {"last": abs(size), "before": cursor}
        else:
            page_variables |= {"first": size, "after": cursor}
        body = graphql(server, store, UPDATED_PAGE, page_variables)
        assert "errors" not in body, body
        page = body["data"]["orders"]
        nodes = [node["id"] for node in page["nodes"]]
        if backwards:
            ids = nodes + ids
            if not page["pageInfo"]["hasPreviousPage"]:
                return ids
            cursor = page["pageInfo"]["startCursor"]
        else:
            ids += nodes
            if not page["pageInfo"]["hasNextPage"]:
                return ids
            cursor = page["pageInfo"]["endCursor"]


def expected_order(store: FakeStore, search: tuple[str, str] | None = None) -> list[str]:
    live = [
        node
        for node in (store.order_node(i) for i in range(store.orders.total))
        if node is not None
    ]
    if search is not None:
        lo, hi = search
        live = [node for node in live if lo <= node["updatedAt"] < hi]
    # ISO strings of one format sort like the instants; ids are numeric.
    live.sort(key=lambda node: (node["updatedAt"], int(node["id"].rsplit("/", 1)[1])))
    return [node["id"] for node in live]


def test_updated_at_order_merges_changed_created_and_deleted_records(
    server: FakeShopServer,
) -> None:
    clock = ManualClock()
    store = add_store(server, clock=clock)
    untouched = walk(server, store, 100)
    assert untouched == [store.orders.gid(i) for i in range(600)]  # generated: index order
    clock.advance(3600)
    store.update_order(10, financial_status="refunded")  # now: moves to the end
    store.update_order(400, updatedAt="2021-01-01T00:00:00Z")  # moves to the very start
    stamp = store.order_node(300)["updatedAt"]  # type: ignore[index]
    store.update_order(5, updatedAt=stamp)  # ties record 300: id order breaks the tie
    store.delete_order(200)
    created = store.create_order(email="late@example.com")
    expected = expected_order(store)
    assert expected[0] == store.orders.gid(400)
    assert expected[-2:] == [store.orders.gid(10), store.orders.gid(created)]
    assert expected.index(store.orders.gid(5)) + 1 == expected.index(store.orders.gid(300))
    for size in (7, 100, 250):
        assert walk(server, store, size) == expected, size
    assert walk(server, store, 33, reverse=True) == expected[::-1]
    assert walk(server, store, -40) == expected  # last/before, backwards

    newest = graphql(server, store, UPDATED_PAGE, {"first": 1, "reverse": True})
    assert newest["data"]["orders"]["nodes"][0]["id"] == store.orders.gid(created)
    window = ("2022-01-01T00:00:00Z", "2024-01-01T00:00:00Z")
    query = f"updated_at:>='{window[0]}' updated_at:<'{window[1]}'"
    assert walk(server, store, 50, query=query) == expected_order(store, window)
    assert walk(server, store, 50, query=query, reverse=True) == expected_order(store, window)[::-1]


def test_an_updated_at_cursor_keeps_its_place_when_the_record_changes(
    server: FakeShopServer,
) -> None:
    clock = ManualClock()
    store = add_store(server, clock=clock)
    first = graphql(server, store, UPDATED_PAGE, {"first": 50})["data"]["orders"]
    clock.advance(60)
    store.update_order(49, financial_status="refunded")  # the cursor's own record moves away
    second = graphql(
        server, store, UPDATED_PAGE, {"first": 50, "after": first["pageInfo"]["endCursor"]}
    )
    ids = [node["id"] for node in second["data"]["orders"]["nodes"]]
    assert ids == [store.orders.gid(i) for i in range(50, 100)]


def test_an_id_cursor_is_refused_under_updated_at(server: FakeShopServer) -> None:
    store = add_store(server)
    by_id = graphql(server, store, RESOURCES["orders"].page_query, {"first": 2})
    cursor = by_id["data"]["orders"]["pageInfo"]["endCursor"]
    body = graphql(server, store, UPDATED_PAGE, {"first": 2, "after": cursor})
    assert body["errors"][0]["message"] == "Invalid cursor for current pagination sort."


def test_updated_at_paging_stays_fast_on_a_million_orders(server: FakeShopServer) -> None:
    clock = ManualClock()
    store = add_store(server, orders=1_000_000, clock=clock)
    clock.advance(60)
    store.update_order(17, financial_status="refunded")
    started = time.monotonic()
    newest = graphql(server, store, UPDATED_PAGE, {"first": 3, "reverse": True})
    oldest = graphql(server, store, UPDATED_PAGE, {"first": 250})
    middle_stamp = store.order_node(500_000)["updatedAt"]  # type: ignore[index]
    window = graphql(
        server, store, UPDATED_PAGE, {"first": 250, "query": f"updated_at:>='{middle_stamp}'"}
    )
    after = graphql(
        server,
        store,
        UPDATED_PAGE,
        {"first": 5, "after": window["data"]["orders"]["pageInfo"]["endCursor"]},
    )
    elapsed = time.monotonic() - started
    assert [n["id"] for n in newest["data"]["orders"]["nodes"]] == [
        store.orders.gid(17), store.orders.gid(999_999), store.orders.gid(999_998)
    ]  # fmt: skip
    assert oldest["data"]["orders"]["nodes"][0]["id"] == store.orders.gid(0)
    assert window["data"]["orders"]["nodes"][0]["id"] == store.orders.gid(500_000)
    assert [n["id"] for n in after["data"]["orders"]["nodes"]] == [
        store.orders.gid(i) for i in range(500_250, 500_255)
    ]
    # Binary searches and lazy merging, not a scan or sort of a million records.
    assert elapsed < 5, elapsed


def test_nodes_returns_records_by_id_and_null_for_missing_ones(server: FakeShopServer) -> None:
    store = add_store(server)
    store.delete_order(3)
    resource = RECONCILE_TARGETS["orders"]
    ids = [
        store.orders.gid(1),
        store.orders.gid(3),  # deleted
        "gid://shopify/Order/1",  # never existed
        store.customers.gid(2),  # another type: not an Order, so no Order fields
        store.orders.gid(599),
    ]
    body = graphql(server, store, nodes_query(resource), {"ids": ids})
    assert "errors" not in body, body
    nodes = body["data"]["nodes"]
    assert nodes[0] == select(store.order_node(1), resource.fields)  # type: ignore[arg-type]
    assert nodes[1] is None
    assert nodes[2] is None
    assert nodes[3] == {}
    assert nodes[4] == select(store.order_node(599), resource.fields)  # type: ignore[arg-type]


def test_reconcile_documents_validate_against_the_real_schema(server: FakeShopServer) -> None:
    store = add_store(server, scope="read_orders,read_all_orders")
    assert check_document(SCOPES_QUERY).errors == ()
    scopes = graphql(server, store, SCOPES_QUERY)["data"]["currentAppInstallation"]
    assert [scope["handle"] for scope in scopes["accessScopes"]] == [
        "read_orders", "read_all_orders"
    ]  # fmt: skip
    for resource in [t for t in RECONCILE_TARGETS.values() if t.resource.updated_at_sort]:
        if resource.resource.name != resource.name:
            continue  # a child listed on QueryRoot (product_variants): no UPDATED_AT sort
        for document in (summary_query(resource), counts_query(resource, 3), nodes_query(resource)):
            checked = check_document(document)
            assert checked.errors == (), (document, checked.errors)
            assert checked.deprecated == ()
        summary = graphql(server, store, summary_query(resource))
        assert "errors" not in summary, summary
        assert summary["data"]["total"] == {
            "count": 20 if resource.name != "orders" else 600,
            "precision": "EXACT",
        }
        window = {
            "q0": None,
            "q1": "updated_at:<'2021-01-01T00:00:00Z'",
            "q2": "updated_at:>='2021-01-01'",
        }
        counts = graphql(server, store, counts_query(resource, 3), window)["data"]
        assert [counts[f"w{i}"]["count"] for i in range(3)] == [
            summary["data"]["total"]["count"], 0, summary["data"]["total"]["count"]
        ]  # fmt: skip


def test_every_reconcile_document_validates_against_the_real_schema() -> None:
    """Each target's page, by-id and (where Shopify counts it) count documents, and the
    window counts of those without an UPDATED_AT sort (product variants)."""
    for target in RECONCILE_TARGETS.values():
        documents = [target.page_query, target.nodes_query]
        if target.counted:
            documents += [target.count_query, counts_query(target, 3)]
        if target.updated_at_sort:
            documents.append(summary_query(target))
        for document in documents:
            checked = check_document(document)
            assert checked.errors == (), (target.name, document, checked.errors)
            assert checked.deprecated == (), (target.name, checked.deprecated)
