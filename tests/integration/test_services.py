"""The use-case services (replay, start sync, prune, add store, add user, rotate keys) called
directly, on both backends; on PostgreSQL as the service's role, so row-level security
applies to what each one reads and writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.maintenance import prune_events
from backfill.sync import (
    NoToken,
    StoreInactive,
    StoreUnknown,
    SyncAlreadyRunning,
    job_outcome,
    start_sync,
)
from handlers.events import Store, replay_events
from models import (
    Order,
    SecretBox,
    SyncJob,
    Tenant,
    User,
    UserSession,
    UserTenant,
    WebhookEvent,
    create_engine,
    create_session_factory,
    utcnow,
)
from models.statuses import EventStatus, SyncMode, SyncStatus, SyncTrigger, TenantStatus
from receiver.auth import (
    InvalidEmail,
    PasswordTooShort,
    add_user,
    token_digest,
    verify_password,
)
from receiver.samples import sample_payload
from receiver.tenants import (
    StoreCredentials,
    Undecryptable,
    UnknownStore,
    access_token,
    add_store,
    rotate_keys,
    webhook_secrets,
)
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, as_app_role
from tests.factories import OTHER_SHOP, SHOP, create_tenant
from tests.integration.test_cli import Cli, cli_env

PASSWORD = "correct horse battery"
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """What the service runs with: the app role on PostgreSQL (not the tables' owner)."""
    if backend.name != "postgresql":
        yield backend.sessions
        return
    engine = create_engine(as_app_role(backend.url))
    yield create_session_factory(engine)
    await engine.dispose()


def order_body(shop: str, order_id: int) -> dict[str, Any]:
    return sample_payload("orders/create", shop) | {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
    }


async def stored_event(
    backend: Backend, shop: str, tenant_id: int | None, order_id: int, status: str
) -> int:
    async with backend.sessions() as session, session.begin():
        event = WebhookEvent(
            tenant_id=tenant_id,
            shop_domain=shop,
            topic="orders/create",
            dedupe_key=f"order-{order_id}",
            received_at=utcnow(),
            status=status,
            error="handler failed" if status == EventStatus.FAILED else None,
            attempts=1,
            payload=order_body(shop, order_id),
        )
        session.add(event)
        await session.flush()
        return event.id


async def orders_by_store(backend: Backend) -> set[tuple[int, int]]:
    async with backend.sessions() as session:
        rows = await session.execute(select(Order.tenant_id, Order.shopify_id))
        return {(tenant_id, order_id) for tenant_id, order_id in rows}


# --- replay -----------------------------------------------------------------------------------


async def test_replay_by_status_applies_every_store_s_failed_events(backend, sessions):
    """One transaction, events of two stores and one delivered before its store was added:
    each is applied under its own store's scope, and the next one is looked at unscoped."""
    alpha = await create_tenant(backend.sessions, SHOP)
    beta = await create_tenant(backend.sessions, OTHER_SHOP)
    first = await stored_event(backend, SHOP, alpha, 11, EventStatus.FAILED)
    second = await stored_event(backend, OTHER_SHOP, beta, 12, EventStatus.FAILED)
    early = await stored_event(backend, OTHER_SHOP, None, 13, EventStatus.FAILED)
    await stored_event(backend, SHOP, alpha, 14, EventStatus.PROCESSED)

    report = await replay_events(sessions, status=EventStatus.FAILED)

    assert [(item.event_id, item.status) for item in report.events] == [
        (first, EventStatus.PROCESSED),
        (second, EventStatus.PROCESSED),
        (early, EventStatus.PROCESSED),
    ]
    assert not report.any_failed
    assert await orders_by_store(backend) == {(alpha, 11), (beta, 12), (beta, 13)}
    async with backend.sessions() as session:
        rows = await session.execute(
            select(WebhookEvent.id, WebhookEvent.tenant_id, WebhookEvent.attempts)
        )
        assert {row.id: (row.tenant_id, row.attempts) for row in rows}[early] == (beta, 2)


async def test_a_store_s_replay_never_reaches_another_store_s_event(backend, sessions):
    alpha = await create_tenant(backend.sessions, SHOP)
    beta = await create_tenant(backend.sessions, OTHER_SHOP)
    theirs = await stored_event(backend, OTHER_SHOP, beta, 21, EventStatus.FAILED)
    early = await stored_event(backend, SHOP, None, 22, EventStatus.IGNORED)

    refused = await replay_events(sessions, event_id=theirs, store=Store(alpha, SHOP))
    ours = await replay_events(sessions, event_id=early, store=Store(alpha, SHOP))

    assert refused.events == ()
    assert [(item.event_id, item.status) for item in ours.events] == [
        (early, EventStatus.PROCESSED)
    ]
    assert await orders_by_store(backend) == {(alpha, 22)}


async def test_replay_needs_exactly_one_selection(sessions):
    with pytest.raises(ValueError, match="exactly one"):
        await replay_events(sessions)


# --- start a sync -------------------------------------------------------------------------------


async def test_start_sync_creates_one_job_and_refuses_a_second(backend, sessions):
    tenant_id = await create_tenant(backend.sessions, SHOP)
    started = await start_sync(sessions, tenant_id, SyncMode.FULL, ["orders"])
    assert (started.shop_domain, started.job.status) == (SHOP, SyncStatus.QUEUED)
    assert started.job.resources == ["orders"]

    with pytest.raises(SyncAlreadyRunning) as running:
        await start_sync(sessions, tenant_id, SyncMode.INCREMENTAL)
    assert running.value.job.id == started.job.id
    assert await job_outcome(sessions, tenant_id, started.job.id) == (
        await job_outcome(backend.sessions, tenant_id, started.job.id)
    )
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SyncJob)) == 1


async def test_start_sync_refusals_are_typed_and_write_nothing(backend, sessions):
    gone = await create_tenant(backend.sessions, SHOP, status=TenantStatus.UNINSTALLED)
    tokenless = await create_tenant(backend.sessions, OTHER_SHOP)

    with pytest.raises(StoreUnknown, match="no store with tenantId 999"):
        await start_sync(sessions, 999, SyncMode.FULL)
    with pytest.raises(StoreInactive, match=f"{SHOP} is uninstalled; reinstall before syncing"):
        await start_sync(sessions, gone, SyncMode.FULL)
    with pytest.raises(NoToken, match="no access token"):
        await start_sync(sessions, tokenless, SyncMode.FULL, require_token=True)
    with pytest.raises(ValueError, match="unknown resources refunds"):
        await start_sync(sessions, tokenless, SyncMode.FULL, ["refunds"])
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SyncJob)) == 0


async def test_start_sync_takes_the_watchdog_s_window(backend, sessions):
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token="shpat_x")
    since = utcnow() - timedelta(hours=2)
    started = await start_sync(
        sessions,
        tenant_id,
        SyncMode.INCREMENTAL,
        ["orders"],
        since=since,
        trigger=SyncTrigger.WATCHDOG,
        require_token=True,
    )
    async with backend.sessions() as session:
        job = await session.get_one(SyncJob, started.job.id)
    assert (job.mode, job.trigger, job.since) == (SyncMode.INCREMENTAL, SyncTrigger.WATCHDOG, since)


# --- prune --------------------------------------------------------------------------------------


async def test_prune_deletes_and_empties_only_what_it_is_asked_to(backend, sessions):
    alpha = await create_tenant(backend.sessions, SHOP)
    beta = await create_tenant(backend.sessions, OTHER_SHOP)
    done = await stored_event(backend, SHOP, alpha, 31, EventStatus.PROCESSED)
    other = await stored_event(backend, OTHER_SHOP, beta, 32, EventStatus.IGNORED)
    failed = await stored_event(backend, SHOP, alpha, 33, EventStatus.FAILED)
    later = utcnow() + timedelta(days=2)

    emptied = await prune_events(sessions, payloads_older_than=timedelta(days=1), now=later)
    assert (emptied.deleted, emptied.emptied) == (0, 2)
    async with backend.sessions() as session:
        rows = await session.execute(select(WebhookEvent.id, WebhookEvent.payload))
        payloads = {row.id: row.payload for row in rows}
    assert payloads[done] is None
    assert payloads[other] is None
    assert payloads[failed] is not None  # what a replay applies

    kept = await prune_events(sessions, older_than=timedelta(days=3), now=later)
    assert (kept.deleted, kept.emptied) == (0, 0)
    pruned = await prune_events(
        sessions, older_than=timedelta(days=1), include_failed=True, now=later
    )
    assert (pruned.deleted, pruned.emptied) == (3, 0)


# --- stores, users, keys ------------------------------------------------------------------------


async def test_add_store_creates_then_updates_and_reactivates(backend, sessions):
    box = SecretBox([TEST_ENCRYPTION_KEY])
    added = await add_store(
        sessions,
        box,
        SHOP,
        StoreCredentials(webhook_secrets=("new", "old"), access_token="shpat_1"),
    )
    assert added.created
    assert added.shop_domain == SHOP
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, added.tenant_id)
        tenant.status = TenantStatus.UNINSTALLED

    again = await add_store(
        sessions,
        box,
        SHOP,
        StoreCredentials(access_token="shpat_2", token_expires_in=timedelta(hours=1)),
    )
    assert (again.tenant_id, again.created) == (added.tenant_id, False)
    async with backend.sessions() as session:
        tenant = await session.get_one(Tenant, added.tenant_id)
    assert tenant.status == TenantStatus.ACTIVE
    assert webhook_secrets(box, tenant) == ["new", "old"]  # not given again: kept
    assert access_token(box, tenant) == "shpat_2"
    assert tenant.access_token_expires_at is not None


async def test_add_user_applies_the_password_rule_and_resets_sessions(backend, sessions):
    await create_tenant(backend.sessions, SHOP)
    with pytest.raises(PasswordTooShort, match="at least 10 characters"):
        await add_user(sessions, "viewer@example.com", "short", admin=False)
    with pytest.raises(InvalidEmail):
        await add_user(sessions, "not-an-address", PASSWORD, admin=False)
    with pytest.raises(UnknownStore, match=f"unknown store {OTHER_SHOP}"):
        await add_user(sessions, "viewer@example.com", PASSWORD, admin=False, shops=(OTHER_SHOP,))
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(User)) == 0

    added = await add_user(sessions, "Viewer@Example.com", PASSWORD, admin=False, shops=(SHOP,))
    assert (added.email, added.created, added.is_admin, added.store_count) == (
        "viewer@example.com",
        True,
        False,
        1,
    )
    async with backend.sessions() as session, session.begin():
        user = await session.scalar(select(User))
        assert user is not None
        session.add(
            UserSession(
                user_id=user.id,
                token_sha256=token_digest("old-session"),
                created_at=utcnow(),
                expires_at=utcnow() + timedelta(hours=1),
            )
        )

    reset = await add_user(sessions, "viewer@example.com", "another password", admin=True)
    assert (reset.created, reset.is_admin, reset.store_count) == (False, True, 0)
    async with backend.sessions() as session:
        user = await session.scalar(select(User))
        assert user is not None
        assert verify_password(user.password_hash, "another password")
        assert await session.scalar(select(func.count()).select_from(UserSession)) == 0
        assert await session.scalar(select(func.count()).select_from(UserTenant)) == 0


async def test_rotate_keys_is_all_or_nothing(backend, sessions):
    old = SecretBox([TEST_ENCRYPTION_KEY])
    await add_store(sessions, old, SHOP, StoreCredentials(webhook_secrets=("s",)))
    await add_store(
        sessions, old, OTHER_SHOP, StoreCredentials(access_token="t", refresh_token="r")
    )
    stranger = SecretBox([NEW_KEY])
    with pytest.raises(Undecryptable, match="cannot be decrypted"):
        await rotate_keys(sessions, stranger)

    rotation = await rotate_keys(sessions, SecretBox([NEW_KEY, TEST_ENCRYPTION_KEY]))
    assert (rotation.values, rotation.stores) == (3, 2)
    async with backend.sessions() as session:
        tenants = list(await session.scalars(select(Tenant).order_by(Tenant.id)))
    assert webhook_secrets(stranger, tenants[0]) == ["s"]
    assert access_token(stranger, tenants[1]) == "t"


# --- the command line presents the services' refusals -------------------------------------------


async def test_backfill_command_refuses_a_store_it_cannot_sync(backend, tmp_path):
    cli = Cli(tmp_path, cli_env(backend.url))
    await create_tenant(backend.sessions, SHOP)
    await create_tenant(backend.sessions, OTHER_SHOP, status=TenantStatus.UNINSTALLED)

    tokenless = await cli.fails("backfill", SHOP, code=1)
    inactive = await cli.fails("backfill", OTHER_SHOP, code=1)
    unknown = await cli.fails("backfill", "nobody.myshopify.com", code=1)

    assert f"{SHOP}: no access token" in tokenless.stderr
    assert f"{OTHER_SHOP} is uninstalled; reinstall before syncing" in inactive.stderr
    assert "unknown store nobody.myshopify.com" in unknown.stderr
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SyncJob)) == 0


async def test_add_store_normalizes_the_domain(backend, sessions):
    added = await add_store(
        sessions, SecretBox([TEST_ENCRYPTION_KEY]), "Alpha-Store.MyShopify.com ", StoreCredentials()
    )
    assert added.shop_domain == SHOP
