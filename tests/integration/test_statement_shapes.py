"""A backfill's memory stays flat only if its statements come in few shapes: SQLAlchemy keeps a
compiled form per shape (500 per engine), and a statement whose shape follows the data (one
clause per parent) fills that cache with large entries as the store grows. Counted here on a
compiled cache of the test's own (`compiled_cache`, a public execution option), and on
PostgreSQL, where the hot statements run on the driver, in `models.driver`'s own cache."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from handlers.children import write_with_children
from handlers.resources import RESOURCES
from models import driver
from models.tenancy import use_tenant
from receiver.samples import sample_payload
from tests.conftest import Backend
from tests.factories import create_tenant

ORDERS = RESOURCES["orders"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def order(shopify_id: int) -> dict[str, Any]:
    """Shopify's sample order under another id, updated at a time of its own, with line
    items of its own (ids are unique per store)."""
    payload = copy.deepcopy(sample_payload("orders/updated"))
    payload["id"] = shopify_id
    payload["admin_graphql_api_id"] = f"gid://shopify/Order/{shopify_id}"
    payload["updated_at"] = (START + timedelta(minutes=shopify_id)).isoformat()
    for index, item in enumerate(payload["line_items"]):
        item["id"] = shopify_id * 100 + index
        item["admin_graphql_api_id"] = f"gid://shopify/LineItem/{item['id']}"
    return payload


async def test_tombstoning_compiles_a_few_shapes_whatever_the_batch(backend: Backend) -> None:
    tenant_id = await create_tenant(backend.sessions)
    # Only this test's statements: a batch's tombstones share a statement, whose shape also
    # depends on which other child tables it tombstones (what other tests of this process
    # wrote), never on how many parents or list times it holds, which is what this counts.
    driver._COMPILED.clear()
    cache: dict[Any, Any] = {}
    next_id = 1
    async with backend.engine.connect() as connection:
        cached = await connection.execution_options(compiled_cache=cache)
        session = AsyncSession(bind=cached)
        # Batches of 1 to 40 orders, each order at a time of its own: 40 different counts of
        # parent times, as a bulk backfill's batches have.
        for size in range(1, 41):
            async with session.begin():
                await use_tenant(session, tenant_id)
                payloads = [order(shopify_id) for shopify_id in range(next_id, next_id + size)]
                await write_with_children(
                    session,
                    ORDERS.model,
                    ORDERS.children,
                    ORDERS.normalize_rest,
                    tenant_id,
                    payloads,
                    graphql=False,
                    source="test",
                )
            next_id += size
        await session.close()
    # SQLAlchemy's compiled forms; on PostgreSQL the statement runs on the driver
    # (models.driver), whose compiled forms are its own.
    compiled_sql = (
        [compiled.sql for _, compiled in driver._COMPILED.values()]
        if backend.name == "postgresql"
        else [compiled.string for compiled in cache.values()]
    )
    # (On PostgreSQL it is one WITH of a batch's tombstones, handlers.children.Tombstones.)
    tombstoning = {sql for sql in compiled_sql if "UPDATE order_line_items SET deleted_at" in sql}
    # The statements ran (the line items' tombstoning was compiled) ...
    assert tombstoning
    # ... in at most one shape per padded term count up to 40 (1, 2, 4, 8, 16, 32, 64),
    # where a shape per count of parent times made 40.
    assert len(tombstoning) <= 7, len(tombstoning)
