"""An inventory level's webhook reads the rows of its item, not the store's.

`inventory_levels/update`, `/connect` and `/disconnect` are a store's most frequent topics
(every sale moves stock), and each recounts the stock of the variants stocked from the item
(`handlers.topics.recount_variant_stock`). Before, nothing indexed variants by their item:
every level webhook read the store's every variant, a cost that grew with the catalogue. And
the three lookups compared `tenant_id` with the store's value, so on statistics that predate
the store (a shared database analysed before its backfill) the planner could take any index
that starts with the store (`models.tenancy.of_store`, `store_row`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.children import ChildList, write_children
from handlers.context import EventContext
from handlers.resources import RESOURCES
from handlers.topic_table import HANDLERS
from models import InventoryLevel, ProductVariant
from models.tenancy import tenant_transaction
from tests.conftest import Backend
from tests.factories import OTHER_SHOP, SHOP, create_tenant, rows_read

ITEMS = 20_000
LOCATIONS = 2
FIRST_ITEM = 7_100_000_000_000
FIRST_LOCATION = 8_100_000_000
TABLES = ("product_variants", "inventory_levels", "inventory_items")

# A variant per item, products of four variants; a level per item and location; the items.
_FILLS = (
    "INSERT INTO product_variants (tenant_id, shopify_id, product_shopify_id,"
    " inventory_item_shopify_id, inventory_quantity, source, synced_at)"
    " SELECT :tenant, CAST(:first_item AS bigint) + n, CAST(:first_item AS bigint) + n / 4,"
    " CAST(:first_item AS bigint) + n, 0, 'backfill',"
    " now() FROM generate_series(0, :count - 1) AS n",
    "INSERT INTO inventory_levels (tenant_id, inventory_item_shopify_id, location_shopify_id,"
    " available, shopify_updated_at, source, synced_at)"
    " SELECT :tenant, CAST(:first_item AS bigint) + n / :locations,"
    " CAST(:first_location AS bigint) + n % :locations, 5,"
    " now() - interval '1 day', 'backfill', now()"
    " FROM generate_series(0, CAST(:count AS integer) * :locations - 1) AS n",
    "INSERT INTO inventory_items (tenant_id, shopify_id, source, synced_at)"
    " SELECT :tenant, CAST(:first_item AS bigint) + n, 'backfill', now()"
    " FROM generate_series(0, :count - 1) AS n",
)


async def _fill(sessions: async_sessionmaker[AsyncSession], tenant_id: int, count: int) -> None:
    parameters = {
        "tenant": tenant_id,
        "first_item": FIRST_ITEM + tenant_id * 1_000_000,
        "first_location": FIRST_LOCATION,
        "locations": LOCATIONS,
        "count": count,
    }
    async with tenant_transaction(sessions, tenant_id) as session:
        for fill in _FILLS:
            await session.execute(text(fill), parameters)


def _level_body(item: int, topic: str) -> dict[str, Any]:
    body: dict[str, Any] = {"inventory_item_id": item, "location_id": FIRST_LOCATION}
    if topic != "inventory_levels/disconnect":
        body |= {"available": 11, "updated_at": "2026-12-05T12:00:00Z"}
    return body


@pytest.mark.parametrize("stale_statistics", [True, False], ids=["stale", "fresh"])
@pytest.mark.parametrize(
    "topic",
    ["inventory_levels/update", "inventory_levels/connect", "inventory_levels/disconnect"],
)
async def test_a_level_webhook_reads_its_items_rows_not_the_stores(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
    topic: str,
    stale_statistics: bool,
) -> None:
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    await _fill(app_sessions, other, 200)
    if stale_statistics:
        # The statistics know another store only; then this store's catalogue arrives.
        await held_statistics(*TABLES)
        await _fill(app_sessions, tenant_id, ITEMS)
    else:
        await _fill(app_sessions, tenant_id, ITEMS)
        await held_statistics(*TABLES)

    item = FIRST_ITEM + tenant_id * 1_000_000 + ITEMS // 2
    context = EventContext(
        tenant_id=tenant_id,
        topic=topic,
        webhook_event_id=None,
        triggered_at=None,
        received_at=datetime.now(UTC),
    )
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await HANDLERS[topic](session, context, _level_body(item, topic))
        read = await rows_read(session, *TABLES)

    # The item's own rows (a variant, a level per location, the item), with room to spare;
    # none of the store's 20,000 items' rows.
    assert {table: rows for table, rows in read.items() if rows > 4 * LOCATIONS} == {}
    # The variant's stock is the item's, recounted: the other location's 5, with this one's 11
    # after an update or a connect, without it after a disconnect.
    expected = 5 if topic == "inventory_levels/disconnect" else 5 + 11
    async with tenant_transaction(app_sessions, tenant_id) as session:
        stock = await session.scalar(
            select(ProductVariant.inventory_quantity).where(
                ProductVariant.inventory_item_shopify_id == item
            )
        )
    assert stock == expected


async def test_an_items_level_list_tombstones_by_item_not_from_the_store(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
) -> None:
    """A page of items listing their levels (the backfill's, a reconcile's) tombstones each
    item's levels it no longer lists, item by item (a level is keyed by its location, which
    other items share), on statistics that predate the store."""
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    await _fill(app_sessions, other, 200)
    await held_statistics(*TABLES)
    await _fill(app_sessions, tenant_id, ITEMS)

    first = FIRST_ITEM + tenant_id * 1_000_000 + ITEMS // 2
    listed_at = datetime(2026, 12, 5, 12, tzinfo=UTC)
    # Fifty items, each listing its first location only: the second is tombstoned.
    lists = {
        item: ChildList(
            [
                {
                    "inventory_item_shopify_id": item,
                    "location_shopify_id": FIRST_LOCATION,
                    "available": 1,
                    "shopify_updated_at": listed_at,
                    "raw": {},
                }
            ],
            complete=True,
            as_of=listed_at,
        )
        for item in range(first, first + 50)
    }
    levels = RESOURCES["inventory_items"].children[0]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await write_children(session, levels, tenant_id, lists, source="backfill")
        read = (await rows_read(session, "inventory_levels"))["inventory_levels"]
        gone = await session.scalars(
            select(InventoryLevel.inventory_item_shopify_id).where(
                InventoryLevel.deleted_at.is_not(None)
            )
        )
        tombstoned = sorted(gone)

    assert tombstoned == sorted(lists)
    # Each item's two levels, a few times over; not the store's 40,000 for each item.
    assert read <= 50 * LOCATIONS * 4
