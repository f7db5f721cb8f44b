"""Inventory items with their levels as the backfill will read them (GraphQL nodes with an
`inventoryLevels` connection): the declared selection is valid against Shopify's real schema,
and such nodes write the same rows the level webhooks do, as the app's role, on both
backends, a level gone from a complete connection tombstoned by its location."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from handlers.children import write_with_children
from handlers.normalize_children import normalize_inventory_item
from handlers.resources import INVENTORY_ITEMS, INVENTORY_LEVELS
from models import InventoryItem, InventoryLevel, create_engine, create_session_factory
from models.tenancy import use_tenant
from tests.conftest import Backend, as_app_role
from tests.factories import create_tenant
from tests.fakeshop.schema import check_document

ITEM = 44120958369853
OTHER_ITEM = 44120958402621
NEAR, FAR = 98765432101, 98765432102


def test_the_declared_item_and_level_selection_is_valid_in_the_real_schema() -> None:
    query = (
        "query Items($first: Int!) { inventoryItems(first: $first) { nodes {"
        f"{INVENTORY_ITEMS.fields}"
        f"  {INVENTORY_LEVELS.node_key}(first: {INVENTORY_LEVELS.first}) {{"
        f"    nodes {{{INVENTORY_LEVELS.node_fields} }}"
        "    pageInfo { hasNextPage endCursor }"
        "  }"
        "} } }"
    )
    checked = check_document(query)
    assert (checked.errors, checked.deprecated) == ((), ())


def level_node(location: int, available: int, updated: str, item: int = ITEM) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/InventoryLevel/{location}?inventory_item_id={item}",
        "isActive": True,
        "createdAt": "2026-11-18T19:02:31Z",
        "updatedAt": updated,
        "location": {"id": f"gid://shopify/Location/{location}"},
        "quantities": [
            {"name": "available", "quantity": available},
            {"name": "on_hand", "quantity": available + 2},
            {"name": "committed", "quantity": 2},
            {"name": "incoming", "quantity": 5},
        ],
    }


def item_node(updated: str, *levels: dict[str, Any], item: int = ITEM) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/InventoryItem/{item}",
        "sku": "CCT-WHT-S",
        "tracked": True,
        "requiresShipping": True,
        "unitCost": {"amount": "8.40", "currencyCode": "USD"},
        "countryCodeOfOrigin": "PT",
        "provinceCodeOfOrigin": None,
        "harmonizedSystemCode": "610910",
        "createdAt": "2026-11-18T19:02:31Z",
        "updatedAt": updated,
        "inventoryLevels": {
            "nodes": list(levels),
            "pageInfo": {"hasNextPage": False, "endCursor": None},
        },
    }


async def write(backend: Backend, tenant_id: int, *nodes: dict[str, Any]) -> None:
    engine = create_engine(as_app_role(backend.url))
    try:
        async with create_session_factory(engine)() as session, session.begin():
            await use_tenant(session, tenant_id)
            await write_with_children(
                session,
                InventoryItem,
                INVENTORY_ITEMS.children,
                normalize_inventory_item,
                tenant_id,
                list(nodes),
                graphql=True,
                source="backfill",
            )
    finally:
        await engine.dispose()


async def test_item_nodes_write_their_levels_and_a_vanished_level_is_tombstoned(
    backend: Backend,
) -> None:
    tenant_id = await create_tenant(backend.sessions)
    await write(
        backend,
        tenant_id,
        item_node(
            "2026-11-24T10:00:00Z",
            level_node(NEAR, 42, "2026-11-24T10:00:00Z"),
            level_node(FAR, 7, "2026-11-24T09:00:00Z"),
        ),
    )
    async with backend.sessions() as session:
        [item] = await session.scalars(select(InventoryItem))
        levels = list(
            await session.scalars(
                select(InventoryLevel).order_by(InventoryLevel.location_shopify_id)
            )
        )
    assert (item.shopify_id, item.cost, item.currency) == (ITEM, Decimal("8.40"), "USD")
    assert [
        (
            level.inventory_item_shopify_id, level.location_shopify_id, level.available,
            level.on_hand, level.committed, level.incoming, level.deleted_at,
        )
        for level in levels
    ] == [
        (ITEM, NEAR, 42, 44, 2, 5, None),
        (ITEM, FAR, 7, 9, 2, 5, None),
    ]  # fmt: skip

    # Later the item is no longer stocked far away: its complete connection lacks that level,
    # while another item on the same page is stocked there (the location alone names no level).
    await write(
        backend,
        tenant_id,
        item_node("2026-11-25T10:00:00Z", level_node(NEAR, 40, "2026-11-25T10:00:00Z")),
        item_node(
            "2026-11-25T10:00:00Z",
            level_node(FAR, 3, "2026-11-25T10:00:00Z", item=OTHER_ITEM),
            item=OTHER_ITEM,
        ),
    )
    async with backend.sessions() as session:
        found = {
            level.location_shopify_id: level
            for level in await session.scalars(
                select(InventoryLevel).where(InventoryLevel.inventory_item_shopify_id == ITEM)
            )
        }
    assert (found[NEAR].available, found[NEAR].deleted_at) == (40, None)
    assert found[FAR].deleted_at is not None
    assert found[FAR].available == 7
    async with backend.sessions() as session:
        [other] = await session.scalars(
            select(InventoryLevel).where(InventoryLevel.inventory_item_shopify_id == OTHER_ITEM)
        )
    assert (other.location_shopify_id, other.available, other.deleted_at) == (FAR, 3, None)
