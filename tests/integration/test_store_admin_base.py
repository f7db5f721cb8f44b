"""A store's own Admin API base (`tenants add --admin-url`, backfill.admin_base) against two
simulators on loopback, on PostgreSQL and SQLite.

Every request the service sends goes through a recording transport; where the data came from
is read from the database and from each simulator's own counters, never from what the code
under test returned.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backfill.credentials import AppCredentials
from backfill.maintenance import MaintenanceLoop
from backfill.reconcile import reconcile
from backfill.runner import BackfillEnvironment, create_sync_job, run_sync_job
from backfill.subscriptions import sync_subscriptions
from handlers.normalize import parse_shopify_id
from models import (
    Order,
    ReconcileRun,
    SecretBox,
    SyncJob,
    Tenant,
    create_engine,
    create_session_factory,
)
from receiver.backfill_env import backfill_environment, maintenance_for
from receiver.settings import Settings
from receiver.tenants import set_access_token
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import create_finished_job, create_tenant
from tests.fakeshop import FakeShopServer, FakeStore
from tests.integration.test_cli import Cli, cli_env

SIMULATED = "simulated-store.myshopify.com"
REAL = "real-store.myshopify.com"
PUBLIC_URL = "https://receiver.example.com"
URI = f"{PUBLIC_URL}/webhooks/shopify"
BOX = SecretBox([TEST_ENCRYPTION_KEY])
SMALL = {"customers": 12, "products": 6, "orders": 30, "throttle": False}


@dataclass(frozen=True)
class Sent:
    scheme: str
    host: str
    port: int | None
    path: str
    token: str | None


class RecordingTransport(httpx.AsyncBaseTransport):
    """Every request the service sends; only loopback ones leave this machine. Anything else
    is answered as Shopify answers a token it does not know, so nothing is retried."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        self.sent.append(
            Sent(
                url.scheme,
                url.host,
                url.port,
                url.path,
                request.headers.get("x-shopify-access-token"),
            )
        )
        if url.host != "127.0.0.1":
            return httpx.Response(401, json={"errors": "[API] Invalid API key or access token"})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()

    def to(self, server: FakeShopServer) -> list[Sent]:
        return [s for s in self.sent if (s.host, s.port) == (server.host, server.port)]


@pytest.fixture
def simulators() -> Iterator[tuple[FakeShopServer, FakeShopServer]]:
    """The simulated store's own simulator, and the one SHOPIFY_ADMIN_BASE_URL points at: it
    serves the real store and a decoy of the simulated one (same domain, same token, other
    data), so a call sent to the wrong base would succeed there and be seen in the data."""
    own = FakeStore(SIMULATED, seed=21, access_token="shpat_simulated", **SMALL)
    decoy = FakeStore(SIMULATED, seed=22, access_token="shpat_simulated", orders=7, **{
        k: v for k, v in SMALL.items() if k != "orders"
    })  # fmt: skip
    real = FakeStore(REAL, seed=23, access_token="shpat_real", **SMALL)
    with FakeShopServer(own) as own_server, FakeShopServer([decoy, real]) as global_server:
        yield own_server, global_server


async def order_ids(backend: Backend, tenant_id: int) -> set[int]:
    async with backend.sessions() as session:
        return set(
            await session.scalars(select(Order.shopify_id).where(Order.tenant_id == tenant_id))
        )


def store_order_ids(store: FakeStore) -> set[int]:
    return {parse_shopify_id(store.order_node(i)["id"]) for i in range(store.counts["orders"])}


async def sync(env: BackfillEnvironment, backend: Backend, tenant_id: int, mode: str) -> SyncJob:
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, tenant_id)
        job = await create_sync_job(session, tenant, mode, None)
    await run_sync_job(env, job.id)
    async with backend.sessions() as session:
        return await session.get_one(SyncJob, job.id)


async def test_a_store_with_its_own_base_is_served_by_its_simulator(
    backend: Backend, simulators: tuple[FakeShopServer, FakeShopServer]
) -> None:
    own_server, global_server = simulators
    own, decoy, real = (
        own_server.store(SIMULATED),
        global_server.store(SIMULATED),
        global_server.store(REAL),
    )
    # An expiring token about to lapse: its refresh must go to the store's own simulator too.
    grant = own.issue_expiring_token(expires_in=3600)
    simulated_id = await create_tenant(backend.sessions, SIMULATED)
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, simulated_id)
        tenant.admin_base_url = own_server.admin_base_url_template
        set_access_token(BOX, tenant, grant["access_token"])
        tenant.refresh_token_encrypted = BOX.encrypt(grant["refresh_token"])
        tenant.access_token_expires_at = datetime.now(UTC) + timedelta(seconds=30)
    real_id = await create_tenant(backend.sessions, REAL, access_token="shpat_real")

    transport = RecordingTransport()
    engine = create_engine(as_app_role(backend.url))
    try:
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            env = BackfillEnvironment(
                sessions=create_session_factory(engine),
                http=http,
                box=BOX,
                admin_base_url=global_server.admin_base_url_template,
                api_version="2026-10",
                app=AppCredentials(own.tokens.client_id, own.tokens.client_secret),
                bulk_poll_interval=0.01,
            )
            assert (await sync(env, backend, simulated_id, "full")).status == "succeeded"
            assert (await sync(env, backend, simulated_id, "bulk")).status == "succeeded"
            await sync_subscriptions(env, simulated_id, URI)
            run = await reconcile(env, simulated_id)
            assert (await sync(env, backend, real_id, "full")).status == "succeeded"
    finally:
        await engine.dispose()

    assert await order_ids(backend, simulated_id) == store_order_ids(own)
    assert await order_ids(backend, real_id) == store_order_ids(real)
    assert store_order_ids(own) != store_order_ids(decoy)
    assert own.stats.token_refreshes == 1
    assert own.stats.bulk_operations >= 1
    assert own.stats.downloads >= 1
    assert {s.topic for s in own.subscriptions.list()}
    assert not decoy.subscriptions.list()
    assert run.status in ("clean", "repaired"), run.report
    # The global simulator never heard of the simulated store; the real store went there only.
    assert (decoy.stats.requests, decoy.stats.token_refreshes) == (0, 0)
    assert real.stats.answered > 0
    assert not [s for s in transport.to(global_server) if SIMULATED in s.path]
    assert {SIMULATED} == {
        s.path.split("/")[1] for s in transport.to(own_server) if "/_fakeshop/" not in s.path
    }
    assert len(transport.sent) == len(transport.to(own_server)) + len(transport.to(global_server))


async def test_periodic_checks_of_a_simulated_store_never_reach_shopify(
    backend: Backend, simulators: tuple[FakeShopServer, FakeShopServer]
) -> None:
    """`serve` without SHOPIFY_ADMIN_BASE_URL: its watchdog and reconcile ticks take the
    simulated store to its simulator, and only the real store to https://<shop>."""
    own_server, _ = simulators
    own = own_server.store(SIMULATED)
    simulated_id = await create_tenant(backend.sessions, SIMULATED, access_token="shpat_simulated")
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, simulated_id)
        tenant.admin_base_url = own_server.admin_base_url_template
    real_id = await create_tenant(backend.sessions, REAL, access_token="shpat_real")
    for tenant_id in (simulated_id, real_id):  # reconcile compares stores backfilled once
        await create_finished_job(backend.sessions, tenant_id)

    settings = Settings.from_env(
        {
            "DATABASE_URL": as_app_role(backend.url),
            "SECRET_KEY": "admin-base-test",
            "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
            "PUBLIC_URL": PUBLIC_URL,
        }
    )
    maintenance = maintenance_for(settings)
    assert maintenance is not None
    transport = RecordingTransport()
    engine = create_engine(settings.database_url)
    try:
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            env = backfill_environment(settings, create_session_factory(engine), http)
            await MaintenanceLoop(env, maintenance).tick()
    finally:
        await engine.dispose()

    leaving = [s for s in transport.sent if s.host != "127.0.0.1"]
    assert leaving, "the real store's checks should have been addressed to Shopify"
    assert {(s.scheme, s.host, s.token) for s in leaving} == {("https", REAL, "shpat_real")}
    assert {s.path for s in leaving} == {f"/admin/api/{settings.api_version}/graphql.json"}
    assert "shpat_simulated" not in {s.token for s in leaving}
    # The simulated store's checks were done, at its simulator: subscriptions made there and
    # a reconcile run that did not fail.
    assert {s.uri for s in own.subscriptions.list()} == {URI}
    assert {s.token for s in transport.to(own_server)} == {"shpat_simulated"}
    async with backend.sessions() as session:
        rows = await session.execute(select(ReconcileRun.tenant_id, ReconcileRun.status))
        runs: dict[int, str] = {tenant_id: status for tenant_id, status in rows}
        real_status = await session.scalar(
            select(Tenant.credentials_status).where(Tenant.id == real_id)
        )
    assert runs[simulated_id] in ("clean", "repaired")
    # Shopify refused the fake token during the watchdog: not called again by reconcile.
    assert real_id not in runs
    assert real_status == "invalid"


async def test_tenants_add_admin_url_is_checked_listed_and_removable(
    backend: Backend, tmp_path: Path
) -> None:
    cli = Cli(tmp_path, cli_env(backend.url))
    base = "http://127.0.0.1:8081/{shop}/admin/api/{version}"
    for given, says in (
        ("http://127.0.0.1:8081", "has no {version}"),
        ("https://{shop}/admin/api/{version}", "is Shopify"),
        ("http://me:hunter2@127.0.0.1:8081/{version}", "holds credentials"),
    ):
        refused = await cli.fails(
            "tenants", "add", "--shop", SIMULATED, "--admin-url", given, code=2
        )
        assert says in refused.stderr
        assert "--admin-url" in refused.stderr
        assert "hunter2" not in refused.output
    assert await admin_bases(backend) == {}  # refused before anything was written

    await cli.ok(
        "tenants", "add", "--shop", SIMULATED, "--access-token", "t", "--admin-url", f"{base}/"
    )
    await cli.ok("tenants", "add", "--shop", REAL, "--access-token", "t")
    assert await admin_bases(backend) == {SIMULATED: base, REAL: None}
    listed = (await cli.ok("tenants", "list")).stdout.splitlines()
    assert [line for line in listed if base in line] == [
        line for line in listed if SIMULATED in line
    ], listed
    # Updating a store's secrets leaves its base alone; '' removes it.
    await cli.ok("tenants", "add", "--shop", SIMULATED, "--webhook-secret", "s")
    assert (await admin_bases(backend))[SIMULATED] == base
    await cli.ok("tenants", "add", "--shop", SIMULATED, "--admin-url", "")
    assert await admin_bases(backend) == {SIMULATED: None, REAL: None}
    assert base not in (await cli.ok("tenants", "list")).stdout


async def admin_bases(backend: Backend) -> dict[str, str | None]:
    async with backend.sessions() as session:
        rows = await session.execute(select(Tenant.shop_domain, Tenant.admin_base_url))
        return {shop: base for shop, base in rows}
