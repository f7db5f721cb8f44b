"""Coalesced webhook commits (receiver.webhooks.store_together and the served app): one store's
concurrent whole-record events share one transaction, each answered only once it committed,
with the same outcome as one by one; a body the handler refuses costs no other event; both
backends."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import event, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import Headers

from handlers.dispatch import apply_events_together
from models import (
    Customer,
    CustomerAddress,
    Order,
    OrderLineItem,
    ProductVariant,
    WebhookEvent,
)
from receiver.samples import sample_payload, webhook_headers
from receiver.tenants import tenant_for_webhook
from receiver.webhooks import (
    BatchTransactions,
    Delivery,
    Verdict,
    parse_delivery,
    store_together,
)
from tests.conftest import Backend, ServedApp
from tests.factories import APP_SECRET, SHOP, create_tenant, delivery, order_version


def parsed(topic: str, payload: dict[str, Any], *, shop: str = SHOP, **headers: Any) -> Delivery:
    body, signed = delivery(topic, payload, shop=shop, **headers)
    return parse_delivery(Headers(signed), body)


def with_bad_money(order_id: int, version: int) -> dict[str, Any]:
    """A version of an order that passes every body check but that the order's normaliser
    refuses: a line item's price that is not a number."""
    payload = order_version(order_id, version)
    payload["line_items"] = copy.deepcopy(payload["line_items"])
    payload["line_items"][0]["price"] = "twelve"
    return payload


async def events(backend: Backend) -> list[WebhookEvent]:
    async with backend.sessions() as session:
        return list(await session.scalars(select(WebhookEvent).order_by(WebhookEvent.id)))


async def test_a_batch_stores_and_applies_every_event_in_one_commit(backend: Backend) -> None:
    await create_tenant(backend.sessions)
    # Three versions of one order out of order, another order, a customer, and a second copy
    # of the first event (Shopify's retry of it).
    first = parsed("orders/updated", order_version(1001, 2), event_id="event-1")
    batch = [
        first,
        parsed("orders/updated", order_version(1001, 3)),
        parsed("orders/updated", order_version(1001, 1)),
        parsed("orders/create", order_version(1002, 1)),
        parsed("customers/update", sample_payload("customers/update")),
        parsed("orders/updated", order_version(1001, 2), event_id="event-1"),
    ]
    outcomes = await store_together(BatchTransactions(backend.sessions), SHOP, batch)

    assert [outcome.verdict if outcome else None for outcome in outcomes] == [
        *[Verdict.PROCESSED] * 5,
        Verdict.DUPLICATE,
    ]
    stored = await events(backend)
    assert sorted(event.id for event in stored) == sorted(
        outcome.event_id for outcome in outcomes[:5] if outcome and outcome.event_id
    )
    # One transaction: one receipt time for all, and the retry counted on the first copy.
    assert len({event.received_at for event in stored}) == 1
    assert [event.duplicate_count for event in stored if event.event_id == "event-1"] == [1]
    async with backend.sessions() as session:
        orders = {order.shopify_id: order for order in await session.scalars(select(Order))}
        assert orders[1001].note == "version 3"  # the newest, whatever the arrival order
        assert orders[1001].total_price == Decimal("103.00")
        assert set(orders) == {1001, 1002}
        assert await session.scalar(select(func.count()).select_from(Customer)) == 1
        items = await session.scalar(
            select(func.count())
            .select_from(OrderLineItem)
            .where(OrderLineItem.order_shopify_id == 1002, OrderLineItem.deleted_at.is_(None))
        )
        assert items == len(order_version(1002, 1)["line_items"])


async def test_a_batchs_redeliveries_are_each_counted_on_their_stored_event(
    backend: Backend,
) -> None:
    await create_tenant(backend.sessions)
    originals = [
        parsed("orders/updated", order_version(1001, 1), event_id="event-1"),
        parsed("orders/create", order_version(1002, 1), event_id="event-2"),
        parsed("orders/create", order_version(1003, 1), event_id="event-3"),
    ]
    await store_together(BatchTransactions(backend.sessions), SHOP, originals)
    # Event 1 twice more and event 2 once, beside a new event: counted per redelivery.
    retries = [originals[0], originals[1], originals[0]]
    fresh = parsed("orders/create", order_version(1004, 1), event_id="event-4")
    outcomes = await store_together(BatchTransactions(backend.sessions), SHOP, [*retries, fresh])
    assert [outcome.verdict if outcome else None for outcome in outcomes] == [
        *[Verdict.DUPLICATE] * 3,
        Verdict.PROCESSED,
    ]
    counts = {event.event_id: event.duplicate_count for event in await events(backend)}
    assert counts == {"event-1": 2, "event-2": 1, "event-3": 0, "event-4": 0}


async def test_a_batchs_removals_land_together_as_one_by_one(backend: Backend) -> None:
    """Every child a newer body no longer lists is tombstoned by the batch, whatever other
    resource's children it holds (on PostgreSQL they go together at its end), and no line
    item names a removed variant any more: one removed by the same batch, or one the batch
    writes after the product."""
    await create_tenant(backend.sessions)
    order = order_version(5001, 1)
    kept_item, dropped_item = order["line_items"]
    product = sample_payload("products/update")
    kept_variant, dropped_variant = product["variants"]
    assert dropped_item["variant_id"] == dropped_variant["id"]
    customer = sample_payload("customers/update")
    kept_address = customer["addresses"][0]
    dropped_address = {**kept_address, "id": kept_address["id"] + 1, "default": False}
    customer["addresses"] = [kept_address, dropped_address]

    def newer(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
        stamp = datetime.fromisoformat(payload["updated_at"]) + timedelta(days=1)
        return {**copy.deepcopy(payload), "updated_at": stamp.astimezone(UTC).isoformat()} | fields

    first = [
        parsed("orders/updated", order),
        parsed("products/update", product),
        parsed("customers/update", customer),
    ]
    # An order first written in the same batch as the product update, its line item still
    # naming the variant that update drops.
    naming = {**dropped_item, "id": dropped_item["id"] + 1}
    second = [
        parsed("orders/updated", order_version(5001, 2, line_items=[kept_item])),
        parsed("orders/create", order_version(5002, 1, line_items=[naming])),
        parsed(
            "products/update",
            newer(
                product,
                variants=[kept_variant],
                variant_gids=[
                    gid for gid in product["variant_gids"] if str(kept_variant["id"]) in str(gid)
                ],
            ),
        ),
        parsed("customers/update", newer(customer, addresses=[kept_address])),
    ]
    for batch in (first, second):
        outcomes = await store_together(BatchTransactions(backend.sessions), SHOP, batch)
        assert [outcome.verdict if outcome else None for outcome in outcomes] == [
            Verdict.PROCESSED
        ] * len(batch)

    async with backend.sessions() as session:
        items = {row.shopify_id: row for row in await session.scalars(select(OrderLineItem))}
        variants = {row.shopify_id: row for row in await session.scalars(select(ProductVariant))}
        addresses = {row.shopify_id: row for row in await session.scalars(select(CustomerAddress))}
    assert {key: row.deleted_at is not None for key, row in items.items()} == {
        kept_item["id"]: False,
        dropped_item["id"]: True,
        naming["id"]: False,
    }
    assert {key: row.deleted_at is not None for key, row in variants.items()} == {
        kept_variant["id"]: False,
        dropped_variant["id"]: True,
    }
    assert {key: row.deleted_at is not None for key, row in addresses.items()} == {
        kept_address["id"]: False,
        dropped_address["id"]: True,
    }
    assert items[kept_item["id"]].variant_shopify_id == kept_variant["id"]
    assert items[dropped_item["id"]].variant_shopify_id is None
    # Whichever backend, and though the order came after the product in the batch: a name
    # of a variant the batch removed reads null, as Shopify's own answers do.
    assert items[naming["id"]].variant_shopify_id is None


async def test_a_batch_the_handler_refuses_keeps_nothing_and_sends_each_event_alone(
    backend: Backend,
) -> None:
    await create_tenant(backend.sessions)
    batch = [
        parsed("orders/updated", order_version(2001, 1)),
        parsed("orders/updated", with_bad_money(2002, 1)),
    ]
    assert await store_together(BatchTransactions(backend.sessions), SHOP, batch) == [None, None]
    assert await events(backend) == []


async def test_an_unknown_stores_events_go_one_by_one(backend: Backend) -> None:
    batch = [parsed("orders/updated", order_version(3001, 1))]
    assert await store_together(BatchTransactions(backend.sessions), SHOP, batch) == [None]
    assert await events(backend) == []


async def test_concurrent_deliveries_all_land_and_a_bad_one_costs_no_other(
    backend: Backend, served: ServedApp, http: httpx.AsyncClient
) -> None:
    await create_tenant(backend.sessions)
    bodies = [order_version(4000 + index % 10, index) for index in range(40)]
    bodies.insert(17, with_bad_money(4999, 1))

    async def post(payload: dict[str, Any]) -> tuple[int, str]:
        body, headers = delivery("orders/updated", payload)
        response = await http.post(served.webhook_url, content=body, headers=headers)
        return response.status_code, response.json()["status"]

    answers = await asyncio.gather(*(post(payload) for payload in bodies))

    assert answers[17] == (200, "failed")
    assert [answer for index, answer in enumerate(answers) if index != 17] == [
        (200, "processed")
    ] * 40
    stored = await events(backend)
    assert sorted(event.status for event in stored) == ["failed"] + ["processed"] * 40
    async with backend.sessions() as session:
        notes = dict((await session.execute(select(Order.shopify_id, Order.note))).all())
    # Each order at its newest version (versions 30-39 are the last of each id).
    assert notes == {4000 + index: f"version {30 + index}" for index in range(10)}


async def test_a_batch_stores_each_body_as_it_came(backend: Backend) -> None:
    """The inbox keeps what Shopify sent: a batch stores a body's own JSON text (an amount
    written 12.50 stays 12.50 in the payload, where parsing and writing it again gives
    12.5); a body with a character PostgreSQL cannot store is stored with it replaced; a
    number with a long exponent is stored as read (1e-16383 as 0.0, not as a number that
    prints as 16,000 digits)."""
    await create_tenant(backend.sessions)

    def raw_delivery(payload: dict[str, Any], number: str) -> Delivery:
        text = json.dumps(payload | {"x_number": "NUMBER"}).replace('"NUMBER"', number).encode()
        headers = Headers(webhook_headers("orders/create", SHOP, text, APP_SECRET))
        return parse_delivery(headers, text)

    unstorable = order_version(2002, 1)
    unstorable["note"] = "nul\x00here"
    batch = [
        raw_delivery(order_version(2001, 1), "12.50"),
        parsed("orders/create", unstorable),
        raw_delivery(order_version(2003, 1), "1e-16383"),
    ]
    outcomes = await store_together(BatchTransactions(backend.sessions), SHOP, batch)
    assert [outcome.verdict if outcome else None for outcome in outcomes] == [Verdict.PROCESSED] * 3
    stored = {event.payload["id"]: event for event in await events(backend)}
    assert stored[2002].payload["note"] == "nul\ufffdhere"
    if backend.name == "postgresql":
        async with backend.sessions() as session:
            numbers = dict(
                (
                    await session.execute(
                        select(WebhookEvent.id, WebhookEvent.payload["x_number"].as_string())
                    )
                ).all()
            )
        assert numbers[stored[2001].id] == "12.50"
        assert numbers[stored[2003].id] == "0.0"


OTHER = "other-store.myshopify.com"


def created_orders(*order_ids: int, shop: str = SHOP) -> list[Delivery]:
    """orders/create deliveries of these orders' first versions, signed for `shop`."""
    return [
        parsed("orders/create", order_version(order_id, 1), shop=shop) for order_id in order_ids
    ]


class Checkouts:
    """Connections the engine's pool hands out while counted (its "checkout" event)."""

    def __init__(self, backend: Backend) -> None:
        self.pool = backend.engine.sync_engine.pool
        self.count = 0
        event.listen(self.pool, "checkout", self._counted)

    def _counted(self, *_: Any) -> None:
        self.count += 1

    def stop(self) -> None:
        event.remove(self.pool, "checkout", self._counted)


async def test_a_busy_stores_next_batch_takes_the_transaction_opened_while_one_ran(
    backend: Backend,
) -> None:
    """A batch of several deliveries opens its store's next transaction (its store's row
    read, scoped to it) while it runs; the next batch of that store writes in it, with no
    connection of its own, and into that store only."""
    tenant = await create_tenant(backend.sessions)
    other = await create_tenant(backend.sessions, OTHER)
    pool = backend.engine.sync_engine.pool
    transactions = BatchTransactions(backend.sessions, ahead_from=pool, idle_seconds=60)
    busy = created_orders(5001, 5002)
    # Counted from before the first batch: the transaction it opens ahead may still be
    # connecting when it ends (a checkout counts once the connection is made).
    checkouts = Checkouts(backend)
    try:
        assert all(await store_together(transactions, SHOP, busy))
        # The batch's own connection went back to the pool; the one opened ahead is held.
        assert pool.checkedout() == 1
        alone = [parsed("orders/updated", order_version(5001, 2))]
        (outcome,) = await store_together(transactions, SHOP, alone)
    finally:
        checkouts.stop()
    assert outcome is not None
    assert outcome.verdict is Verdict.PROCESSED
    # The first batch's own and the one it opened ahead, which the second took.
    assert checkouts.count == 2
    assert pool.checkedout() == 0  # a batch of one opens none ahead
    stored = await events(backend)
    assert [event.tenant_id for event in stored] == [tenant] * 3
    async with backend.sessions() as session:
        orders = {row.shopify_id: row for row in await session.scalars(select(Order))}
    assert {shopify_id: row.tenant_id for shopify_id, row in orders.items()} == {
        5001: tenant,
        5002: tenant,
    }
    assert orders[5001].note == "version 2"  # the second batch wrote in it
    # Another store's batch never takes it: it opens its own.
    outcomes = await store_together(transactions, OTHER, created_orders(5003, 5004, shop=OTHER))
    assert [outcome.verdict if outcome else None for outcome in outcomes] == [Verdict.PROCESSED] * 2
    assert pool.checkedout() == 1
    await transactions.close()
    assert pool.checkedout() == 0
    assert {event.tenant_id for event in await events(backend)} == {tenant, other}
    # Closed (the app's shutdown), it opens none ahead for a batch still running.
    later = [parsed("orders/updated", order_version(5001 + n, 3)) for n in range(2)]
    assert all(await store_together(transactions, SHOP, later))
    assert pool.checkedout() == 0


async def test_a_transaction_opened_ahead_and_not_taken_in_time_is_closed(
    backend: Backend,
) -> None:
    await create_tenant(backend.sessions)
    pool = backend.engine.sync_engine.pool
    transactions = BatchTransactions(backend.sessions, ahead_from=pool, idle_seconds=0.05)
    # Two connections go back: the batch's own, and the one opened ahead once it is closed
    # (whether that happens before the batch ends or after).
    checkins: list[object] = []
    both_back = asyncio.Event()

    def checked_in(connection: object, *_: Any) -> None:
        checkins.append(connection)
        if len(checkins) == 2:
            both_back.set()

    event.listen(pool, "checkin", checked_in)
    try:
        assert all(await store_together(transactions, SHOP, created_orders(6001, 6002)))
        await asyncio.wait_for(both_back.wait(), timeout=10)
    finally:
        event.remove(pool, "checkin", checked_in)
    assert pool.checkedout() == 0
    # The next batch opens its own and lands.
    assert all(
        await store_together(transactions, SHOP, [parsed("orders/create", order_version(6003, 1))])
    )
    assert len(await events(backend)) == 3


async def test_no_transaction_is_opened_ahead_past_the_pools_size(backend: Backend) -> None:
    """Its overflow stays for requests: with the pool's size checked out, a busy batch opens
    nothing ahead."""
    await create_tenant(backend.sessions)
    pool = backend.engine.sync_engine.pool
    transactions = BatchTransactions(backend.sessions, ahead_from=pool, idle_seconds=60)
    held = [await backend.engine.connect() for _ in range(pool.size())]
    try:
        busy = created_orders(7001, 7002)
        assert all(await store_together(transactions, SHOP, busy))
        assert pool.checkedout() == pool.size()
    finally:
        for connection in held:
            await connection.close()
    await transactions.close()
    assert pool.checkedout() == 0


async def test_a_webhook_transaction_runs_its_statements_on_generic_plans_and_only_it(
    pg: Backend,
) -> None:
    """Scoped to its store, a webhook's transaction runs its prepared statements on their
    generic plans: planning a batch's child tombstones for each execution cost more than
    running them. The setting ends with the transaction: the connection's next user plans
    as PostgreSQL chooses."""
    tenant_id = await create_tenant(pg.sessions)
    async with pg.engine.connect() as connection, AsyncSession(bind=connection) as session:
        # Six batches: PostgreSQL itself plans a statement's first five executions anew.
        for version in range(1, 7):
            async with session.begin():
                tenant = await tenant_for_webhook(session, SHOP)
                assert tenant is not None
                assert tenant.id == tenant_id
                batch = [("orders/updated", order_version(7001 + n, version)) for n in range(3)]
                await apply_events_together(session, tenant_id, batch)
        async with session.begin():
            assert await session.scalar(text("SHOW plan_cache_mode")) == "auto"
            found = await session.execute(
                text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE :tombstone OR statement LIKE :upsert"
                ),
                {"tombstone": "WITH gone_0 AS%", "upsert": "INSERT INTO orders %"},
            )
            plans = [tuple(row) for row in found]
    # The orders' upsert and the line items' tombstone, each run six times, never planned anew.
    assert plans == [(6, 0), (6, 0)]
