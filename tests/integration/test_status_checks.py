"""Every stored status, mode and trigger is checked by the database, on both backends."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import CheckConstraint, inspect, text
from sqlalchemy.exc import IntegrityError

from models import SHOP_DATA_MODELS, Base, ReconcileRun, SyncJob, WebhookEvent
from models.tables import is_inbox_partition
from tests.factories import SHOP, create_tenant

SHOP_DATA_TABLES = {model.__tablename__ for model in SHOP_DATA_MODELS}


def _checks() -> list[tuple[str, CheckConstraint]]:
    return sorted(
        (
            (table.name, constraint)
            for table in Base.metadata.tables.values()
            for constraint in table.constraints
            if isinstance(constraint, CheckConstraint) and "column" in constraint.info
        ),
        key=lambda pair: str(pair[1].name),
    )


CHECKS = _checks()


def _is_status_like(column: str) -> bool:
    return column in {"status", "mode", "trigger"} or column.endswith("_status")


def test_every_status_column_of_ours_has_a_check():
    # Shop-data tables keep Shopify's own strings (orders.financial_status and the like),
    # whose values are Shopify's to extend; every other status-like column is ours.
    unchecked = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.tables.values()
        if table.name not in SHOP_DATA_TABLES
        for column in table.columns
        if _is_status_like(column.name)
    } - {f"{table}.{check.info['column']}" for table, check in CHECKS}
    assert CHECKS
    assert unchecked == set()


async def _one_row_per_table(backend) -> None:
    tenant_id = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        session.add_all(
            [
                WebhookEvent(
                    tenant_id=tenant_id, shop_domain=SHOP, topic="orders/create", dedupe_key="k"
                ),
                SyncJob(tenant_id=tenant_id, mode="full", resources=["orders"], progress={}),
                ReconcileRun(tenant_id=tenant_id, report={}),
            ]
        )


@pytest.mark.parametrize(("table", "check"), CHECKS, ids=[str(c.name) for _, c in CHECKS])
async def test_the_database_refuses_an_unknown_value(backend, table, check):
    await _one_row_per_table(backend)
    column = check.info["column"]
    update = text(f'UPDATE {table} SET "{column}" = :value')
    for value in check.info["values"]:
        async with backend.engine.begin() as connection:
            assert (await connection.execute(update, {"value": value})).rowcount == 1
    for unknown in ("not-a-status", "", check.info["values"][0].upper()):
        with pytest.raises(IntegrityError, match=str(check.name)):
            async with backend.engine.begin() as connection:
                await connection.execute(update, {"value": unknown})
        with pytest.raises(IntegrityError, match=str(check.name)):
            async with backend.sessions() as session, session.begin():
                await session.execute(update, {"value": unknown})


async def test_the_migrated_checks_match_the_models(backend):
    # Alembic's compare_metadata (test_schema) does not compare CHECK constraints.
    def reflect(sync_connection):
        inspector = inspect(sync_connection)
        return {
            (table, check["name"]): set(re.findall(r"'([^']*)'", check["sqltext"]))
            for table in inspector.get_table_names()
            # The inbox's partitions (PostgreSQL) carry their parent's checks.
            if not table.startswith(("procrastinate_", "alembic_"))
            and not is_inbox_partition(table)
            for check in inspector.get_check_constraints(table)
        }

    async with backend.engine.connect() as connection:
        in_database = await connection.run_sync(reflect)
    assert in_database == {
        (table, check.name): set(check.info["values"]) for table, check in CHECKS
    }
