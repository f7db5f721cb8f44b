"""The backfill writes every child table equal to the simulated store, row by row, in both
modes and on both backends: records with more children than a page asks for are completed by
id (an order with 300 line items, a product with 150 variants), bulk results are put back
under their parents, and nothing is left in a child table that the store does not have."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from backfill.nested import READS_IN_FLIGHT, fill_bulk_gaps
from backfill.refetch import complete_all_refetches
from backfill.runner import (
    BackfillEnvironment,
    admin_client_for,
    create_sync_job,
    run_sync_job,
)
from handlers.resources import RESOURCES
from models import ChildRefetch, ProductVariant, SyncJob, Tenant
from models.tenancy import use_tenant
from tests.conftest import Backend, ServedApp
from tests.factories import SHOP, create_tenant, delivery, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, ManualClock
from tests.fakeshop.children import children_of
from tests.fakeshop.rest import RestRenderer
from tests.store_children import assert_children_equal_store, expected_children, store_nodes

STORE = {
    "customers": 40,
    "products": 30,
    "orders": 90,
    "many_line_items_every": 40,
    "many_line_items": 300,
    "many_variants_every": 15,
    "many_variants": 150,
}


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    clock = ManualClock()
    store = FakeStore(SHOP, seed=5, clock=clock, **STORE)
    with FakeShopServer(store) as server:
        yield store, clock, server


@pytest.fixture
async def env(
    backend: Backend, simulator: tuple[FakeStore, ManualClock, FakeShopServer]
) -> AsyncIterator[tuple[BackfillEnvironment, int]]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    async with httpx.AsyncClient(timeout=30) as http:
        yield (
            simulator_environment(
                backend.sessions,
                http,
                server.admin_base_url_template,
                store,
                clock,
                bulk_poll_interval=0.01,
            ),
            tenant_id,
        )


async def sync(backend: Backend, env: BackfillEnvironment, tenant_id: int, mode: str) -> SyncJob:
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        job = await create_sync_job(session, tenant, mode)
    await run_sync_job(env, job.id)
    async with backend.sessions() as session:
        return await session.get_one(SyncJob, job.id)


@pytest.mark.parametrize("mode", ["full", "bulk"])
async def test_every_child_table_equals_the_store(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any, mode: str
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    job = await sync(backend, environment, tenant_id, mode)
    assert (job.status, job.error) == ("succeeded", None)

    async with backend.sessions() as session:
        most = await assert_children_equal_store(session, store, tenant_id)
    # The overflow was there to page: more children than one page query asks for.
    assert most["order_line_items"] == 300
    assert most["product_variants"] == 150


# -- a webhook's cut variant list, read whole --------------------------------------------------


async def test_a_webhooks_cut_variant_list_is_read_whole_by_the_refetch(
    backend: Backend,
    env: tuple[BackfillEnvironment, int],
    simulator: Any,
    served: ServedApp,
    http: httpx.AsyncClient,
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    products = RESOURCES["products"]
    [variants] = [child for child in products.own_children if child.table == "product_variants"]
    node = max(store_nodes(store, products), key=lambda n: len(children_of(n, "variants")))
    product_id = int(str(node["id"]).rsplit("/", 1)[1])
    wanted = {
        record["shopify_id"]: record
        for _, record in expected_children(variants, node, "Product", product_id)
    }
    assert len(wanted) == 150
    # Shopify's body: the first variants, every variant's gid in `variant_gids` (cut at 20,
    # not Shopify's 100: the served test app takes bodies of up to 64 KB).
    body = RestRenderer(store, variant_limit=20).render("products", node)
    assert (len(body["variants"]), len(body["variant_gids"])) == (20, 150)
    # The webhook names the store's own tenant (SHOP, as the simulator's store does).
    payload, headers = delivery("products/update", body)
    response = await http.post(served.webhook_url, content=payload, headers=headers)
    assert (response.status_code, response.json().get("status")) == (200, "processed"), (
        response.text
    )

    async def stored() -> dict[int, ProductVariant]:
        async with backend.sessions() as session:
            return {
                row.shopify_id: row
                for row in await session.scalars(
                    select(ProductVariant).where(
                        ProductVariant.tenant_id == tenant_id,
                        ProductVariant.product_shopify_id == product_id,
                        ProductVariant.deleted_at.is_(None),
                    )
                )
            }

    async def waiting() -> list[int]:
        async with backend.sessions() as session:
            return list(await session.scalars(select(ChildRefetch.parent_shopify_id)))

    assert len(await stored()) == 20
    assert await waiting() == [product_id]

    assert await complete_all_refetches(environment) == 1
    rows = await stored()
    assert sorted(rows) == sorted(wanted)
    for shopify_id, record in wanted.items():
        for column, value in record.items():
            if column != "raw":
                assert getattr(rows[shopify_id], column) == value, (shopify_id, column)
    assert await waiting() == []
    # Nothing waits: a second tick asks Shopify nothing.
    assert await complete_all_refetches(environment) == 0


async def test_a_list_cut_again_after_the_refetch_read_is_read_again(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any
) -> None:
    store = simulator[0]
    environment, tenant_id = env
    node = next(store_nodes(store, RESOURCES["products"]))
    product_id = int(str(node["id"]).rsplit("/", 1)[1])
    later = datetime.now(UTC) + timedelta(hours=1)  # a request made after any read below
    async with backend.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        session.add(
            ChildRefetch(
                tenant_id=tenant_id,
                child_table="product_variants",
                parent_shopify_id=product_id,
                requested_at=later,
            )
        )
    assert await complete_all_refetches(environment) == 0
    async with backend.sessions() as session:
        assert list(await session.scalars(select(ChildRefetch.parent_shopify_id))) == [product_id]
        # The read still wrote the product whole.
        assert await session.scalar(
            select(func.count()).where(ProductVariant.product_shopify_id == product_id)
        ) == len(children_of(node, "variants"))


# -- a bulk result's refunds: their line items read by id, in batches --------------------------


async def test_refunds_line_items_missing_from_a_bulk_result_are_read_in_batches(
    backend: Backend, env: tuple[BackfillEnvironment, int], simulator: Any
) -> None:
    """A bulk query cannot nest a connection in a list, so each refund's line items are read
    by id: as many refunds per query as fit, again in batches (with room for four times as
    many) for those with more, and one by one only for what is left. Every list ends whole."""
    store = simulator[0]
    environment, tenant_id = env
    long_orders = [
        i
        for i in range(STORE["orders"])
        if len(children_of(store.orders.node(i), "lineItems")) >= 40
        and len(children_of(store.orders.node(i), "refunds")) <= 4
    ]
    sizes = [2, 5, 6, 7, 8, 16, 17, 40]  # a page query asks for 4 (REFUND_LINE_ITEMS.first)
    # Four refunds each on two orders (an order holds at most eight in the simulator).
    placed = [(long_orders[n // 4], size) for n, size in enumerate(sizes)]
    refunds = [store.add_refund(i, [(p, 1) for p in range(size)]) for i, size in placed]
    nodes: list[dict[str, Any]] = [
        {"id": store.orders.gid(i), "refunds": []} for i in long_orders[:2]
    ]
    for (i, _), refund in zip(placed, refunds, strict=True):
        nodes[long_orders.index(i)]["refunds"].append({"id": refund["id"]})
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, tenant_id)
    client = admin_client_for(environment, tenant)
    asked: list[str] = []
    execute = client.execute

    async def observed(document: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(document.split("(", 1)[0].removeprefix("query "))
        return await execute(document, *args, **kwargs)

    client.execute = observed  # type: ignore[method-assign]
    await fill_bulk_gaps(client, RESOURCES["orders"].children, nodes)

    read_refunds = [refund for node in nodes for refund in node["refunds"]]
    for refund, read in zip(refunds, read_refunds, strict=True):
        connection = read["refundLineItems"]
        assert connection["pageInfo"]["hasNextPage"] is False
        assert [item["id"] for item in connection["nodes"]] == [
            item["id"] for item in children_of(refund, "refundLineItems")
        ]
    # One batch for all eight; one for the seven with more than 4; alone only the two with
    # more than 16 (one page each). Read one by one after the first batch, it took eight.
    assert asked == ["ChildrenOf", "ChildrenOf", "Children", "Children"]


@pytest.mark.parametrize(("bucket", "at_once"), [(1000, 1), (2000, 2), (10_000, READS_IN_FLIGHT)])
async def test_refunds_reads_go_out_together_as_far_as_the_bucket_has_room(
    backend: Backend,
    env: tuple[BackfillEnvironment, int],
    simulator: Any,
    bucket: int,
    at_once: int,
) -> None:
    """A batch's refunds are read several queries at once (each waits on Shopify's round
    trip), but each query holds its requested cost (about 1,000 points) until it is answered:
    a 1,000-point bucket takes them one by one, a 2,000-point one two at a time."""
    store, clock = simulator[0], simulator[1]
    environment, tenant_id = env
    store.configure_throttle(maximum_available=bucket)
    clock.advance(bucket / 100)  # full, at the simulator's 100 points a second
    # Shopify's round trip, so that queries sent together are answered together.
    store.latency = 0.2
    # Two refunds on each order besides the store's own (an order holds at most eight):
    # enough for more queries than go out at once.
    for index in range(STORE["orders"]):
        for _ in range(min(2, 8 - len(children_of(store.orders.node(index), "refunds")))):
            store.add_refund(index)
    nodes: list[dict[str, Any]] = [
        {
            "id": store.orders.gid(index),
            "refunds": [
                {"id": refund["id"]} for refund in children_of(store.orders.node(index), "refunds")
            ],
        }
        for index in range(STORE["orders"])
    ]
    refunds = sum(len(node["refunds"]) for node in nodes)
    # 31 refunds a query: what fits under 1,000 requested points.
    assert refunds > (READS_IN_FLIGHT + 1) * 31
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, tenant_id)
    client = admin_client_for(environment, tenant)
    # As in a bulk job, which started and polled its operations first: the client has seen
    # the bucket's size.
    await client.execute("{ shop { id } }", cost=1)
    store.reset_stats()

    await fill_bulk_gaps(client, RESOURCES["orders"].children, nodes)

    assert store.stats.most_graphql_in_flight == at_once
    assert store.stats.throttled == 0
    for index, node in enumerate(nodes):
        stored = children_of(store.orders.node(index), "refunds")
        for refund, read in zip(stored, node["refunds"], strict=True):
            assert [item["id"] for item in read["refundLineItems"]["nodes"]] == [
                item["id"] for item in children_of(refund, "refundLineItems")
            ]
