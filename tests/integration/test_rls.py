"""Row-level security on PostgreSQL, as the service's own role (not owner, not superuser)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from handlers import normalize_order, upsert_records
from models import Order
from models.tenancy import TENANT_TABLES, use_all_tenants, use_tenant
from tests.conftest import APP_ROLE
from tests.factories import OTHER_SHOP, SHOP, create_tenant, order_version


async def seed(pg) -> tuple[int, int]:
    alpha = await create_tenant(pg.sessions, SHOP)
    beta = await create_tenant(pg.sessions, OTHER_SHOP)
    async with pg.sessions() as session, session.begin():
        await upsert_records(
            session, Order, alpha, [normalize_order(order_version(1, 1))], source="test"
        )
        await upsert_records(
            session, Order, beta, [normalize_order(order_version(2, 1))], source="test"
        )
    return alpha, beta


async def test_the_service_role_is_bound_by_the_policies(pg, app_sessions):
    async with app_sessions() as session:
        role = (await session.execute(text(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ))).one()  # fmt: skip
        owners = set(
            (await session.scalars(text(
                "SELECT tableowner FROM pg_tables WHERE tablename = ANY(:tables)"
            ), {"tables": list(TENANT_TABLES)})).all()
        )  # fmt: skip
        enabled = (await session.scalars(text(
            "SELECT relname FROM pg_class WHERE relrowsecurity AND relname = ANY(:tables)"
        ), {"tables": list(TENANT_TABLES)})).all()  # fmt: skip
    assert tuple(role) == (False, False)
    assert APP_ROLE not in owners
    assert sorted(enabled) == sorted(TENANT_TABLES)


async def test_a_query_without_a_tenant_filter_sees_only_its_tenant(pg, app_sessions):
    alpha, _ = await seed(pg)
    async with app_sessions() as session, session.begin():
        await use_tenant(session, alpha)
        # Deliberately no WHERE tenant_id: the forgotten filter the policy is there for.
        rows = (await session.execute(text("SELECT tenant_id, shopify_id FROM orders"))).all()
    assert [tuple(row) for row in rows] == [(alpha, 1)]


async def test_without_a_scope_nothing_is_visible(pg, app_sessions):
    await seed(pg)
    async with app_sessions() as session, session.begin():
        assert (await session.execute(text("SELECT count(*) FROM orders"))).scalar() == 0


async def test_an_insert_for_another_tenant_is_refused(pg, app_sessions):
    alpha, beta = await seed(pg)
    records = [normalize_order(order_version(3, 1))]
    async with app_sessions() as session, session.begin():
        await use_tenant(session, alpha)
        with pytest.raises(DBAPIError, match="row-level security"):
            await upsert_records(session, Order, beta, records, source="test")


async def test_an_update_cannot_move_a_row_to_another_tenant(pg, app_sessions):
    alpha, beta = await seed(pg)
    move = text("UPDATE orders SET tenant_id = :beta")
    async with app_sessions() as session, session.begin():
        await use_tenant(session, alpha)
        with pytest.raises(DBAPIError, match="row-level security"):
            await session.execute(move, {"beta": beta})


async def test_the_scope_ends_with_the_transaction(pg, app_sessions):
    alpha, _ = await seed(pg)
    async with app_sessions() as session:
        async with session.begin():
            await use_tenant(session, alpha)
            assert (await session.execute(text("SELECT count(*) FROM orders"))).scalar() == 1
        async with session.begin():  # same pooled connection, new transaction
            assert (await session.execute(text("SELECT count(*) FROM orders"))).scalar() == 0


async def test_cross_tenant_work_is_explicit(pg, app_sessions):
    await seed(pg)
    async with app_sessions() as session, session.begin():
        await use_all_tenants(session)
        assert (await session.execute(text("SELECT count(*) FROM orders"))).scalar() == 2
