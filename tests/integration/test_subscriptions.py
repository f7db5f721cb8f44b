"""Webhook subscription sync and status (backfill/subscriptions.py and `webhooks sync|status`)
against the Shopify simulator over real HTTP, on PostgreSQL and SQLite.

What Shopify holds is read from the simulator's registry, what we recorded from the database:
never from the report the code under test returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from backfill.client import BackfillError, CredentialsInvalid
from backfill.credentials import AppCredentials
from backfill.runner import BackfillEnvironment, admin_client_for
from backfill.subscriptions import (
    INTENDED_TOPICS,
    enum_topic,
    fetch_subscriptions,
    subscription_status,
    sync_subscriptions,
)
from handlers.resources import RESOURCES
from models import SecretBox, Tenant, WebhookSubscription, create_engine, create_session_factory
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import create_tenant
from tests.fakeshop import FakeShopServer, FakeStore
from tests.fakeshop.subscriptions import Subscription, SubscriptionError
from tests.integration.test_cli import Cli, cli_env

SHOP = "subscribed-store.myshopify.com"
PUBLIC_URL = "https://receiver.example.com"
URI = f"{PUBLIC_URL}/webhooks/shopify"
OLD_URI = "https://old-host.example.com/webhooks/shopify"
BOX = SecretBox([TEST_ENCRYPTION_KEY])
INTENDED_ENUMS = sorted(enum_topic(topic) for topic in INTENDED_TOPICS)


@dataclass
class Shop:
    store: FakeStore
    server: FakeShopServer
    tenant_id: int
    env: BackfillEnvironment
    backend: Backend

    def at_shopify(self) -> list[Subscription]:
        return self.store.subscriptions.list()

    async def recorded(self) -> list[WebhookSubscription]:
        async with self.backend.sessions() as session:
            rows = await session.scalars(
                select(WebhookSubscription)
                .where(WebhookSubscription.tenant_id == self.tenant_id)
                .order_by(WebhookSubscription.topic, WebhookSubscription.uri)
            )
            return list(rows)

    async def tenant(self) -> Tenant:
        async with self.backend.sessions() as session:
            return await session.get_one(Tenant, self.tenant_id)


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, FakeShopServer]]:
    store = FakeStore(SHOP, seed=5, customers=2, products=2, orders=2)
    with FakeShopServer(store) as server:
        yield store, server


@pytest.fixture
async def shop(
    backend: Backend, simulator: tuple[FakeStore, FakeShopServer]
) -> AsyncIterator[Shop]:
    store, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    # The service's own role, as in production: on PostgreSQL, row-level security binds it,
    # so a write that forgot its tenant scope fails here.
    engine = create_engine(as_app_role(backend.url))
    async with httpx.AsyncClient(timeout=10) as http:
        env = BackfillEnvironment(
            sessions=create_session_factory(engine),
            http=http,
            box=BOX,
            admin_base_url=server.admin_base_url_template,
            api_version="2026-10",
            app=AppCredentials(store.tokens.client_id, store.tokens.client_secret),
        )
        yield Shop(store, server, tenant_id, env, backend)
    await engine.dispose()


def snapshot(subscriptions: list[Subscription]) -> list[tuple[str, str, str, str]]:
    return [(s.id, s.topic, s.uri, s.updated_at) for s in subscriptions]


async def test_sync_subscribes_every_handled_topic_and_records_shopify_list(shop):
    report = await sync_subscriptions(shop.env, shop.tenant_id, URI)

    at_shopify = shop.at_shopify()
    assert sorted(s.topic for s in at_shopify) == INTENDED_ENUMS
    assert {(s.uri, s.format, s.filter) for s in at_shopify} == {(URI, "JSON", None)}
    assert "SHOP_REDACT" not in {s.topic for s in at_shopify}
    assert sorted(report.created) == sorted(INTENDED_TOPICS)
    assert report.missing_resources() == list(RESOURCES)  # every topic was missing
    assert report.errors == []

    recorded = await shop.recorded()
    assert sorted((r.topic, r.uri, r.shopify_gid) for r in recorded) == sorted(
        (topic, URI, s.id)
        for s in at_shopify
        for topic in INTENDED_TOPICS
        if enum_topic(topic) == s.topic
    )
    assert (await shop.tenant()).watchdog_checked_at is not None


async def test_sync_holds_the_store_shop_id(shop):
    """Destructive webhooks are checked on it (tests/integration/test_replays.py)."""
    await subscription_status(shop.env, shop.tenant_id, URI)
    assert (await shop.tenant()).shopify_shop_id is None  # status changes nothing of ours
    await sync_subscriptions(shop.env, shop.tenant_id, URI)
    assert (await shop.tenant()).shopify_shop_id == shop.store.shop_id


async def test_a_second_sync_changes_nothing(shop):
    await sync_subscriptions(shop.env, await shop.tenant(), URI)  # a Tenant works as an id does
    before = snapshot(shop.at_shopify())
    first_check = (await shop.tenant()).watchdog_checked_at
    gids = sorted(r.shopify_gid for r in await shop.recorded())

    report = await sync_subscriptions(shop.env, shop.tenant_id, URI)

    assert snapshot(shop.at_shopify()) == before
    assert (report.created, report.deleted, report.errors) == ([], [], [])
    assert report.in_sync
    assert sorted(report.ok) == sorted(INTENDED_TOPICS)
    assert sorted(r.shopify_gid for r in await shop.recorded()) == gids
    assert (await shop.tenant()).watchdog_checked_at > first_check


async def test_sync_deletes_strays_and_keeps_what_is_right(shop):
    registry = shop.store.subscriptions
    right = registry.create("customers/create", URI)
    old_address = registry.create("orders/create", OLD_URI)
    unhandled = registry.create("shop/update", URI)
    xml = registry.create("products/update", URI, format="XML")
    filtered = registry.create("orders/paid", URI, filter="total_price:>100")

    report = await sync_subscriptions(shop.env, shop.tenant_id, URI)

    at_shopify = shop.at_shopify()
    assert sorted(s.topic for s in at_shopify) == INTENDED_ENUMS
    assert {(s.uri, s.format, s.filter) for s in at_shopify} == {(URI, "JSON", None)}
    ids = {s.id for s in at_shopify}
    assert right.id in ids
    assert not ids & {old_address.id, unhandled.id, xml.id, filtered.id}
    assert sorted(s.gid for s in report.deleted) == sorted(
        [old_address.id, unhandled.id, xml.id, filtered.id]
    )
    assert "customers/create" not in report.created
    recorded = await shop.recorded()
    assert {r.uri for r in recorded} == {URI}
    assert sorted(r.shopify_gid for r in recorded) == sorted(ids)


async def test_status_sees_a_topic_shopify_dropped_and_sync_restores_it(shop):
    await sync_subscriptions(shop.env, shop.tenant_id, URI)
    checked = (await shop.tenant()).watchdog_checked_at
    [dropped] = shop.store.subscriptions.drop("orders/create")

    status = await subscription_status(shop.env, shop.tenant_id, URI)

    assert status.missing == ["orders/create"]
    assert status.missing_resources() == ["orders"]
    assert not status.in_sync
    assert "ORDERS_CREATE" not in {s.topic for s in shop.at_shopify()}  # status changed nothing
    recorded_topics = {r.topic for r in await shop.recorded()}
    assert recorded_topics == set(INTENDED_TOPICS) - {"orders/create"}  # snapshot refreshed
    assert (await shop.tenant()).watchdog_checked_at == checked

    restored = await sync_subscriptions(shop.env, shop.tenant_id, URI)

    assert restored.created == ["orders/create"]
    [back] = shop.store.subscriptions.for_topic("orders/create")
    assert back.uri == URI
    assert back.id != dropped.id
    rows = {r.topic: r.shopify_gid for r in await shop.recorded()}
    assert rows["orders/create"] == back.id
    after = await subscription_status(shop.env, shop.tenant_id, URI)
    assert after.in_sync
    assert after.missing == []


async def test_a_dry_run_changes_nothing_on_shopify(shop):
    stray = shop.store.subscriptions.create("orders/create", OLD_URI)

    report = await sync_subscriptions(shop.env, shop.tenant_id, URI, dry_run=True)

    assert snapshot(shop.at_shopify()) == snapshot([stray])
    assert (report.created, report.deleted) == ([], [])
    assert sorted(report.missing) == sorted(INTENDED_TOPICS)
    assert [s.gid for s in report.stray] == [stray.id]
    assert (await shop.tenant()).watchdog_checked_at is None


async def test_refused_subscriptions_are_reported_not_raised(shop):
    # Real Shopify refuses plain http addresses: a PUBLIC_URL without TLS.
    shop.store.subscriptions.https_only = True

    report = await sync_subscriptions(shop.env, shop.tenant_id, "http://receiver.example.com/x")

    assert shop.at_shopify() == []
    assert report.created == []
    assert len(report.errors) == len(INTENDED_TOPICS)
    assert "Address protocol http:// is not supported" in report.errors[0]
    assert await shop.recorded() == []


async def test_every_page_of_shopify_list_is_read(shop):
    for topic in INTENDED_TOPICS[:7]:
        shop.store.subscriptions.create(topic, URI)
    client = admin_client_for(shop.env, await shop.tenant())

    found = await fetch_subscriptions(client, page_size=3)

    assert [s.gid for s in found] == [s.id for s in shop.at_shopify()]
    assert [s.topic for s in found] == list(INTENDED_TOPICS[:7])


async def test_a_store_without_a_working_token_or_not_active_is_refused(shop):
    shop.store.revoke_token()
    with pytest.raises(CredentialsInvalid, match="refused"):
        await sync_subscriptions(shop.env, shop.tenant_id, URI)
    async with shop.backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, shop.tenant_id)
        tenant.status = "uninstalled"
    with pytest.raises(BackfillError, match="is uninstalled"):
        await subscription_status(shop.env, shop.tenant_id, URI)
    assert shop.at_shopify() == []


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def cli(shop: Shop, tmp_path: Path) -> Cli:
    return Cli(
        tmp_path,
        cli_env(
            as_app_role(shop.backend.url),
            SHOPIFY_ADMIN_BASE_URL=shop.server.admin_base_url_template,
            PUBLIC_URL=PUBLIC_URL,
        ),
    )


def lines(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines() if line.strip()]


async def test_cli_sync_then_status_then_drift_then_repair(shop, cli):
    synced = await cli.ok("webhooks", "sync", SHOP)
    created = sorted(fields[1] for fields in lines(synced.stdout) if fields[0] == "created")
    assert created == sorted(INTENDED_TOPICS)
    assert sorted(s.topic for s in shop.at_shopify()) == INTENDED_ENUMS

    status = await cli.ok("webhooks", "status", SHOP)
    assert sorted(f[1] for f in lines(status.stdout) if f[0] == "ok") == sorted(INTENDED_TOPICS)
    assert "in sync" in status.stdout

    shop.store.subscriptions.drop("orders/create")
    shop.store.subscriptions.create("products/update", OLD_URI)
    drift = await cli("webhooks", "status", SHOP)
    assert drift.code == 1, str(drift)
    assert "Traceback" not in drift.output
    rows = lines(drift.stdout)
    assert ["missing", "orders/create"] in rows
    assert ["stray", "products/update", OLD_URI, "(another", "address)"] in rows
    assert "drift: 1 missing, 1 stray" in drift.stdout

    dry = await cli.ok("webhooks", "sync", SHOP, "--dry-run")
    assert ["would", "create", "orders/create"] in lines(dry.stdout)
    assert "ORDERS_CREATE" not in {s.topic for s in shop.at_shopify()}

    repaired = await cli.ok("webhooks", "sync", SHOP)
    assert ["created", "orders/create"] in lines(repaired.stdout)
    assert ["deleted", "products/update", OLD_URI, "(another", "address)"] in lines(repaired.stdout)
    assert sorted(s.topic for s in shop.at_shopify()) == INTENDED_ENUMS
    assert {s.uri for s in shop.at_shopify()} == {URI}
    assert (await cli("webhooks", "status", SHOP)).code == 0


async def test_cli_refuses_without_public_url_an_unknown_store_and_a_revoked_token(shop, cli):
    env = {key: value for key, value in cli.env.items() if key != "PUBLIC_URL"}
    no_url = await Cli(cli.cwd, env).fails("webhooks", "sync", SHOP)
    assert "PUBLIC_URL is not set" in no_url.stderr

    unknown = await cli.fails("webhooks", "status", "nobody.myshopify.com")
    assert "unknown store nobody.myshopify.com" in unknown.stderr

    shop.store.revoke_token()
    refused = await cli.fails("webhooks", "sync", SHOP)
    assert f"{SHOP}: the token was refused and there is no refresh token" in refused.stderr
    assert shop.at_shopify() == []


async def test_cli_names_the_scope_to_grant_when_shopify_refuses_a_topic_for_want_of_it(
    shop, cli, monkeypatch
):
    # The store granted read_customers, read_orders and read_products (the simulator's
    # default): Shopify refuses the inventory level and fulfillment topics. Its message text
    # for that is not documented; the hint comes from the store's granted scopes instead.
    assert shop.store.tokens.scope == "read_customers,read_orders,read_products"
    registry = shop.store.subscriptions
    create = registry.create

    def refusing(topic, uri, **options):
        if topic.startswith(("INVENTORY_LEVELS_", "FULFILLMENTS_", "LOCATIONS_")):
            raise SubscriptionError("Access denied for this topic", ("topic",))
        return create(topic, uri, **options)

    monkeypatch.setattr(registry, "create", refusing)
    refused = await cli("webhooks", "sync", SHOP)
    assert refused.code == 1, str(refused)
    assert "Traceback" not in refused.output
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    by_topic = {line.split()[5].rstrip(":"): line for line in errors}
    assert sorted(by_topic) == sorted(
        topic
        for topic in INTENDED_TOPICS
        if topic.startswith(("inventory_levels/", "fulfillments/", "locations/"))
    )
    assert "grant" not in by_topic.get("orders/create", "")
    assert "not granted the read_inventory access scope" in by_topic["inventory_levels/update"]
    assert "not granted the read_fulfillments access scope" in by_topic["fulfillments/update"]
    assert "not granted the read_locations access scope" in by_topic["locations/create"]
    # Everything the store did grant was subscribed.
    assert "INVENTORY_ITEMS_UPDATE" in {s.topic for s in shop.at_shopify()}
