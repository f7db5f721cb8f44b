"""models.driver: hot statements sent to asyncpg itself behave as SQLAlchemy's execution does:
inside the session's transaction, with the statement's own bound values and types, and with
errors in SQLAlchemy's shape (so the 503 and fallback rules see them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import String, bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import async_sessionmaker

from handlers.dispatch import is_disconnect
from handlers.records import upsert_records
from models import Customer, Tenant, driver
from models.engine import create_engine
from models.tenancy import use_tenant
from tests.conftest import Backend

NAMED = (
    insert(Customer)
    .values(
        tenant_id=bindparam("tenant"),
        shopify_id=bindparam("id"),
        amount_spent=bindparam("spent", type_=Customer.__table__.c.amount_spent.type),
        raw=bindparam("raw", type_=Customer.__table__.c.raw.type),
        shopify_updated_at=bindparam("at", type_=Customer.__table__.c.shopify_updated_at.type),
        synced_at=bindparam("at"),
        source="driver-test",  # a value the statement carries itself
    )
    .returning(Customer.shopify_id, Customer.source)
)
WITHOUT_SYNCED_AT = insert(Customer).values(tenant_id=bindparam("tenant"), shopify_id=1, raw={})
SLEEP = select(func.pg_sleep(bindparam("seconds")))


async def _tenant(pg: Backend) -> int:
    async with pg.sessions() as session, session.begin():
        tenant = Tenant(shop_domain="driver.myshopify.com", status="active")
        session.add(tenant)
        await session.flush()
        return tenant.id


async def test_a_first_statement_runs_inside_the_sessions_transaction(pg: Backend) -> None:
    tenant_id = await _tenant(pg)
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    async with pg.sessions() as session, session.begin():
        rows = await driver.fetch(
            session,
            NAMED,
            {"tenant": tenant_id, "id": 7, "spent": Decimal("1.10"), "raw": [1], "at": at},
        )
        assert [tuple(row) for row in rows] == [(7, "driver-test")]
        await session.rollback()
    async with pg.sessions() as session:
        # Rolled back with the transaction: it was not committed on its own.
        assert await session.scalar(select(func.count()).select_from(Customer)) == 0


async def test_values_go_through_the_types_bind_processing(pg: Backend) -> None:
    tenant_id = await _tenant(pg)
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    async with pg.sessions() as session, session.begin():
        await driver.fetch(
            session,
            NAMED,
            {"tenant": tenant_id, "id": 8, "spent": Decimal("10.50"), "raw": ["a"], "at": at},
        )
    async with pg.sessions() as session:
        customer = (await session.scalars(select(Customer))).one()
        assert (customer.amount_spent, customer.raw, customer.shopify_updated_at) == (
            Decimal("10.50"),
            ["a"],
            at,
        )
        naive = datetime(2026, 12, 1, 12)
        with pytest.raises(ValueError, match="naive datetime"):
            await driver.fetch(
                session,
                NAMED,
                {"tenant": tenant_id, "id": 9, "spent": None, "raw": {}, "at": naive},
            )


async def test_a_refused_statement_is_a_dbapi_error_with_the_sqlstate(pg: Backend) -> None:
    async with pg.sessions() as session, session.begin():
        with pytest.raises(DBAPIError) as raised:
            await driver.fetch(session, text("SELECT 1 / :zero"), {"zero": 0})
    assert raised.value.orig is not None
    assert getattr(raised.value.orig, "sqlstate", None) == "22012"
    assert not is_disconnect(raised.value)


async def test_a_statement_past_its_timeout_counts_as_the_database_ending_the_work(
    pg: Backend,
) -> None:
    async with pg.sessions() as session, session.begin():
        await session.execute(text("SET LOCAL statement_timeout = '50ms'"))
        with pytest.raises(DBAPIError) as raised:
            await driver.fetch(session, SLEEP, {"seconds": 5})
    assert is_disconnect(raised.value)


async def test_a_lost_connection_is_invalidated_and_a_disconnect(pg: Backend) -> None:
    async with pg.sessions() as session:
        await session.execute(text("SELECT 1"))
        connection = await session.connection()
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with pg.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as raised:
            await driver.fetch(session, SLEEP, {"seconds": 0})
        assert raised.value.connection_invalidated
        assert is_disconnect(raised.value)
        assert connection.invalidated


async def test_each_transaction_of_a_session_runs_its_statements_on_its_own_connection(
    pg: Backend,
) -> None:
    # The session's connection is looked up once per transaction: after a commit, the next
    # statement must run in the next transaction (on whatever connection it holds), so that
    # rolling that one back undoes it and nothing else.
    tenant_id = await _tenant(pg)
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)

    def values(shopify_id: int) -> dict[str, Any]:
        return {"tenant": tenant_id, "id": shopify_id, "spent": None, "raw": {}, "at": at}

    async with pg.sessions() as session:
        await driver.fetch(session, NAMED, values(21))
        await session.commit()
        # Each next transaction begun by SQLAlchemy itself, before the driver's first use.
        await session.execute(text("SELECT 1"))
        await driver.fetch(session, NAMED, values(22))
        await driver.fetch(session, NAMED, values(23))
        await session.rollback()
        await session.execute(text("SELECT 1"))
        await driver.fetch(session, NAMED, values(24))
        await session.commit()
    async with pg.sessions() as session:
        stored = await session.scalars(select(Customer.shopify_id).order_by(Customer.shopify_id))
        assert list(stored) == [21, 24]


async def test_a_connection_replaced_after_a_loss_gets_its_own_driver(pg: Backend) -> None:
    # One pooled connection, lost under a statement, then replaced by the pool: the driver
    # kept for the old one must not be used for the new one.
    engine = create_engine(pg.url, pool_size=1, max_overflow=0)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with pg.engine.connect() as other:
                await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            with pytest.raises(DBAPIError):
                await driver.fetch(session, SLEEP, {"seconds": 0})
        async with sessions() as session, session.begin():
            rows = await driver.fetch(session, select(func.pg_backend_pid()), {})
            assert rows[0][0] != pid
    finally:
        await engine.dispose()


async def test_a_statement_that_needs_python_side_defaults_is_refused(pg: Backend) -> None:
    # `synced_at` and `source` have Python-side defaults, which only SQLAlchemy's own
    # execution computes: sent to the driver they would be NULL.
    async with pg.sessions() as session, session.begin():
        with pytest.raises(ValueError, match="synced_at"):
            await driver.fetch(session, WITHOUT_SYNCED_AT, {"tenant": 1})


async def test_a_value_too_long_for_its_column_is_refused_not_cut(pg: Backend) -> None:
    # Batches are written as arrays; an array cast to VARCHAR(n)[] would cut the value
    # silently, so they carry unbounded text and the column refuses it (22001), as a
    # single INSERT does.
    tenant_id = await _tenant(pg)
    table = Customer.__table__
    bounded = next(
        column.name
        for column in table.c
        if isinstance(column.type, String) and column.type.length and column.name != "source"
    )
    length = table.c[bounded].type.length
    record = {
        "shopify_id": 11,
        "shopify_updated_at": datetime(2026, 12, 1, tzinfo=UTC),
        "raw": {},
        bounded: "x" * (length + 1),
    }
    async with pg.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        with pytest.raises(DBAPIError) as raised:
            await upsert_records(session, Customer, tenant_id, [record], source="test")
    assert getattr(raised.value.orig, "sqlstate", None) == "22001"


def _customer(shopify_id: int, **values: Any) -> dict[str, Any]:
    record = {
        "shopify_id": shopify_id,
        "shopify_created_at": datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC),
        # Other zones, one with seconds in its offset: stored as the same instant.
        "shopify_updated_at": datetime(
            2026, 12, 1, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))
        ),
        "email_marketing_updated_at": datetime(
            2026, 12, 1, tzinfo=timezone(-timedelta(minutes=19, seconds=32))
        ),
        "email": None,
        "first_name": 'quote " back \\ line\u2028 é 日本',
        "amount_spent": Decimal("10.50"),
        "orders_count": 2**62,
        "verified_email": False,
        "raw": {"f": 2.5, "none": None, "list": [1, "a", {"b": None}]},
    }
    return record | values


@pytest.mark.parametrize("raw_integer", [2**53, 2**70], ids=["orjson", "json.dumps"])
async def test_rows_sent_together_are_stored_as_one_row_bound_alone(
    pg: Backend, raw_integer: int
) -> None:
    # A batch of rows goes as one JSON array read back in the statement: every value must
    # come out as SQLAlchemy's own binding of the same row stores it (amounts exact, times
    # as instants, text as sent, JSON as JSON with its nulls), whether orjson writes the
    # array or, for an integer past 64 bits, json.dumps.
    tenant_id = await _tenant(pg)

    def customer(shopify_id: int, **values: Any) -> dict[str, Any]:
        record = _customer(shopify_id, **values)
        if record["raw"] is not None:
            record["raw"] = record["raw"] | {"integer": raw_integer}
        return record

    together = [customer(1), customer(2, first_name=None, raw=None)]
    alone = [customer(101), customer(102, first_name=None, raw=None)]
    async with pg.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        await upsert_records(session, Customer, tenant_id, together, source="test")
        for record in alone:
            await session.execute(
                insert(Customer).values(
                    tenant_id=tenant_id, source="test", synced_at=datetime.now(UTC), **record
                )
            )
    columns = [c for c in Customer.__table__.c if c.name not in {"id", "shopify_id", "synced_at"}]
    async with pg.sessions() as session:
        await use_tenant(session, tenant_id)
        rows = {
            row[0]: row[1:]
            for row in await session.execute(
                select(Customer.shopify_id, *(func.cast(c, String) for c in columns))
            )
        }
    assert rows[1] == rows[101]
    assert rows[2] == rows[102]
    assert rows[1][[c.name for c in columns].index("amount_spent")] == "10.50"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_spent", 10.5),  # a float is not an amount
        ("shopify_updated_at", datetime(2026, 12, 1)),  # a time without its zone
    ],
)
async def test_rows_sent_together_pass_their_columns_checks(
    pg: Backend, field: str, value: Any
) -> None:
    tenant_id = await _tenant(pg)
    async with pg.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        with pytest.raises((TypeError, ValueError)):
            await upsert_records(
                session, Customer, tenant_id, [_customer(1, **{field: value})], source="test"
            )
