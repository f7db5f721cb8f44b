"""`tenant_transaction` and `cross_store_transaction` on PostgreSQL, as the service's own role
(so row-level security applies): what each one sees, and that each is one transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from handlers import normalize_order, upsert_records
from models import Order
from models.tenancy import cross_store_transaction, tenant_transaction
from tests.factories import OTHER_SHOP, SHOP, create_tenant, order_version


async def seed(pg) -> tuple[int, int]:
    alpha = await create_tenant(pg.sessions, SHOP)
    beta = await create_tenant(pg.sessions, OTHER_SHOP)
    async with pg.sessions() as session, session.begin():
        for tenant_id, order_id in ((alpha, 1), (beta, 2), (beta, 3)):
            await upsert_records(
                session,
                Order,
                tenant_id,
                [normalize_order(order_version(order_id, 1))],
                source="test",
            )
    return alpha, beta


async def test_a_tenant_transaction_sees_only_its_store(pg, app_sessions):
    alpha, beta = await seed(pg)
    async with tenant_transaction(app_sessions, alpha) as session:
        # No tenant filter on purpose: the scope alone must keep the other store out.
        alphas = (await session.execute(text("SELECT tenant_id, shopify_id FROM orders"))).all()
    async with tenant_transaction(app_sessions, beta) as session:
        betas = (await session.execute(text("SELECT tenant_id, shopify_id FROM orders"))).all()
    assert [tuple(row) for row in alphas] == [(alpha, 1)]
    assert sorted(tuple(row) for row in betas) == [(beta, 2), (beta, 3)]


async def test_a_cross_store_transaction_sees_every_store(pg, app_sessions):
    alpha, beta = await seed(pg)
    async with cross_store_transaction(app_sessions) as session:
        rows = (await session.execute(text("SELECT tenant_id, shopify_id FROM orders"))).all()
    assert sorted(tuple(row) for row in rows) == [(alpha, 1), (beta, 2), (beta, 3)]


async def test_the_scope_ends_with_the_transaction(pg, app_sessions):
    alpha, _ = await seed(pg)
    async with tenant_transaction(app_sessions, alpha) as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1
    # A plain transaction afterwards (possibly on the same pooled connection) sees nothing.
    async with app_sessions() as session, session.begin():
        assert await session.scalar(select(func.count()).select_from(Order)) == 0


async def test_a_tenant_transaction_commits_or_rolls_back_as_one(pg, app_sessions):
    alpha, _ = await seed(pg)
    async with tenant_transaction(app_sessions, alpha) as session:
        await upsert_records(
            session, Order, alpha, [normalize_order(order_version(4, 1))], source="test"
        )

    async def write_then_fail() -> None:
        async with tenant_transaction(app_sessions, alpha) as session:
            await upsert_records(
                session, Order, alpha, [normalize_order(order_version(5, 1))], source="test"
            )
            raise RuntimeError("undo")

    with pytest.raises(RuntimeError):
        await write_then_fail()
    async with tenant_transaction(app_sessions, alpha) as session:
        ids = sorted(await session.scalars(select(Order.shopify_id)))
    assert ids == [1, 4]
