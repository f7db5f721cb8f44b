"""A batch's child tombstones read the children of the parents it lists, not the store's
(`handlers.children.Tombstones`), whatever PostgreSQL's statistics say of the table: a store
whose backfill is filling a table its statistics predate is the case that matters, and the
cost of reading the whole store's children for each batch grew with the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.children import ChildList, Tombstones
from handlers.resources import ORDER_CHILDREN
from models import OrderLineItem
from models.tenancy import tenant_transaction
from tests.conftest import Backend
from tests.factories import OTHER_SHOP, SHOP, create_tenant

LINE_ITEMS = next(child for child in ORDER_CHILDREN if child.model is OrderLineItem)
ORDERS = 15_000
PER_ORDER = 4
LISTED = 700
FIRST_ORDER = 5_900_000_000_000
AS_OF = datetime(2025, 6, 1, tzinfo=UTC)

_FILL = text(
    "INSERT INTO order_line_items (tenant_id, shopify_id, order_shopify_id, source, synced_at)"
    " SELECT :tenant, CAST(:first_item AS bigint) + n,"
    " CAST(:first_order AS bigint) + n / :per_order, 'backfill', now()"
    " FROM generate_series(0, :count - 1) AS n"
)


async def _fill(sessions: async_sessionmaker[AsyncSession], tenant_id: int, count: int) -> None:
    async with tenant_transaction(sessions, tenant_id) as session:
        await session.execute(
            _FILL,
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


async def test_a_batch_tombstone_reads_its_parents_children_not_the_stores(
    pg: Backend, app_sessions: async_sessionmaker[AsyncSession]
) -> None:
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    # The statistics know another store only, as in a shared database where a new store's
    # backfill fills the table after its last ANALYZE; then that store's children arrive.
    await _fill(app_sessions, other, 200)
    async with pg.engine.begin() as connection:
        await connection.execute(text("ANALYZE order_line_items"))
    await _fill(app_sessions, tenant_id, ORDERS * PER_ORDER)

    # A batch of listed orders, from the middle of the store; the first one's list no longer
    # names its last line item.
    listed = [FIRST_ORDER + ORDERS // 2 + n for n in range(LISTED)]
    named = {order: _items_of(tenant_id, order) for order in listed}
    dropped = named[listed[0]].pop()
    lists = {
        order: ChildList([{"shopify_id": item} for item in items], True, None, AS_OF)
        for order, items in named.items()
    }
    async with tenant_transaction(app_sessions, tenant_id) as session:
        tombstones = Tombstones()
        tombstones.add(LINE_ITEMS, tenant_id, lists, source="backfill")
        await tombstones.write(session)
        # This transaction's own reads of the table, not yet reported to the statistics.
        read = (
            await session.execute(
                text(
                    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0)"
                    " FROM pg_stat_xact_user_tables WHERE relname = 'order_line_items'"
                )
            )
        ).scalar_one()

    # The listed orders' children and the one row tombstoned, with room to spare; the store's
    # 60,000 children are not read.
    assert read <= 2 * LISTED * PER_ORDER
    async with tenant_transaction(app_sessions, tenant_id) as session:
        gone = (
            await session.scalars(
                select(OrderLineItem.shopify_id).where(OrderLineItem.deleted_at.is_not(None))
            )
        ).all()
        live = await session.scalar(select(func.count()).where(OrderLineItem.deleted_at.is_(None)))
    assert gone == [dropped]
    assert live == ORDERS * PER_ORDER - 1
