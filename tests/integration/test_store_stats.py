"""The store page's range-driven figures read from a real database, on both backends: sales,
refunds and net per currency, the chart's buckets, top products and variants, low stock; and
`/api/stats?range=` over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from models import (
    InventoryLevel,
    Order,
    OrderLineItem,
    OrderRefund,
    Product,
    ProductVariant,
    Tenant,
    utcnow,
)
from models.tenancy import use_tenant
from receiver.auth import create_api_token
from receiver.stats import StoreStats, TopItemsCache, store_stats
from tests.factories import OTHER_SHOP, SHOP, create_tenant


async def add_order(
    session,
    tenant_id: int,
    shopify_id: int,
    when: datetime,
    total: str,
    currency: str = "USD",
    *,
    cancelled: bool = False,
    lines: tuple[tuple[int, int, int, str], ...] = (),
) -> None:
    """An order and its lines: (product, variant, quantity, price)."""
    session.add(
        Order(
            tenant_id=tenant_id,
            shopify_id=shopify_id,
            currency=currency,
            total_price=Decimal(total),
            processed_at=when,
            shopify_created_at=when,
            cancelled_at=when if cancelled else None,
        )
    )
    for index, (product, variant, quantity, price) in enumerate(lines):
        session.add(
            OrderLineItem(
                tenant_id=tenant_id,
                shopify_id=shopify_id * 100 + index,
                order_shopify_id=shopify_id,
                product_shopify_id=product,
                variant_shopify_id=variant,
                title=f"Product {product}",
                variant_title=f"V{variant}",
                quantity=quantity,
                price=Decimal(price),
                currency=currency,
            )
        )


async def seed(backend, now: datetime) -> int:
    ours = await create_tenant(backend.sessions)
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    async with backend.sessions() as session, session.begin():
        await use_tenant(session, ours)
        await add_order(
            session, ours, 1, now - timedelta(days=1), "100.00", lines=((1, 11, 2, "50.00"),)
        )
        await add_order(
            session, ours, 2, now - timedelta(days=20), "30.00", lines=((2, 21, 3, "10.00"),)
        )
        await add_order(
            session, ours, 3, now - timedelta(days=200), "1000.00", lines=((2, 22, 1, "1000.00"),)
        )
        await add_order(
            session, ours, 4, now - timedelta(days=2), "7.50", "EUR", lines=((1, 12, 1, "7.50"),)
        )
        await add_order(
            session,
            ours,
            5,
            now - timedelta(days=3),
            "999.00",
            cancelled=True,
            lines=((3, 31, 9, "111.00"),),
        )
        session.add(
            OrderRefund(
                tenant_id=ours,
                shopify_id=1,
                order_shopify_id=1,
                processed_at=now - timedelta(hours=5),
                total_refunded=Decimal("25.00"),
                currency="USD",
            )
        )
        session.add_all(
            [
                Product(tenant_id=ours, shopify_id=1, title="Product 1"),
                ProductVariant(
                    tenant_id=ours,
                    shopify_id=11,
                    product_shopify_id=1,
                    title="Red",
                    inventory_item_shopify_id=111,
                ),
                ProductVariant(
                    tenant_id=ours,
                    shopify_id=12,
                    product_shopify_id=1,
                    title="Blue",
                    inventory_item_shopify_id=112,
                ),
                InventoryLevel(
                    tenant_id=ours,
                    inventory_item_shopify_id=111,
                    location_shopify_id=1,
                    available=2,
                ),
                InventoryLevel(
                    tenant_id=ours,
                    inventory_item_shopify_id=111,
                    location_shopify_id=2,
                    available=1,
                ),
                InventoryLevel(
                    tenant_id=ours,
                    inventory_item_shopify_id=112,
                    location_shopify_id=1,
                    available=40,
                ),
            ]
        )
    async with backend.sessions() as session, session.begin():
        await use_tenant(session, theirs)
        await add_order(
            session, theirs, 1, now - timedelta(days=1), "777.77", lines=((9, 91, 5, "1.00"),)
        )
    return ours


async def stats_for(
    backend, tenant_id: int, now: datetime, range_name: str, cache: TopItemsCache | None = None
) -> StoreStats:
    async with backend.sessions() as session, session.begin():
        tenant = await session.get(Tenant, tenant_id)
        assert tenant is not None
        return await store_stats(session, tenant, now, range_name, cache)


async def test_the_range_drives_sales_refunds_and_top_items(backend):
    now = utcnow()
    ours = await seed(backend, now)

    month = await stats_for(backend, ours, now, "30d")
    assert month["range"]["key"] == "30d"
    assert month["sales"]["orders"] == 4  # cancelled ones were placed too
    assert month["sales"]["by_currency"] == [
        {"currency": "EUR", "orders": 1, "gross": "7.50", "refunds": "0.00", "net": "7.50"},
        {"currency": "USD", "orders": 3, "gross": "130.00", "refunds": "25.00", "net": "105.00"},
    ]
    assert len(month["sales"]["buckets"]) == 30
    usd = next(series for series in month["sales"]["series"] if series["currency"] == "USD")
    yesterday = month["sales"]["buckets"].index((now - timedelta(days=1)).date().isoformat())
    assert usd["orders"][yesterday] == 1
    assert Decimal(usd["revenue"][yesterday]) == Decimal("100")
    assert sum(usd["orders"]) == 3
    # Products by revenue, variants by units; the cancelled order's nine units are not sold.
    assert [
        (row["title"], row["currency"], row["revenue"], row["units"])
        for row in month["top_products"]
    ] == [
        ("Product 1", "USD", "100.00", 2),
        ("Product 2", "USD", "30.00", 3),
        ("Product 1", "EUR", "7.50", 1),
    ]
    assert [row["variant_shopify_id"] for row in month["top_variants"]] == [21, 11, 12]
    # Variant 11 has 2 + 1 available; variant 12's 40 is not low.
    assert [
        (row["variant_shopify_id"], row["available"], row["locations"])
        for row in month["low_stock"]
    ] == [(11, 3, 2)]

    every = await stats_for(backend, ours, now, "all")
    usd_all = next(row for row in every["sales"]["by_currency"] if row["currency"] == "USD")
    assert usd_all["gross"] == "1130.00"
    assert every["range"]["bucket"] == "month"
    assert (
        every["sales"]["buckets"][0]
        == (now - timedelta(days=200)).date().replace(day=1).isoformat()
    )
    assert every["top_products"][0]["revenue"] == "1030.00"  # Product 2: 30 + 1000

    week = await stats_for(backend, ours, now, "7d")
    assert week["sales"]["orders"] == 3
    assert week["sales"]["newest_order_at"] is not None


async def test_orders_older_than_the_range_leave_the_newest_for_the_empty_state(backend):
    now = utcnow()
    ours = await create_tenant(backend.sessions)
    old = datetime(2024, 5, 2, 12, tzinfo=UTC)
    async with backend.sessions() as session, session.begin():
        await use_tenant(session, ours)
        await add_order(session, ours, 1, old, "10.00")
    week = await stats_for(backend, ours, now, "7d")
    assert week["sales"]["orders"] == 0
    assert week["sales"]["by_currency"] == []
    assert week["sales"]["series"] == []
    assert week["sales"]["newest_order_at"][:10] == "2024-05-02"
    empty = await create_tenant(backend.sessions, OTHER_SHOP)
    nothing = await stats_for(backend, empty, now, "all")
    assert nothing["sales"]["newest_order_at"] is None
    assert nothing["sales"]["buckets"] == []


async def test_api_stats_takes_the_range(backend, served):
    now = utcnow()
    ours = await seed(backend, now)
    async with backend.sessions() as session, session.begin():
        token = await create_api_token(
            session, "stats", is_admin=False, tenant_ids=frozenset({ours})
        )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=10) as client:
        week = (await client.get("/api/stats", params={"shop": SHOP, "range": "7d"})).json()
        assert week["range"]["key"] == "7d"
        assert [row["gross"] for row in week["sales"]["by_currency"]] == ["7.50", "100.00"]
        # Anything else is the default range, not an error.
        odd = await client.get("/api/stats", params={"shop": SHOP, "range": "<5y>"})
        assert odd.status_code == 200
        assert odd.json()["range"]["key"] == "30d"
        assert "777.77" not in odd.text


async def test_long_ranges_top_items_are_kept_a_while_and_short_ones_are_fresh(backend):
    now = utcnow()
    ours = await seed(backend, now)
    clock = [0.0]
    cache = TopItemsCache(60, clock=lambda: clock[0])
    first = await stats_for(backend, ours, now, "all", cache)
    async with backend.sessions() as session, session.begin():
        await use_tenant(session, ours)
        await add_order(
            session, ours, 9, now - timedelta(hours=1), "5000.00", lines=((7, 71, 1, "5000.00"),)
        )
    kept = await stats_for(backend, ours, now, "all", cache)
    assert kept["top_products"] == first["top_products"]
    assert kept["sales"]["orders"] == first["sales"]["orders"] + 1  # sales stay live
    fresh = await stats_for(backend, ours, now, "30d", cache)
    assert fresh["top_products"][0]["title"] == "Product 7"
    clock[0] = 61.0
    expired = await stats_for(backend, ours, now, "all", cache)
    assert expired["top_products"][0]["title"] == "Product 7"
