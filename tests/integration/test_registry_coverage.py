"""Coverage derived from the database, not from the registry: every table that carries a
`tenant_id` in the migrated schema is isolated by row-level security and emptied by
shop/redact, and every resource the registry declares is handled, stored and served.

A new tenant table without a policy, a filler below, or a place in shop/redact fails here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from inspect import signature as inspect_signature
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backfill.queries import BULK_RUN, BULK_STATUS
from backfill.runner import page_size_for
from handlers.resources import RESOURCES
from handlers.topic_table import HANDLERS
from models import ApiToken, ApiTokenTenant, Base, Tenant, User, create_engine
from models import create_session_factory as session_factory
from models.tables import is_inbox_partition
from models.tenancy import use_tenant
from tests.conftest import APP_ROLE, Backend, ServedApp, as_app_role
from tests.factories import OTHER_SHOP, SHOP, create_tenant, delivery
from tests.fakeshop import FakeShopServer, FakeStore

SHOP_ID = 548380009
OTHER_SHOP_ID = 548380010
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


async def tenant_tables_in(connection: AsyncConnection, *, partitions: bool = False) -> list[str]:
    """The tables of the migrated schema (not of our metadata) with a tenant_id column; with
    `partitions`, the inbox's partitions too (PostgreSQL), which are filled and read through
    webhook_events but must be guarded as well, should someone read one directly."""

    def names(sync_connection: Any) -> list[str]:
        inspector = inspect(sync_connection)
        return sorted(
            table
            for table in inspector.get_table_names()
            if any(column["name"] == "tenant_id" for column in inspector.get_columns(table))
            and (partitions or not is_inbox_partition(table))
        )

    return await connection.run_sync(names)


# -- row-level security (PostgreSQL) ------------------------------------------------------


async def test_every_tenant_table_is_isolated_for_the_app_role(pg: Backend) -> None:
    async with pg.engine.connect() as connection:
        tables = await tenant_tables_in(connection, partitions=True)
        rows = (
            await connection.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                    "pg_has_role(:role, c.relowner, 'USAGE') AS app_owns, "
                    "EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid "
                    "AND p.polname = 'tenant_isolation') AS has_policy "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)"
                ),
                {"role": APP_ROLE, "tables": tables},
            )
        ).all()
    assert len(tables) >= 10  # customers ... reconcile_runs: the query found the schema
    # The inbox's keys, its DEFAULT partition and this month's (the migration made it).
    assert {"webhook_event_keys", "webhook_events_default"} <= set(tables)
    assert any(name.startswith("webhook_events_p") for name in tables)
    found = {row.relname: row for row in rows}
    assert sorted(found) == tables
    unguarded = [
        name
        for name, row in found.items()
        if not row.relrowsecurity
        or not row.has_policy
        or (row.app_owns and not row.relforcerowsecurity)
    ]
    assert unguarded == []


async def test_the_app_role_sees_only_the_scoped_store_in_every_tenant_table(
    pg: Backend,
) -> None:
    alpha, beta = await two_stores(pg)
    async with pg.sessions() as session, session.begin():
        tables = await tenant_tables_in(await session.connection())
        await fill(session, tables, alpha, beta)
    engine = create_engine(as_app_role(pg.url))
    try:
        async with session_factory(engine)() as session, session.begin():
            await use_tenant(session, alpha)
            for table in tables:
                seen = await session.scalars(text(f"SELECT DISTINCT tenant_id FROM {table}"))
                assert seen.all() == [alpha], table
    finally:
        await engine.dispose()


# -- shop/redact empties every tenant table (both backends) --------------------------------


class Ids:
    """Rows other tables point at, made once per test."""

    def __init__(self, user: int, tokens: dict[str, int]) -> None:
        self.user = user
        self.tokens = tokens


def _shop_record(tenant: int, n: int, **columns: Any) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "shopify_id": n,
        "shopify_created_at": NOW,
        "shopify_updated_at": NOW,
        "raw": {"id": n},
        "synced_at": NOW,
        "source": "test",
        **columns,
    }


# One row per store for every tenant table. A table the database has and this lacks fails
# the test loudly: say here what a row of it looks like, and check redaction covers it.
FILLERS: dict[str, Callable[[int, int, Ids], list[dict[str, Any]]]] = {
    "customers": lambda t, n, ids: [_shop_record(t, n, email=f"c{n}@example.com")],
    "products": lambda t, n, ids: [_shop_record(t, n, title="Hat")],
    "orders": lambda t, n, ids: [_shop_record(t, n, email=f"o{n}@example.com")],
    "webhook_events": lambda t, n, ids: [
        {
            "tenant_id": t,
            "shop_domain": f"store-{t}",
            "topic": "orders/create",
            "dedupe_key": f"seed-{n}",
            "received_at": NOW,
            "status": "processed",
            "attempts": 1,
            "duplicate_count": 0,
            "payload": {"id": n, "email": f"o{n}@example.com"},
        }
    ],
    # Not the seeded events' keys: shop/redact deletes every key of the store but its own.
    "webhook_event_keys": lambda t, n, ids: [
        {
            "tenant_id": t,
            "shop_domain": f"store-{t}",
            "topic": "orders/create",
            "dedupe_key": f"seed-key-{n}",
            "webhook_event_id": 0,
            "received_at": NOW,
        }
    ],
    "child_refetches": lambda t, n, ids: [
        {
            "tenant_id": t,
            "child_table": "product_variants",
            "parent_shopify_id": n,
            "requested_at": NOW,
        }
    ],
    "compliance_requests": lambda t, n, ids: [
        {
            "tenant_id": t,
            "topic": "customers/data_request",
            "customer_shopify_id": n,
            "payload": {"customer": {"id": n, "email": f"c{n}@example.com"}},
            "received_at": NOW,
        }
    ],
    "sync_jobs": lambda t, n, ids: [
        {
            "tenant_id": t,
            "mode": "full",
            "status": "succeeded",
            "resources": list(RESOURCES),
            "progress": {"orders": {"cursor": "abc", "count": 1, "done": True}},
            "attempts": 1,
            "created_at": NOW,
            "trigger": "manual",
        }
    ],
    "user_tenants": lambda t, n, ids: [{"tenant_id": t, "user_id": ids.user}],
    "webhook_subscriptions": lambda t, n, ids: [
        {
            "tenant_id": t,
            "topic": "orders/create",
            "uri": "https://example.com/webhooks/shopify",
            "created_at": NOW,
            "checked_at": NOW,
        }
    ],
    "api_token_tenants": lambda t, n, ids: [
        {"tenant_id": t, "api_token_id": ids.tokens["both"]},
        {"tenant_id": t, "api_token_id": ids.tokens[f"only-{t}"]},
    ],
    "locations": lambda t, n, ids: [_shop_record(t, n, name="Warehouse", phone="+15550100")],
    "order_line_items": lambda t, n, ids: [_shop_record(t, n, order_shopify_id=n, sku="HAT-1")],
    "order_refunds": lambda t, n, ids: [_shop_record(t, n, order_shopify_id=n, note="damaged")],
    "order_refund_line_items": lambda t, n, ids: [
        _shop_record(t, n, refund_shopify_id=n, order_shopify_id=n, quantity=1)
    ],
    "order_transactions": lambda t, n, ids: [
        _shop_record(t, n, order_shopify_id=n, kind="sale", status="success")
    ],
    "fulfillments": lambda t, n, ids: [
        _shop_record(t, n, order_shopify_id=n, tracking_numbers=["1Z999"])
    ],
    "product_variants": lambda t, n, ids: [_shop_record(t, n, product_shopify_id=n, sku="HAT-1")],
    "customer_addresses": lambda t, n, ids: [
        _shop_record(t, n, customer_shopify_id=n, address1="1 Main St", phone="+15550101")
    ],
    "inventory_items": lambda t, n, ids: [_shop_record(t, n, sku="HAT-1", tracked=True)],
    "inventory_levels": lambda t, n, ids: [
        {
            "tenant_id": t,
            "inventory_item_shopify_id": n,
            "location_shopify_id": n,
            "available": 5,
            "shopify_updated_at": NOW,
            "raw": {"inventory_item_id": n, "location_id": n},
            "synced_at": NOW,
            "source": "test",
        }
    ],
    "metafields": lambda t, n, ids: [
        _shop_record(
            t, n, owner_type="product", owner_shopify_id=n, namespace="custom", key="k", value="v"
        )
    ],
    "reconcile_runs": lambda t, n, ids: [
        {
            "tenant_id": t,
            "status": "clean",
            "trigger": "manual",
            "report": {},
            "started_at": NOW,
        }
    ],
}


async def two_stores(backend: Backend) -> tuple[int, int]:
    alpha = await create_tenant(backend.sessions, SHOP, status="uninstalled")
    beta = await create_tenant(backend.sessions, OTHER_SHOP, status="uninstalled")
    async with backend.sessions() as session, session.begin():
        for tenant_id, shop_id in ((alpha, SHOP_ID), (beta, OTHER_SHOP_ID)):
            (await session.get_one(Tenant, tenant_id)).shopify_shop_id = shop_id
    return alpha, beta


async def fill(session: AsyncSession, tables: list[str], *stores: int) -> Ids:
    missing = sorted(set(tables) - set(FILLERS))
    assert missing == [], f"no filler for tenant table(s) {missing}: add one to FILLERS"
    user = User(email="viewer@example.com", password_hash="x", is_admin=False, created_at=NOW)
    session.add(user)
    tokens = {
        name: ApiToken(name=name, token_sha256=name.ljust(64, "0"), is_admin=False)
        for name in ["both", *(f"only-{tenant}" for tenant in stores)]
    }
    session.add_all(tokens.values())
    await session.flush()
    ids = Ids(user.id, {name: token.id for name, token in tokens.items()})
    for table_name in tables:
        table = Base.metadata.tables[table_name]
        for n, tenant in enumerate(stores, start=1):
            await session.execute(table.insert(), FILLERS[table_name](tenant, n, ids))
    return ids


async def dump(session: AsyncSession, tables: list[str], tenant_id: int) -> dict[str, list[str]]:
    rows = {}
    for table in tables:
        result = await session.execute(
            text(f"SELECT * FROM {table} WHERE tenant_id = :t"), {"t": tenant_id}
        )
        rows[table] = sorted(json.dumps(list(row), default=str) for row in result)
    return rows


@pytest.fixture
async def served_http(served: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def test_shop_redact_empties_every_tenant_table_but_its_evidence(
    backend: Backend, served: ServedApp, served_http: httpx.AsyncClient
) -> None:
    alpha, beta = await two_stores(backend)
    async with backend.sessions() as session, session.begin():
        tables = await tenant_tables_in(await session.connection())
        ids = await fill(session, tables, alpha, beta)
    async with backend.sessions() as session:
        beta_before = await dump(session, tables, beta)
    assert all(beta_before.values())

    body, headers = delivery("shop/redact", {"shop_id": SHOP_ID, "shop_domain": SHOP})
    response = await served_http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "processed"

    async with backend.sessions() as session:
        left = {table: rows for table, rows in (await dump(session, tables, alpha)).items() if rows}
        events = (
            await session.execute(text("SELECT topic FROM webhook_events WHERE tenant_id = :t"), {
                "t": alpha
            })
        ).scalars().all()  # fmt: skip
        requests = (
            await session.execute(
                text("SELECT topic FROM compliance_requests WHERE tenant_id = :t"), {"t": alpha}
            )
        ).scalars().all()  # fmt: skip
        tenant = await session.get_one(Tenant, alpha)
        assert await dump(session, tables, beta) == beta_before
        tokens = {token.name: token for token in await session.scalars(select(ApiToken))}
        scopes = {
            (row.api_token_id, row.tenant_id)
            for row in await session.scalars(select(ApiTokenTenant))
        }
    # The evidence: the shop/redact event, its dedupe key and the compliance record.
    assert sorted(left) == ["compliance_requests", "webhook_event_keys", "webhook_events"]
    assert [json.loads(row)[1] for row in left["webhook_event_keys"]] == ["shop/redact"]
    assert events == ["shop/redact"]
    assert requests == ["shop/redact"]
    assert tenant.status == "redacted"
    # The redacted store's tokens are revoked, the other store's own token untouched, and no
    # live token was left without a scope (which would mean every store).
    assert tokens[f"only-{alpha}"].revoked_at is not None
    assert tokens["both"].revoked_at is not None
    assert tokens[f"only-{beta}"].revoked_at is None
    scoped = {token_id for token_id, _ in scopes}
    live_unscoped = [
        name
        for name, token in tokens.items()
        if token.revoked_at is None and token.id not in scoped
    ]
    assert live_unscoped == []
    assert ids.tokens["both"] in scoped  # still scoped to beta (revoked all the same)


# -- the registry against the topic table, the schema and the simulator --------------------


def test_every_registry_topic_is_in_the_topic_table() -> None:
    for resource in RESOURCES.values():
        assert resource.topics, resource.name
        for topic in resource.topics:
            assert topic in HANDLERS, topic
            assert topic.partition("/")[0] == resource.name


async def test_every_registry_table_exists_with_the_shop_record_columns(backend: Backend) -> None:
    async with backend.engine.connect() as connection:

        def columns(sync_connection: Any) -> dict[str, set[str]]:
            inspector = inspect(sync_connection)
            return {
                name: {column["name"] for column in inspector.get_columns(name)}
                for name in inspector.get_table_names()
            }

        schema = await connection.run_sync(columns)
    for resource in RESOURCES.values():
        assert resource.table in schema, resource.name
        assert set(resource.model.__table__.columns.keys()) <= schema[resource.table]
        assert set(resource.personal_fields) <= schema[resource.table]
        for child in (child.table for child in resource.child_sets):
            assert "tenant_id" in schema[child]


@pytest.fixture(scope="module")
def fakeshop() -> Any:
    with FakeShopServer([]) as served:
        yield served


@pytest.mark.parametrize("name", list(RESOURCES))
def test_the_simulator_answers_every_registry_query(fakeshop: FakeShopServer, name: str) -> None:
    resource = RESOURCES[name]
    store = fakeshop.add_store(
        FakeStore(
            f"registry-{name}.myshopify.com",
            # Inventory items are the variants': no count of their own.
            **{other: 3 for other in RESOURCES if other in inspect_signature(FakeStore).parameters},
        )
    )

    def graphql(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            fakeshop.graphql_url(store.shop_domain),
            json={"query": query, "variables": variables or {}},
            headers={"X-Shopify-Access-Token": store.access_token},
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        return body["data"]

    page = graphql(resource.page_query, {"first": page_size_for(resource)})[resource.field]
    assert page["pageInfo"]["hasNextPage"] is False
    records = [resource.normalize_node(node) for node in page["nodes"]]
    if resource.counted:
        assert len(records) == 3
        assert graphql(resource.count_query)[resource.count_field]["count"] == 3
    else:  # inventory items: one per variant of the three products
        assert len(records) >= 3

    started = graphql(BULK_RUN, {"query": resource.bulk_query()})["bulkOperationRunQuery"]
    assert started["userErrors"] == []
    operation_id = started["bulkOperation"]["id"]
    for _ in range(10):  # the simulator completes after a set number of polls, not a time
        status = graphql(BULK_STATUS, {"id": operation_id})["node"]
        if status["status"] == "COMPLETED":
            break
    assert status["status"] == "COMPLETED"
    lines = [json.loads(line) for line in httpx.get(status["url"], timeout=30).text.splitlines()]
    # Children come as their own lines naming their parent; the records are the others.
    parents = [line for line in lines if "__parentId" not in line]
    assert sorted(resource.normalize_node(line)["shopify_id"] for line in parents) == (
        sorted(record["shopify_id"] for record in records)
    )
