"""A batch's child tombstones read the children of the parents it lists, not the store's
(`handlers.children.Tombstones`), whatever PostgreSQL's statistics say of the table: a store
whose backfill is filling a table its statistics predate is the case that matters, and the
cost of reading the whole store's children for each batch grew with the store.

Every child table that takes the combined statement is checked: compared with the store's
value, a store the statistics have not seen costs the same through every index that starts
with the store, and refunds' lookup took their (store, processed) index, reading the store's
every refund for each listed order (`models.tenancy.store_row`; bench/RESULTS.md, the note
on 2026-12-05 11:28 UTC)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.children import ChildList, ChildSet, Tombstones, deleted_among, tombstone_children
from handlers.resources import RESOURCES
from models import Base, Order
from models.tenancy import tenant_transaction
from tests.conftest import Backend
from tests.factories import OTHER_SHOP, SHOP, create_tenant, rows_read

# The child sets whose tombstones go in the combined statement (keyed by their own id).
BY_ID = [
    child
    for resource in RESOURCES.values()
    for child in resource.child_sets
    if child.child_key == "shopify_id"
]
ORDERS = 15_000
PER_ORDER = 4
LISTED = 700
FIRST_ORDER = 5_900_000_000_000
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)


async def _fill(
    sessions: async_sessionmaker[AsyncSession], child: ChildSet, tenant_id: int, count: int
) -> None:
    fill = text(
        f"INSERT INTO {child.table} (tenant_id, shopify_id, {child.parent_key}, source,"
        " synced_at) SELECT :tenant, CAST(:first_item AS bigint) + n,"
        " CAST(:first_order AS bigint) + n / :per_order, 'backfill', now()"
        " FROM generate_series(0, :count - 1) AS n"
    )
    async with tenant_transaction(sessions, tenant_id) as session:
        await session.execute(
            fill,
            {
                "tenant": tenant_id,
                "first_item": tenant_id * 10_000_000,
                "first_order": FIRST_ORDER,
                "per_order": PER_ORDER,
                "count": count,
            },
        )


def _items_of(tenant_id: int, order: int) -> list[int]:
    first = tenant_id * 10_000_000 + (order - FIRST_ORDER) * PER_ORDER
    return list(range(first, first + PER_ORDER))


@pytest.mark.parametrize("child", BY_ID, ids=lambda child: child.table)
async def test_a_batch_tombstone_reads_its_parents_children_not_the_stores(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
    child: ChildSet,
) -> None:
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    # The statistics know another store only, as in a shared database where a new store's
    # backfill fills the table after its last ANALYZE; then that store's children arrive.
    await _fill(app_sessions, child, other, 200)
    await held_statistics(child.table)
    await _fill(app_sessions, child, tenant_id, ORDERS * PER_ORDER)

    # A batch of listed parents, from the middle of the store; the first one's list no longer
    # names its last child.
    listed = [FIRST_ORDER + ORDERS // 2 + n for n in range(LISTED)]
    named = {order: _items_of(tenant_id, order) for order in listed}
    dropped = named[listed[0]].pop()
    lists = {
        order: ChildList([{"shopify_id": item} for item in items], True, None, AS_OF)
        for order, items in named.items()
    }
    async with tenant_transaction(app_sessions, tenant_id) as session:
        tombstones = Tombstones()
        tombstones.add(child, tenant_id, lists, source="backfill")
        await tombstones.write(session)
        read = (await rows_read(session, child.table))[child.table]

    # The listed parents' children and the one row tombstoned, with room to spare; the store's
    # 60,000 children are not read.
    assert read <= 2 * LISTED * PER_ORDER
    model = child.model
    async with tenant_transaction(app_sessions, tenant_id) as session:
        gone = (
            await session.scalars(select(model.shopify_id).where(model.deleted_at.is_not(None)))
        ).all()
        live = await session.scalar(select(func.count()).where(model.deleted_at.is_(None)))
    assert gone == [dropped]
    assert live == ORDERS * PER_ORDER - 1


_ORDERS_FILL = text(
    "INSERT INTO orders (tenant_id, shopify_id, source, synced_at, deleted_at)"
    " SELECT :tenant, CAST(:first AS bigint) + n, 'backfill', now(),"
    " CASE WHEN n % 10 = 0 THEN now() END FROM generate_series(0, :count - 1) AS n"
)


async def test_which_orders_are_deleted_is_read_by_their_ids_not_from_the_store(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
) -> None:
    """`deleted_among` (run for a batch's refused orders) on a table whose statistics predate
    the store: before, each call read the store's every order through its (store, updated)
    index, for as long as PostgreSQL planned the statement afresh."""
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    async with tenant_transaction(app_sessions, other) as session:
        await session.execute(_ORDERS_FILL, {"tenant": other, "first": 1, "count": 200})
    await held_statistics("orders")
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await session.execute(
            _ORDERS_FILL, {"tenant": tenant_id, "first": FIRST_ORDER, "count": ORDERS}
        )

    calls = 12
    async with tenant_transaction(app_sessions, tenant_id) as session:
        found = []
        for call in range(calls):
            # One to three ids, one deleted (every tenth order is) and the rest live.
            ids = [FIRST_ORDER + 1000 + 10 * call + offset for offset in range(1 + call % 3)]
            found.append(await deleted_among(session, Order, tenant_id, ids))
        read = (await rows_read(session, "orders"))["orders"]
    assert found == [{FIRST_ORDER + 1000 + 10 * call} for call in range(calls)]
    # A row or so per id looked up; the store's 15,000 orders are not read.
    assert read <= 2 * 3 * calls


# Every resource with children, and the tables a deletion of one of its records reads: its
# children's, and the line items naming a deleted variant.
DELETED = {
    resource.name: sorted(
        {child.table for child in resource.child_sets}
        | {table for child in resource.child_sets for table, _ in child.referenced_as}
    )
    for resource in RESOURCES.values()
    if resource.child_sets
}
OWNERS = 5_000


def _children_fill(table: str) -> str:
    """Four rows of `table` per owner, for `OWNERS` owners from :first, each with every column
    any child set of it is found by (a variant's line items name it and its product)."""
    columns = {
        "customer_addresses": {"customer_shopify_id": "owner"},
        "product_variants": {"product_shopify_id": "owner"},
        "order_line_items": {
            "order_shopify_id": "owner",
            "variant_shopify_id": "child",
            "product_shopify_id": "owner",
        },
        "order_refunds": {"order_shopify_id": "owner"},
        "order_transactions": {"order_shopify_id": "owner"},
        "fulfillments": {"order_shopify_id": "owner"},
        "order_refund_line_items": {"refund_shopify_id": "owner", "order_shopify_id": "owner"},
        "inventory_levels": {"inventory_item_shopify_id": "owner", "location_shopify_id": "n % 4"},
    }[table]
    values = {
        "owner": "CAST(:first AS bigint) + n / 4",
        # A product's variants' ids, which its line items name.
        "child": "CAST(:first AS bigint) * 10 + n",
        "n % 4": "n % 4",
    }
    names = list(columns)
    given = [values[kind] for kind in columns.values()]
    if table != "inventory_levels":
        names.append("shopify_id")
        given.append("CAST(:first AS bigint) * 10 + n")
    return (
        f"INSERT INTO {table} (tenant_id, {', '.join(names)}, source, synced_at)"
        f" SELECT :tenant, {', '.join(given)}, 'backfill', now()"
        f" FROM generate_series(0, CAST(:count AS integer) * 4 - 1) AS n"
    )


def _children_ids(tenant_id: int, owner: int) -> list[int]:
    """The ids `_children_fill` gives the four children of `owner`."""
    first = FIRST_ORDER + tenant_id * 100_000
    return [first * 10 + (owner - first) * 4 + n for n in range(4)]


async def _fill_children(
    sessions: async_sessionmaker[AsyncSession], tables: list[str], tenant_id: int, owners: int
) -> None:
    async with tenant_transaction(sessions, tenant_id) as session:
        for table in tables:
            first = FIRST_ORDER + tenant_id * 100_000
            parameters = {"tenant": tenant_id, "first": first, "count": owners}
            await session.execute(text(_children_fill(table)), parameters)


@pytest.mark.parametrize("resource_name", sorted(DELETED))
async def test_a_deleted_records_children_are_read_by_it_not_from_the_store(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
    resource_name: str,
) -> None:
    """A deletion notice tombstones the record's children (`tombstone_children`) and nulls
    the line items naming a deleted variant, on statistics that predate the store."""
    tables = DELETED[resource_name]
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    await _fill_children(app_sessions, tables, other, 50)
    await held_statistics(*tables)
    await _fill_children(app_sessions, tables, tenant_id, OWNERS)

    owner = FIRST_ORDER + tenant_id * 100_000 + OWNERS // 2
    resource = RESOURCES[resource_name]
    async with tenant_transaction(app_sessions, tenant_id) as session:
        await tombstone_children(
            session, resource.child_sets, tenant_id, owner, deleted_at=AS_OF, source="webhook"
        )
        read = await rows_read(session, *tables)
    # The owner's four children of each set (and the line items naming them), with room to
    # spare; none of the store's 20,000 rows of each table.
    assert {table: rows for table, rows in read.items() if rows > 40} == {}
    async with tenant_transaction(app_sessions, tenant_id) as session:
        for child in resource.child_sets:
            owned = child.model.__table__.c[child.owner_key or child.parent_key]
            gone = await session.scalar(
                select(func.count()).where(owned == owner, child.model.deleted_at.is_not(None))
            )
            assert gone == 4, child.table
            for table_name, column_name in child.referenced_as:
                # The rows that named the children deleted (a line item its variant, filled
                # with the variant's id) name nothing now; the store's others are untouched.
                naming = Base.metadata.tables[table_name].c[column_name]
                named = await session.scalar(
                    select(func.count()).where(naming.in_(_children_ids(tenant_id, owner)))
                )
                nulled = await session.scalar(select(func.count()).where(naming.is_(None)))
                assert (named, nulled) == (0, 4), table_name
