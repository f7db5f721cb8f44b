"""Plain factories for tests: stores, signed deliveries, payloads."""

from __future__ import annotations

import asyncio
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from backfill.credentials import AppCredentials
from backfill.runner import BackfillEnvironment
from models import SecretBox, SyncJob, Tenant
from receiver.samples import sample_payload, webhook_headers
from receiver.tenants import set_access_token, set_webhook_secrets
from tests.conftest import APP_SECRET, TEST_ENCRYPTION_KEY
from tests.fakeshop import FakeStore, ManualClock

SHOP = "alpha-store.myshopify.com"
OTHER_SHOP = "beta-store.myshopify.com"


async def create_tenant(
    sessions: async_sessionmaker[AsyncSession],
    shop: str = SHOP,
    *,
    webhook_secrets: list[str] | None = None,
    status: str = "active",
    access_token: str | None = None,
) -> int:
    async with sessions() as session, session.begin():
        tenant = Tenant(shop_domain=shop, status=status)
        if webhook_secrets:
            set_webhook_secrets(SecretBox([TEST_ENCRYPTION_KEY]), tenant, webhook_secrets)
        if access_token:
            set_access_token(SecretBox([TEST_ENCRYPTION_KEY]), tenant, access_token)
        session.add(tenant)
        await session.flush()
        return tenant.id


async def create_finished_job(sessions: async_sessionmaker[AsyncSession], tenant_id: int) -> int:
    """A succeeded sync job of the store, for tests of who may read which job."""
    async with sessions() as session, session.begin():
        job = SyncJob(
            tenant_id=tenant_id,
            mode="full",
            status="succeeded",
            resources=["orders"],
            progress={},
            attempts=1,
        )
        session.add(job)
        await session.flush()
        return job.id


def delivery(
    topic: str,
    payload: dict[str, Any] | None = None,
    *,
    shop: str = SHOP,
    secret: str = APP_SECRET,
    **header_options: Any,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a correctly signed delivery (sample payload unless one is given)."""
    body = json.dumps(payload if payload is not None else sample_payload(topic, shop)).encode()
    return body, webhook_headers(topic, shop, body, secret, **header_options)


def order_version(
    order_id: int, version: int, *, base: datetime | None = None, **fields: Any
) -> dict[str, Any]:
    """The sample order as it stood at its `version`-th update: later versions are newer."""
    payload = copy.deepcopy(sample_payload("orders/updated"))
    moment = (base or datetime(2026, 11, 20, 12, tzinfo=UTC)) + timedelta(minutes=version)
    payload.update(
        id=order_id,
        admin_graphql_api_id=f"gid://shopify/Order/{order_id}",
        name=f"#{1000 + version}",
        updated_at=moment.isoformat(),
        total_price=f"{100 + version}.00",
        note=f"version {version}",
        **fields,
    )
    return payload


# Order columns that webhook and backfill writes of the same order must agree on.
ORDER_COLUMNS = (
    "name",
    "email",
    "customer_shopify_id",
    "currency",
    "total_price",
    "subtotal_price",
    "financial_status",
    "fulfillment_status",
    "cancelled_at",
    "processed_at",
)
# Per resource, the columns a stored row is compared on with the normalised record.
RECORD_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "email",
        "first_name",
        "last_name",
        "phone",
        "state",
        "amount_spent",
        "orders_count",
    ),
    "products": ("title", "handle", "status", "vendor", "product_type", "tags"),
    "orders": ORDER_COLUMNS,
    "locations": (
        "name",
        "address1",
        "address2",
        "city",
        "zip",
        "province_code",
        "country_code",
        "phone",
        "active",
    ),
}


def simulator_environment(
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    admin_base_url: str,
    store: FakeStore,
    clock: ManualClock,
    **overrides: Any,
) -> BackfillEnvironment:
    """What the backfill needs to talk to a simulated store, on the simulator's virtual time:
    the client's pacing sleeps advance the clock instead of waiting."""

    async def virtual_sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    return BackfillEnvironment(
        sessions=sessions,
        http=http,
        box=SecretBox([TEST_ENCRYPTION_KEY]),
        admin_base_url=admin_base_url,
        api_version="2026-10",
        app=AppCredentials(store.tokens.client_id, store.tokens.client_secret),
        client_options={"sleep": virtual_sleep, "clock": clock.monotonic},
        **overrides,
    )


_ROWS_READ = text(
    "SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0)"
    " FROM pg_stat_xact_user_tables WHERE relname IN :tables"
).bindparams(bindparam("tables", expanding=True))


async def rows_read(on: AsyncSession | AsyncConnection, *tables: str) -> dict[str, int]:
    """PostgreSQL: the rows of each table this transaction has read so far, scanned or
    fetched through an index (its own counters, not yet reported to the statistics); 0 for a
    table it has not read (a name that is no table of ours raises). What a test of a
    statement's plan bounds."""
    found = await on.execute(_ROWS_READ, {"tables": list(tables)})
    read = {str(name): int(rows) for name, rows in found.all()}
    unknown = set(tables) - set(read)
    if unknown:  # every table of ours has a row, read or not: a name that has none is wrong
        raise LookupError(f"no table named {', '.join(sorted(unknown))}")
    return read


async def blocked_by(engine: AsyncEngine, pid: int, task: asyncio.Task[Any], what: str) -> None:
    """PostgreSQL: return once a backend waits on a lock that backend `pid` holds, or once
    `task` (the work expected to wait) has ended, whose outcome the caller then checks; fail
    saying `what` never happened if neither does within ten seconds."""
    deadline = asyncio.get_running_loop().time() + 10
    async with engine.connect() as probe:
        while asyncio.get_running_loop().time() < deadline:
            waiting = await probe.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE CAST(:pid AS integer) = ANY(pg_blocking_pids(pid))"
                ),
                {"pid": pid},
            )
            await probe.rollback()  # a fresh snapshot of the activity next time
            if waiting or task.done():
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"{what} within 10 s")
