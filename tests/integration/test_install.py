"""Installing the app (receiver/install.py) against the Shopify simulator over real HTTP on
loopback, on PostgreSQL and SQLite: the redirects are followed by hand, as a browser would.

What Shopify holds is read from the simulator (its token registry, its subscriptions), what
we stored from the database: never from what the code under test answered.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import func, select

from backfill.queue import procrastinate_app, run_worker
from backfill.runner import BackfillEnvironment
from backfill.subscriptions import INTENDED_TOPICS, app_scopes, enum_topic
from models import (
    Customer,
    SecretBox,
    SyncJob,
    Tenant,
    WebhookSubscription,
    create_engine,
    create_session_factory,
)
from receiver.overview import store_alerts
from receiver.samples import sample_payload
from receiver.settings import Secret, Settings
from tests.conftest import TEST_ENCRYPTION_KEY, Backend, ServedApp, as_app_role
from tests.conftest import settings_for as base_settings
from tests.factories import create_tenant, delivery
from tests.fakeshop import FakeShopServer, FakeStore
from tests.fakeshop.app import query_hmac
from tests.integration.test_cli import Cli, cli_env

SHOP = "installed-store.myshopify.com"
API_KEY = "test-api-key"
# As long as Shopify's (`shpss_` and 32 hex digits): PyJWT warns about shorter HMAC keys.
APP_SECRET = "shpss_0123456789abcdef0123456789abcdef"
WRONG_SECRET = "shpss_ffffffffffffffffffffffffffffffff"
PUBLIC_URL = "https://receiver.example.com"
BOX = SecretBox([TEST_ENCRYPTION_KEY])
CUSTOMERS = 4


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, FakeShopServer]]:
    store = FakeStore(
        SHOP,
        seed=15,
        customers=CUSTOMERS,
        products=2,
        orders=3,
        client_id=API_KEY,
        client_secret=APP_SECRET,
        scope="",
    )
    with FakeShopServer(store) as server:
        yield store, server


def install_settings(backend: Backend, server: FakeShopServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "api_secrets": (Secret(APP_SECRET),),
        "api_key": API_KEY,
        "public_url": PUBLIC_URL,
        "admin_base_url": server.admin_base_url_template,
        "oauth_base_url": f"{server.base_url}/{{shop}}/admin/oauth",
    }
    return base_settings(backend.url, **(values | overrides))


@pytest.fixture
def app(backend: Backend, simulator: tuple[FakeStore, FakeShopServer]) -> Iterator[ServedApp]:
    with ServedApp(install_settings(backend, simulator[1])) as served:
        yield served


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def authorize(browser: httpx.AsyncClient, app: ServedApp, shop: str = SHOP) -> str:
    """Start an install and let the simulated merchant approve it: the callback's path and
    query, as Shopify sends the browser back to PUBLIC_URL."""
    started = await browser.get(f"{app.base_url}/auth/install", params={"shop": shop})
    assert started.status_code == 302, started.text
    approved = await browser.get(started.headers["location"])
    assert approved.status_code == 302, approved.text
    location = approved.headers["location"]
    assert location.startswith(f"{PUBLIC_URL}/auth/callback?")
    return location.removeprefix(PUBLIC_URL)


def query_of(path: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(path).query))


def signed(query: dict[str, str], secret: str = APP_SECRET) -> str:
    """A callback path for `query`, signed the way Shopify signs it."""
    fields = {k: v for k, v in query.items() if k != "hmac"}
    return f"/auth/callback?{urlencode({**fields, 'hmac': query_hmac(fields, secret)})}"


async def run_queued_jobs(backend: Backend, app: ServedApp, server: FakeShopServer) -> None:
    """Let the jobs the install queued run to their end: on SQLite the served app's own
    in-process runner; on PostgreSQL a worker, as the app's role, that drains the queue."""
    if backend.name == "sqlite":
        await app.settle()
        return
    engine = create_engine(as_app_role(backend.url))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            env = BackfillEnvironment(
                sessions=create_session_factory(engine),
                http=client,
                box=BOX,
                admin_base_url=server.admin_base_url_template,
                api_version="2026-10",
            )
            queue = procrastinate_app(backend.url)
            async with queue.open_async():
                await run_worker(queue, env, concurrency=1, wait=False)
    finally:
        await engine.dispose()


async def tenants(backend: Backend) -> list[Tenant]:
    async with backend.sessions() as session:
        return list(await session.scalars(select(Tenant).order_by(Tenant.id)))


async def count(backend: Backend, model: type) -> int:
    async with backend.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def assert_nothing_stored(backend: Backend, store: FakeStore) -> None:
    assert await tenants(backend) == []
    assert await count(backend, SyncJob) == 0
    assert store.subscriptions.list() == []


async def assert_installed(
    backend: Backend, store: FakeStore, app: ServedApp, server: FakeShopServer
) -> Tenant:
    """The store is active with a working token held encrypted, subscribed to every topic
    we handle, and its initial backfill ran to the end."""
    await run_queued_jobs(backend, app, server)
    [tenant] = await tenants(backend)
    assert (tenant.shop_domain, tenant.status) == (SHOP, "active")
    assert tenant.access_token_encrypted
    assert tenant.refresh_token_encrypted
    token = BOX.decrypt(tenant.access_token_encrypted)
    assert token not in tenant.access_token_encrypted
    assert store.tokens.check(token) == "ok"
    assert tenant.access_token_expires_at is not None  # an expiring offline token
    assert tenant.shopify_shop_id == store.shop_id
    assert set((tenant.granted_scopes or "").split(",")) == set(app_scopes())
    at_shopify = sorted(s.topic for s in store.subscriptions.list())
    assert at_shopify == sorted(enum_topic(t) for t in INTENDED_TOPICS)
    assert {s.uri for s in store.subscriptions.list()} == {f"{PUBLIC_URL}/webhooks/shopify"}
    assert await count(backend, WebhookSubscription) == len(INTENDED_TOPICS)
    async with backend.sessions() as session:
        jobs = list(await session.scalars(select(SyncJob).where(SyncJob.tenant_id == tenant.id)))
        customers = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.tenant_id == tenant.id)
        )
    assert [(job.status, job.error) for job in jobs][-1] == ("succeeded", None)
    assert customers == CUSTOMERS
    return tenant


async def test_an_install_ends_with_the_store_synced(backend, simulator, app, browser):
    store, server = simulator
    started = await browser.get(f"{app.base_url}/auth/install", params={"shop": SHOP})
    authorize_url = urlsplit(started.headers["location"])
    assert f"{authorize_url.scheme}://{authorize_url.netloc}" == server.base_url
    assert authorize_url.path == f"/{SHOP}/admin/oauth/authorize"
    asked = query_of(started.headers["location"])
    assert asked["client_id"] == API_KEY
    assert asked["redirect_uri"] == f"{PUBLIC_URL}/auth/callback"
    assert set(asked["scope"].split(",")) == set(app_scopes())
    approved = await browser.get(started.headers["location"])
    callback = approved.headers["location"].removeprefix(PUBLIC_URL)

    landed = await browser.get(f"{app.base_url}{callback}")

    assert landed.status_code == 303, landed.text
    assert landed.headers["location"] == f"/stores/{SHOP}"
    await assert_installed(backend, store, app, server)


async def test_a_redacted_store_installs_again_and_starts_clean(backend, simulator, app, browser):
    store, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, status="redacted")
    landed = await browser.get(f"{app.base_url}{await authorize(browser, app)}")
    assert landed.status_code == 303, landed.text
    tenant = await assert_installed(backend, store, app, server)
    assert tenant.id == tenant_id


async def test_an_install_lands_on_after_install_url(backend, simulator, browser):
    store, server = simulator
    settings = install_settings(
        backend, server, after_install_url="https://app.example.com/welcome?shop={shop}"
    )
    with ServedApp(settings) as app:
        landed = await browser.get(f"{app.base_url}{await authorize(browser, app)}")
        assert landed.status_code == 303, landed.text
        assert landed.headers["location"] == f"https://app.example.com/welcome?shop={SHOP}"
        await assert_installed(backend, store, app, server)


async def test_a_missing_scope_is_flagged_on_the_dashboard_and_in_tenants_list(
    backend, simulator, app, browser, tmp_path
):
    """The grant lacks read_all_orders (Shopify approves it per app, so it is not asked for
    by default): the store's alerts and `tenants list` say so."""
    await browser.get(f"{app.base_url}{await authorize(browser, app)}")
    [tenant] = await tenants(backend)

    [alert] = [a for a in store_alerts(tenant, 0, [], None) if a.kind == "missing_scopes"]
    assert "read_all_orders" in alert.message
    listed = await Cli(tmp_path, cli_env(backend.url)).ok("tenants", "list")
    assert "missing scopes read_all_orders" in listed.stdout
    await run_queued_jobs(backend, app, simulator[1])


async def test_reinstall_after_uninstall(backend, simulator, app, browser):
    store, server = simulator
    await browser.get(f"{app.base_url}{await authorize(browser, app)}")
    first = await assert_installed(backend, store, app, server)
    # The merchant uninstalls: Shopify revokes the tokens and tells us.
    store.tokens.revoke_all()
    body, headers = delivery(
        "app/uninstalled",
        {**sample_payload("app/uninstalled", SHOP), "id": store.shop_id},
        shop=SHOP,
        secret=APP_SECRET,
    )
    uninstalled = await browser.post(app.webhook_url, content=body, headers=headers)
    assert uninstalled.status_code == 200
    [gone] = await tenants(backend)
    assert (gone.status, gone.access_token_encrypted) == ("uninstalled", None)

    landed = await browser.get(f"{app.base_url}{await authorize(browser, app)}")

    assert landed.status_code == 303, landed.text
    again = await assert_installed(backend, store, app, server)
    assert again.id == first.id
    assert BOX.decrypt(again.access_token_encrypted or "") != BOX.decrypt(
        first.access_token_encrypted or ""
    )
    assert await count(backend, SyncJob) == 2


# -- refusals: each a clear 4xx, and nothing stored -------------------------------------------


async def test_a_callback_without_hmac_is_refused(backend, simulator, app, browser):
    query = query_of(await authorize(browser, app))
    del query["hmac"]
    refused = await browser.get(f"{app.base_url}/auth/callback?{urlencode(query)}")
    assert refused.status_code == 401
    assert "hmac" in refused.json()["error"]
    await assert_nothing_stored(backend, simulator[0])


async def test_a_callback_with_a_wrong_hmac_is_refused(backend, simulator, app, browser):
    query = query_of(await authorize(browser, app))
    refused = await browser.get(f"{app.base_url}{signed(query, 'not-the-app-secret')}")
    assert refused.status_code == 401
    await assert_nothing_stored(backend, simulator[0])


async def test_a_reused_state_is_refused(backend, simulator, app, browser):
    callback = await authorize(browser, app)
    # The first use fails later (a code Shopify does not know), and still uses the state up.
    first = await browser.get(f"{app.base_url}{signed({**query_of(callback), 'code': 'x'})}")
    assert first.status_code == 400
    refused = await browser.get(f"{app.base_url}{callback}")
    assert refused.status_code == 403
    assert "state" in refused.json()["error"]
    await assert_nothing_stored(backend, simulator[0])


async def test_a_state_from_another_browser_is_refused(backend, simulator, app, browser):
    callback = await authorize(browser, app)
    async with httpx.AsyncClient(timeout=30) as other_browser:
        refused = await other_browser.get(f"{app.base_url}{callback}")
    assert refused.status_code == 403
    await assert_nothing_stored(backend, simulator[0])


async def test_a_stale_timestamp_is_refused(backend, simulator, app, browser):
    query = query_of(await authorize(browser, app))
    stale = signed({**query, "timestamp": str(int(time.time()) - 3600)})
    refused = await browser.get(f"{app.base_url}{stale}")
    assert refused.status_code == 400
    assert "timestamp" in refused.json()["error"]
    await assert_nothing_stored(backend, simulator[0])


@pytest.mark.parametrize("shop", ["evil.example.com", "installed-store.myshopify.com.evil.io"])
async def test_a_shop_outside_myshopify_is_refused(backend, simulator, app, browser, shop):
    started = await browser.get(f"{app.base_url}/auth/install", params={"shop": shop})
    assert started.status_code == 400
    assert "location" not in started.headers
    query = query_of(await authorize(browser, app))
    refused = await browser.get(f"{app.base_url}{signed({**query, 'shop': shop})}")
    assert refused.status_code == 400
    assert "myshopify.com" in refused.json()["error"]
    await assert_nothing_stored(backend, simulator[0])


async def test_a_used_code_is_refused(backend, simulator, app, browser):
    store, server = simulator
    callback = await authorize(browser, app)
    # Someone else exchanged the code first.
    async with httpx.AsyncClient() as thief:
        taken = await thief.post(
            server.token_url(),
            data={
                "client_id": API_KEY,
                "client_secret": APP_SECRET,
                "code": query_of(callback)["code"],
            },
        )
    assert taken.status_code == 200
    refused = await browser.get(f"{app.base_url}{callback}")
    assert refused.status_code == 400
    assert "start the install again" in refused.json()["error"]
    await assert_nothing_stored(backend, store)


async def test_a_signed_install_link_is_checked(backend, simulator, app, browser):
    link = {"shop": SHOP, "timestamp": str(int(time.time())), "host": "YWRtaW4"}
    good = {**link, "hmac": query_hmac(link, APP_SECRET)}
    started = await browser.get(f"{app.base_url}/auth/install?{urlencode(good)}")
    assert started.status_code == 302
    forged = {**link, "hmac": query_hmac(link, WRONG_SECRET)}
    refused = await browser.get(f"{app.base_url}/auth/install?{urlencode(forged)}")
    assert refused.status_code == 401
    await assert_nothing_stored(backend, simulator[0])


# -- token exchange (embedded apps) -----------------------------------------------------------


def session_token(secret: str = APP_SECRET, **overrides: object) -> str:
    """An App Bridge session token as Shopify signs it, with `overrides` to the claims."""
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": f"https://{SHOP}/admin",
        "dest": f"https://{SHOP}",
        "aud": API_KEY,
        "sub": "42",
        # Shopify's expire after a minute; these are made when tests are collected, which on a
        # slow run can be many minutes before one is used.
        "exp": now + 86_400,
        "nbf": now,
        "iat": now,
        "jti": "abc",
        "sid": "def",
    }
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm="HS256")


async def test_token_exchange_installs_the_store(backend, simulator, app, browser):
    store, server = simulator
    # Shopify-managed installation grants the scopes of the app's configuration
    # (shopify.app.toml), not ones asked for at install.
    store.tokens.scope = ",".join(app_scopes())
    token = store.tokens.session_token(SHOP)
    answered = await browser.post(
        f"{app.base_url}/auth/token-exchange", headers={"Authorization": f"Bearer {token}"}
    )
    assert answered.status_code == 200, answered.text
    assert store.tokens.installs == 1
    tenant = await assert_installed(backend, store, app, server)
    assert answered.json()["tenantId"] == tenant.id


@pytest.mark.parametrize(
    ("token", "status"),
    [
        pytest.param(session_token(WRONG_SECRET), 401, id="wrong-signature"),
        pytest.param(session_token(aud="another-app"), 401, id="wrong-audience"),
        pytest.param(session_token(exp=int(time.time()) - 3600), 401, id="expired"),
        pytest.param(session_token(nbf=int(time.time()) + 3600), 401, id="not-yet-valid"),
        pytest.param(session_token(dest="https://evil.example.com"), 400, id="foreign-dest"),
        pytest.param("not-a-jwt", 401, id="garbage"),
    ],
)
async def test_token_exchange_refusals(backend, simulator, app, browser, token, status):
    answered = await browser.post(
        f"{app.base_url}/auth/token-exchange", headers={"Authorization": f"Bearer {token}"}
    )
    assert answered.status_code == status
    assert answered.json()["error"]
    assert simulator[0].tokens.installs == 0
    await assert_nothing_stored(backend, simulator[0])


async def test_token_exchange_needs_a_bearer_token(backend, simulator, app, browser):
    answered = await browser.post(f"{app.base_url}/auth/token-exchange")
    assert answered.status_code == 401
    await assert_nothing_stored(backend, simulator[0])


# -- hostile input: never a 500 ---------------------------------------------------------------

HOSTILE_QUERIES = [
    "",
    "shop=",
    "shop=%C3%A9.myshopify.com",
    f"shop={SHOP}&hmac=%C3%A9",
    f"shop={SHOP}&hmac=a&hmac=b",
    f"shop={SHOP}&hmac=zz&timestamp={'9' * 5000}",
    f"shop={SHOP}&code=x&state=y&hmac=%00",
]


@pytest.mark.parametrize("query", HOSTILE_QUERIES)
@pytest.mark.parametrize("route", ["/auth/install", "/auth/callback"])
async def test_hostile_queries_get_a_4xx(backend, simulator, app, browser, route, query):
    answered = await browser.get(f"{app.base_url}{route}?{query}")
    assert 400 <= answered.status_code < 500, answered.text
    await assert_nothing_stored(backend, simulator[0])


@pytest.mark.parametrize("timestamp", ["9" * 5000, "²", "-5", "1e9"])
async def test_signed_callbacks_with_odd_timestamps_get_a_400(
    backend, simulator, app, browser, timestamp
):
    query = query_of(await authorize(browser, app))
    answered = await browser.get(f"{app.base_url}{signed({**query, 'timestamp': timestamp})}")
    assert answered.status_code == 400
    await assert_nothing_stored(backend, simulator[0])


@pytest.mark.parametrize(
    "token",
    [
        session_token(dest="https://[::1"),
        session_token(dest=17),
        session_token(dest=f"http://{SHOP}"),
        jwt.encode({"dest": f"https://{SHOP}", "aud": API_KEY}, None, algorithm="none"),
        "a.b.c",
        "é",
    ],
)
async def test_hostile_session_tokens_get_a_4xx(backend, simulator, app, browser, token):
    answered = await browser.post(
        f"{app.base_url}/auth/token-exchange",
        headers={"Authorization": f"Bearer {token}".encode()},
    )
    assert 400 <= answered.status_code < 500, answered.text
    assert simulator[0].tokens.installs == 0
    await assert_nothing_stored(backend, simulator[0])


# -- operational mistakes: one line that says what to set -------------------------------------


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"api_key": None}, "SHOPIFY_API_KEY"),
        ({"api_secrets": ()}, "SHOPIFY_API_SECRET"),
        ({"public_url": None}, "PUBLIC_URL"),
    ],
)
async def test_an_unconfigured_install_says_what_to_set(
    backend, simulator, browser, overrides, named
):
    settings = install_settings(backend, simulator[1], **overrides)
    with ServedApp(settings) as app:
        answered = await browser.get(f"{app.base_url}/auth/install", params={"shop": SHOP})
        assert answered.status_code == 503
        assert named in answered.json()["error"]
        # Token exchange sends no one back, so it needs no PUBLIC_URL.
        if named != "PUBLIC_URL":
            exchanged = await browser.post(
                f"{app.base_url}/auth/token-exchange",
                headers={"Authorization": f"Bearer {session_token()}"},
            )
            assert exchanged.status_code == 503
            assert named in exchanged.json()["error"]
    await assert_nothing_stored(backend, simulator[0])
