"""The home page's per-store overview and the administration forms, over real HTTP on both
backends: figures and alerts from stored rows, CSRF, 403 for viewers, form errors (400, never
a 500), and what each form really stored."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from models import ApiToken, SecretBox, SyncJob, Tenant, User, UserTenant, utcnow
from receiver.overview import format_money, month_start
from receiver.tenants import access_token, webhook_secrets
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.factories import OTHER_SHOP, SHOP, create_tenant
from tests.integration.test_cli import cli
from tests.integration.test_delivery_health import subscribe
from tests.integration.test_pages import (
    ADMIN,
    CSRF,
    PASSWORD,
    VIEWER,
    add_event,
    add_order,
    create_user,
    csrf_of,
    sign_in,
)

__all__ = ["cli", "sign_in"]  # fixtures, imported for their use here

CARD = re.compile(r'data-shop="([^"]+)">(.*?)</a>', re.S)
TOKEN = re.compile(r'id="token-value">([^<]+)<')


def cards(html: str) -> dict[str, str]:
    return {match.group(1): match.group(2) for match in CARD.finditer(html)}


def alerts(card: str) -> set[str]:
    return set(re.findall(r'data-alert="([^"]+)"', card))


def figure(card: str, name: str) -> str:
    """The text of one figure of a card, tags and runs of blanks removed."""
    part = card.split(f'data-figure="{name}"', 1)[1].split('<span class="figure"', 1)[0]
    return " ".join(re.sub(r"<[^>]+>", " ", part.split(">", 1)[1]).split())


async def counts(backend) -> dict[str, int]:
    async with backend.sessions() as session:
        return {
            model.__tablename__: int(
                await session.scalar(select(func.count()).select_from(model)) or 0
            )
            for model in (Tenant, User, ApiToken)
        }


# -- money -----------------------------------------------------------------------------


def test_money_has_its_currency_and_thousands_separators():
    assert format_money(Decimal("5240764.97"), "USD") == "USD 5,240,764.97"
    assert format_money(Decimal("1000"), "EUR") == "EUR 1,000.00"
    assert format_money(Decimal("0.5000"), "GBP") == "GBP 0.50"
    assert format_money(Decimal("-1234.5"), "CAD") == "CAD -1,234.50"
    assert format_money(Decimal("12.345"), None) == "12.345"


# -- the home page ----------------------------------------------------------------------


async def test_no_store_yet_says_how_to_add_one(backend, sign_in):
    await create_user(backend, ADMIN, admin=True)
    await create_user(backend, VIEWER)
    admin = (await (await sign_in(ADMIN)).get("/")).text
    assert 'id="no-stores"' in admin
    assert 'href="/admin#add-store"' in admin
    assert "tenants add --shop" in admin
    viewer = (await (await sign_in(VIEWER)).get("/")).text
    assert 'id="no-stores"' in viewer
    assert "Ask an admin" in viewer
    assert "/admin" not in viewer


async def test_revenue_health_sync_and_alerts_per_store(backend, sign_in):
    now = utcnow()
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = month_start(now)
    ours = await create_tenant(backend.sessions, SHOP, access_token="shpat_ours")
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    # Today, this month (today too on the 1st), last month, and orders that never count.
    await add_order(backend, ours, 1, total="1234567.89", processed_at=today + (now - today) / 2)
    await add_order(backend, ours, 2, total="0.11", processed_at=first)
    await add_order(backend, ours, 3, total="50.00", currency="EUR", created_at=first)
    await add_order(backend, ours, 4, total="999.00", processed_at=first - timedelta(seconds=1))
    await add_order(backend, ours, 5, total="500.00", processed_at=now, cancelled=True)
    await add_order(backend, ours, 6, total="700.00", processed_at=now, deleted=True)
    await add_order(backend, theirs, 7, total="3.00", processed_at=now)
    # Webhooks: three in the last day, one failed; an older one does not count.
    for key, status in (("a", "processed"), ("b", "processed"), ("c", "failed")):
        await add_event(backend, ours, key, status=status, received_at=now - timedelta(hours=1))
    await add_event(backend, ours, "old", received_at=now - timedelta(days=2))
    # The other store: two dead events, a silent subscribed topic, a failed backfill.
    for key in ("d1", "d2"):
        await add_event(backend, theirs, key, status="dead", shop=OTHER_SHOP)
    await subscribe(backend, theirs, "products/update")
    for hour in range(72, 120):
        await add_event(
            backend,
            theirs,
            f"pu-{hour}",
            topic="products/update",
            shop=OTHER_SHOP,
            received_at=now - timedelta(hours=hour),
        )
    async with backend.sessions() as session, session.begin():
        session.add(
            SyncJob(
                tenant_id=ours,
                mode="bulk",
                status="succeeded",
                resources=["orders", "customers"],
                progress={"orders": {"count": 12000}, "customers": {"count": 345}},
                attempts=1,
                finished_at=now,
            )
        )
        session.add(
            SyncJob(
                tenant_id=theirs,
                mode="full",
                status="failed",
                resources=["orders"],
                progress={},
                attempts=1,
                error="boom",
                finished_at=now,
            )
        )
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)

    page = await client.get("/")
    assert page.status_code == 200
    home = cards(page.text)
    assert set(home) == {SHOP, OTHER_SHOP}
    card = home[SHOP]
    same_day = first == today
    expected_today = ["USD 1,234,567.89" if not same_day else "USD 1,234,568.00"]
    if same_day:
        expected_today.insert(0, "EUR 50.00")
    assert figure(card, "revenue-today") == "Revenue today " + " ".join(expected_today)
    assert figure(card, "revenue-month") == "This month EUR 50.00 USD 1,234,568.00"
    assert figure(card, "webhooks").startswith("Webhooks, 24 h 3 received, 1 failed last ")
    assert 'data-health="failing"' in card
    assert figure(card, "sync").startswith("Sync succeeded bulk · 12,345 records finished ")
    assert alerts(card) == {"none"}

    other = home[OTHER_SHOP]
    assert figure(other, "revenue-today") == "Revenue today USD 3.00"
    assert alerts(other) == {"no_token", "dead_events", "silent_topics", "sync_failed"}
    assert 'data-dead-events="2"' in other
    assert "2 dead events" in other
    assert "Silent for unusually long: products/update." in other
    assert f"webhooks sync {OTHER_SHOP}" in other


async def test_invalid_credentials_and_uninstalled_stores_are_flagged(backend, sign_in):
    bad = await create_tenant(backend.sessions, SHOP, access_token="shpat_refused")
    async with backend.sessions() as session, session.begin():
        tenant = await session.get_one(Tenant, bad)
        tenant.credentials_status = "invalid"
        tenant.credentials_error = "[API] Invalid API key or access token (unrecognized login)"
    await create_tenant(backend.sessions, OTHER_SHOP, status="uninstalled")
    await create_user(backend, ADMIN, admin=True)
    home = cards((await (await sign_in(ADMIN)).get("/")).text)
    assert alerts(home[SHOP]) == {"invalid_credentials"}
    assert "unrecognized login" in home[SHOP]
    assert "no orders today" in figure(home[SHOP], "revenue-today")
    assert "never backfilled" in figure(home[SHOP], "sync")
    assert alerts(home[OTHER_SHOP]) == {"uninstalled"}


async def test_a_viewer_sees_their_stores_and_no_administration(backend, sign_in):
    ours = await create_tenant(backend.sessions, SHOP)
    await create_tenant(backend.sessions, OTHER_SHOP)
    await create_user(backend, VIEWER, tenants=(ours,))
    viewer = await sign_in(VIEWER)
    home = (await viewer.get("/")).text
    assert set(cards(home)) == {SHOP}
    assert 'href="/admin"' not in home
    assert (await viewer.get("/admin")).status_code == 403


# -- the administration forms --------------------------------------------------------------


async def test_forms_refuse_anonymous_forged_and_viewer_posts(backend, served, sign_in):
    ours = await create_tenant(backend.sessions, SHOP)
    await create_user(backend, ADMIN, admin=True)
    await create_user(backend, VIEWER, tenants=(ours,))
    before = await counts(backend)
    posts = {
        "/admin/stores": {"shop": "new-store.myshopify.com"},
        "/admin/users": {"email": "new@example.com", "password": PASSWORD, "role": "admin"},
        "/admin/tokens": {"name": "ci"},
    }
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as anonymous:
        assert (await anonymous.get("/admin")).headers["location"] == "/login"
        for path, data in posts.items():
            response = await anonymous.post(path, data=data)
            assert (response.status_code, response.headers["location"]) == (303, "/login")
    admin = await sign_in(ADMIN)
    viewer = await sign_in(VIEWER)
    viewer_csrf = await csrf_of(viewer)
    for path, data in posts.items():
        forged = await admin.post(path, data=data)  # no CSRF token
        assert forged.status_code == 403, path
        assert "Reload the page" in forged.text
        wrong = await admin.post(path, data={**data, "csrf_token": viewer_csrf})
        assert wrong.status_code == 403, path
        as_json = await admin.post(path, json={**data, "csrf_token": await csrf_of(admin)})
        assert as_json.status_code == 403, path
        refused = await viewer.post(path, data={**data, "csrf_token": viewer_csrf})
        assert refused.status_code == 403, path
        assert "needs an admin" in refused.text
    assert await counts(backend) == before


@pytest.mark.parametrize(
    ("path", "data", "form", "message"),
    [
        ("/admin/stores", {"shop": "not a shop"}, "store", "NAME.myshopify.com"),
        ("/admin/stores", {"shop": ""}, "store", "NAME.myshopify.com"),
        ("/admin/stores", {"shop": "x\x00.myshopify.com"}, "store", "NAME.myshopify.com"),
        (
            "/admin/stores",
            {"shop": "sim.myshopify.com", "admin_url": "http://127.0.0.1:8080/admin"},
            "store",
            "has no {version}",
        ),
        (
            "/admin/stores",
            {"shop": "sim.myshopify.com", "admin_url": "https://sim.myshopify.com/{version}"},
            "store",
            "is Shopify",
        ),
        (
            "/admin/stores",
            {"shop": "sim.myshopify.com", "admin_url": "http://[::1/{version}"},
            "store",
            "Admin API base",
        ),
        ("/admin/users", {"email": "nobody", "password": PASSWORD}, "user", "email address"),
        ("/admin/users", {"email": "a@example.com", "password": "short"}, "user", "at least 10"),
        (
            "/admin/users",
            {"email": "a@example.com", "password": PASSWORD, "stores": "gone.myshopify.com"},
            "user",
            "does not exist",
        ),
        (
            "/admin/users",
            {"email": "a@example.com", "password": PASSWORD, "stores": "<b>not a shop"},
            "user",
            "does not exist",
        ),
        ("/admin/users", {"email": ADMIN.upper(), "password": PASSWORD}, "user", "your own"),
        ("/admin/tokens", {"name": "   "}, "token", "Invalid name"),
        ("/admin/tokens", {"name": "bad\x00name"}, "token", "Invalid name"),
        ("/admin/tokens", {"name": "n" * 101}, "token", "Invalid name"),
        ("/admin/tokens", {"name": "ci", "stores": "gone.myshopify.com"}, "token", "reload"),
    ],
)
async def test_bad_input_is_a_form_error(backend, sign_in, path, data, form, message):
    await create_user(backend, ADMIN, admin=True)
    before = await counts(backend)
    admin = await sign_in(ADMIN)
    response = await admin.post(path, data={**data, "csrf_token": await csrf_of(admin)})
    assert response.status_code == 400, response.text
    error = response.text.split(f'id="{form}-error">', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert "<b>" not in response.text  # what was typed comes back escaped
    assert await counts(backend) == before


async def test_admin_adds_a_store_with_its_credentials(backend, sign_in):
    await create_user(backend, ADMIN, admin=True)
    admin = await sign_in(ADMIN)
    data = {
        "shop": " New-Store.myshopify.com ",
        "access_token": "shpat_from_the_form",
        "webhook_secret": "store-secret",
        "csrf_token": await csrf_of(admin),
    }
    response = await admin.post("/admin/stores", data=data)
    assert response.status_code == 200, response.text
    assert "Added store new-store.myshopify.com." in response.text
    box = SecretBox([TEST_ENCRYPTION_KEY])
    async with backend.sessions() as session:
        tenant = await session.scalar(
            select(Tenant).where(Tenant.shop_domain == "new-store.myshopify.com")
        )
        assert tenant is not None
        assert access_token(box, tenant) == "shpat_from_the_form"
        assert webhook_secrets(box, tenant) == ["store-secret"]
    assert "shpat_from_the_form" not in response.text
    # On the home page, with nothing to flag: it has a token.
    card = cards((await admin.get("/")).text)["new-store.myshopify.com"]
    assert alerts(card) == {"none"}

    # A simulated store keeps its own Admin API base, as `tenants add --admin-url` does.
    simulated = await admin.post(
        "/admin/stores",
        data={
            "shop": "sim.myshopify.com",
            "admin_url": "http://127.0.0.1:8080/{shop}/admin/api/{version}/",
            "csrf_token": data["csrf_token"],
        },
    )
    assert simulated.status_code == 200, simulated.text
    async with backend.sessions() as session:
        base = await session.scalar(
            select(Tenant.admin_base_url).where(Tenant.shop_domain == "sim.myshopify.com")
        )
    assert base == "http://127.0.0.1:8080/{shop}/admin/api/{version}"

    # Without a token the store is added and the notice and home page say what is missing.
    bare = await admin.post(
        "/admin/stores", data={"shop": "bare.myshopify.com", "csrf_token": data["csrf_token"]}
    )
    assert "no access token yet" in bare.text
    assert alerts(cards((await admin.get("/")).text)["bare.myshopify.com"]) == {"no_token"}


async def test_admin_adds_a_viewer_who_can_sign_in_and_see_their_store(backend, sign_in):
    ours = await create_tenant(backend.sessions, SHOP)
    await create_tenant(backend.sessions, OTHER_SHOP)
    await create_user(backend, ADMIN, admin=True)
    admin = await sign_in(ADMIN)
    data = {
        "email": "Colleague@Example.com",
        "password": "a brand new password",
        "role": "viewer",
        "stores": [SHOP],
        "csrf_token": await csrf_of(admin),
    }
    response = await admin.post("/admin/users", data=data)
    assert response.status_code == 200, response.text
    assert "Added colleague@example.com (viewer of 1 store(s))." in response.text
    assert 'data-email="colleague@example.com"' in response.text
    async with backend.sessions() as session:
        user = await session.scalar(select(User).where(User.email == "colleague@example.com"))
        assert user is not None
        assert not user.is_admin
        stores = await session.scalars(
            select(UserTenant.tenant_id).where(UserTenant.user_id == user.id)
        )
        assert list(stores) == [ours]
    async with httpx.AsyncClient(base_url=str(admin.base_url), timeout=10) as colleague:
        login = await colleague.get("/login")
        token = CSRF.search(login.text)
        assert token
        signed = await colleague.post(
            "/login",
            data={
                "email": "colleague@example.com",
                "password": "a brand new password",
                "csrf_token": token.group(1),
            },
        )
        assert signed.status_code == 303
        assert set(cards((await colleague.get("/")).text)) == {SHOP}


async def test_admin_creates_a_scoped_token_shown_once(backend, sign_in, served):
    await create_tenant(backend.sessions, SHOP)
    await create_tenant(backend.sessions, OTHER_SHOP)
    await create_user(backend, ADMIN, admin=True)
    admin = await sign_in(ADMIN)
    data = {
        "name": "reporting",
        "read_only": "on",
        "stores": [SHOP],
        "csrf_token": await csrf_of(admin),
    }
    response = await admin.post("/admin/tokens", data=data)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    match = TOKEN.search(response.text)
    assert match
    token = match.group(1)
    bearer = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as script:
        ours = await script.get("/api/stats", params={"shop": SHOP}, headers=bearer)
        assert ours.status_code == 200
        assert (
            await script.get("/api/stats", params={"shop": OTHER_SHOP}, headers=bearer)
        ).status_code == 404
        write = await script.post("/api/sync", json={"shop": SHOP}, headers=bearer)
        assert write.status_code == 403
    again = await admin.get("/admin")
    assert token not in again.text
    assert "reporting" in again.text
    async with backend.sessions() as session:
        row = await session.scalar(select(ApiToken).where(ApiToken.name == "reporting"))
        assert row is not None
        assert row.read_only
        assert row.token_sha256 != token


async def test_the_cli_and_the_form_share_the_token_rules(backend, cli):
    """`tokens create` now calls the service the form calls: same refusals, one line each."""
    await create_tenant(backend.sessions, SHOP)
    blank = await cli.fails("tokens", "create", "--name", "   ", code=2)
    assert "give the token a name" in blank.stderr
    unknown = await cli.fails("tokens", "create", "--name", "x", "--tenant", OTHER_SHOP, code=1)
    assert f"unknown store {OTHER_SHOP}" in unknown.stderr
    made = await cli.ok("tokens", "create", "--name", " nightly ", "--tenant", SHOP)
    async with backend.sessions() as session:
        [row] = list(await session.scalars(select(ApiToken)))
    assert row.name == "nightly"
    assert row.token_sha256 == hashlib.sha256(made.stdout.strip().encode()).hexdigest()
