"""A store's sales history written straight into the tables, for the store page's browser
tests: orders spread over years, their line items, refunds, variants and stock."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from models import (
    InventoryLevel,
    Order,
    OrderLineItem,
    OrderRefund,
    Product,
    ProductVariant,
)
from models.tenancy import use_tenant

PRODUCTS = 12
BATCH = 2000


def order_total(index: int) -> Decimal:
    return Decimal(10 + index % 90) + Decimal("0.99")


def line_items(index: int) -> list[tuple[int, int, Decimal]]:
    """(product, quantity, price) of each line of order number `index`."""
    lines = []
    for line in (0, 1):
        product = (index + line * 5) % PRODUCTS + 1
        lines.append((product, 1 + line, Decimal("4.50") + product))
    return lines


def currency_of(index: int) -> str:
    return "EUR" if index % 10 == 0 else "USD"


def product_revenue(orders: int) -> dict[tuple[str, int], Decimal]:
    """What each product sold per currency, worked out in Python from the rules above."""
    totals: dict[tuple[str, int], Decimal] = {}
    for index in range(orders):
        for product, quantity, price in line_items(index):
            key = (currency_of(index), product)
            totals[key] = totals.get(key, Decimal(0)) + price * quantity
    return totals


async def seed_sales(
    sessions: async_sessionmaker[AsyncSession],
    tenant_id: int,
    *,
    orders: int,
    newest: datetime,
    span: timedelta,
) -> None:
    """`orders` orders evenly spread from `newest - span` to `newest`: every tenth in EUR, the
    rest in USD; two line items each over PRODUCTS products (two variants each); a refund of
    5.00 on every 25th order; stock that runs low on a few variants."""
    step = span / max(1, orders - 1)
    async with sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        products: list[dict[str, Any]] = []
        variants: list[dict[str, Any]] = []
        levels: list[dict[str, Any]] = []
        for product in range(1, PRODUCTS + 1):
            products.append(
                {"tenant_id": tenant_id, "shopify_id": product, "title": f"Product {product}"}
            )
            for size in (1, 2):
                variant = product * 10 + size
                variants.append(
                    {
                        "tenant_id": tenant_id,
                        "shopify_id": variant,
                        "product_shopify_id": product,
                        "title": "Small" if size == 1 else "Large",
                        "sku": f"SKU-{variant}",
                        "inventory_item_shopify_id": variant,
                    }
                )
                for location in (1, 2):
                    levels.append(
                        {
                            "tenant_id": tenant_id,
                            "inventory_item_shopify_id": variant,
                            "location_shopify_id": location,
                            # Product 1 and 2 run low: 0+1 and 2+3 available.
                            "available": (product - 1) * 2 + location - 1 if product <= 2 else 50,
                        }
                    )
        await session.execute(insert(Product), products)
        await session.execute(insert(ProductVariant), variants)
        await session.execute(insert(InventoryLevel), levels)
        for start in range(0, orders, BATCH):
            rows: list[dict[str, Any]] = []
            items: list[dict[str, Any]] = []
            refunds: list[dict[str, Any]] = []
            for index in range(start, min(orders, start + BATCH)):
                when = newest - step * index
                currency = currency_of(index)
                order_id = index + 1
                rows.append(
                    {
                        "tenant_id": tenant_id,
                        "shopify_id": order_id,
                        "name": f"#{1000 + order_id}",
                        "currency": currency,
                        "total_price": order_total(index),
                        "financial_status": "paid",
                        "processed_at": when,
                        "shopify_created_at": when,
                    }
                )
                for line, (product, quantity, price) in enumerate(line_items(index)):
                    items.append(
                        {
                            "tenant_id": tenant_id,
                            "shopify_id": order_id * 10 + line,
                            "order_shopify_id": order_id,
                            "product_shopify_id": product,
                            "variant_shopify_id": product * 10 + 1 + line,
                            "title": f"Product {product}",
                            "variant_title": "Small" if line == 0 else "Large",
                            "quantity": quantity,
                            "price": price,
                            "currency": currency,
                        }
                    )
                if index % 25 == 0:
                    refunds.append(
                        {
                            "tenant_id": tenant_id,
                            "shopify_id": order_id,
                            "order_shopify_id": order_id,
                            "processed_at": when,
                            "total_refunded": Decimal("5.00"),
                            "currency": currency,
                        }
                    )
            await session.execute(insert(Order), rows)
            await session.execute(insert(OrderLineItem), items)
            if refunds:
                await session.execute(insert(OrderRefund), refunds)
