"""The store page's figures read the store's rows about once, whatever the statistics say.

A store's page (`receiver.stats.store_stats`, polled by every viewer of its dashboard) sums
its orders, line items, refunds and stock. Right after a backfill, or in a shared database
analysed before the store's first rows, PostgreSQL's statistics may predate the store: given
the store's value they count it as holding no rows. The top items' join then ran as a nested
loop that read the store's orders once for each line item (57 million order rows read in 15 s
for a store of 20,000 orders, until a statement timeout ended it), and the low stock's join
could do the same with its variants' levels. Compared with the store as a scalar subquery's
value (`models.tenancy.of_store`), the planner costs the store as one of average size."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import Tenant
from models.tenancy import tenant_transaction
from receiver.stats import store_stats
from tests.conftest import Backend
from tests.factories import OTHER_SHOP, SHOP, create_tenant, rows_read

ORDERS = 20_000
# Table, and what it holds for a store of ORDERS orders (as _FILLS writes them).
SIZES = {
    "orders": ORDERS,
    "order_line_items": 4 * ORDERS,
    "order_refunds": ORDERS // 10,
    "products": ORDERS // 4 + 1,
    "product_variants": ORDERS,
    "inventory_levels": 2 * ORDERS,
    "customers": ORDERS,
}

# Orders over the last two weeks with four line items each, a refund for every tenth order,
# products of four variants each stocked at two locations, and customers.
_FILLS = (
    "INSERT INTO orders (tenant_id, shopify_id, currency, total_price, processed_at,"
    " shopify_created_at, shopify_updated_at, source, synced_at)"
    " SELECT :tenant, n, 'EUR', 10, now() - make_interval(mins => n),"
    " now() - make_interval(mins => n), now(), 'backfill', now()"
    " FROM generate_series(1, :orders) AS n",
    "INSERT INTO order_line_items (tenant_id, shopify_id, order_shopify_id, product_shopify_id,"
    " variant_shopify_id, price, quantity, title, source, synced_at)"
    " SELECT :tenant, n, (n - 1) / 4 + 1, n % 500, n % 2000, 5, 1, 'Item', 'backfill', now()"
    " FROM generate_series(1, 4 * :orders) AS n",
    "INSERT INTO order_refunds (tenant_id, shopify_id, order_shopify_id, currency,"
    " total_refunded, processed_at, source, synced_at)"
    " SELECT :tenant, n, 10 * n, 'EUR', 1, now() - make_interval(mins => 10 * n),"
    " 'backfill', now() FROM generate_series(1, :orders / 10) AS n",
    "INSERT INTO products (tenant_id, shopify_id, title, source, synced_at)"
    " SELECT :tenant, n, 'Product', 'backfill', now() FROM generate_series(0, :orders / 4) AS n",
    "INSERT INTO product_variants (tenant_id, shopify_id, product_shopify_id,"
    " inventory_item_shopify_id, source, synced_at)"
    " SELECT :tenant, n, n / 4, n, 'backfill', now() FROM generate_series(1, :orders) AS n",
    "INSERT INTO inventory_levels (tenant_id, inventory_item_shopify_id, location_shopify_id,"
    " available, source, synced_at)"
    " SELECT :tenant, n / 2 + 1, n % 2, 3, 'backfill', now()"
    " FROM generate_series(0, 2 * :orders - 1) AS n",
    "INSERT INTO customers (tenant_id, shopify_id, source, synced_at)"
    " SELECT :tenant, n, 'backfill', now() FROM generate_series(1, :orders) AS n",
)


async def _fill(sessions: async_sessionmaker[AsyncSession], tenant_id: int, orders: int) -> None:
    async with tenant_transaction(sessions, tenant_id) as session:
        for fill in _FILLS:
            await session.execute(text(fill), {"tenant": tenant_id, "orders": orders})


@pytest.mark.parametrize("range_name", ["7d", "all"])
async def test_the_store_page_reads_each_table_about_once_on_statistics_that_predate_it(
    pg: Backend,
    app_sessions: async_sessionmaker[AsyncSession],
    held_statistics: Callable[..., Awaitable[None]],
    range_name: str,
) -> None:
    other = await create_tenant(pg.sessions, OTHER_SHOP)
    tenant_id = await create_tenant(pg.sessions, SHOP)
    await _fill(app_sessions, other, 200)
    # The statistics know another store only; then this store's rows arrive.
    await held_statistics(*SIZES)
    await _fill(app_sessions, tenant_id, ORDERS)

    async with app_sessions() as session, session.begin():
        # Ends the code before this change's first join (it ran for minutes) as a failure.
        await session.execute(text("SET LOCAL statement_timeout = '20s'"))
        tenant = await session.get_one(Tenant, tenant_id)
        stats = await store_stats(session, tenant, datetime.now(UTC), range_name)
        read = await rows_read(session, *SIZES)

    # Linear in the store: a join may probe a table by index once per row of another (the
    # top items read an order for each line item, 80,000), but never scan it once per row.
    # So no table is read more than twice the largest table's rows (160,000).
    bound = 2 * max(SIZES.values())
    assert {table: rows for table, rows in read.items() if rows > bound} == {}
    # The figures are the store's: its orders span two weeks, each line item sold one unit of
    # one of 2,000 variants.
    assert stats["counts"]["orders"] == ORDERS
    if range_name == "all":
        assert stats["sales"]["orders"] == ORDERS
        assert stats["top_variants"][0]["units"] == 4 * ORDERS // 2000
    else:
        # An order a minute, and the range runs from midnight (UTC) six days ago: six whole
        # days and today's part of one.
        assert 6 * 1440 <= stats["sales"]["orders"] <= 7 * 1440
        assert stats["top_variants"]
