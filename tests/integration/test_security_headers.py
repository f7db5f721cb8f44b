"""Security headers on every response, and errors that tell the client nothing, over real HTTP
on both backends (plus the middleware's corner cases driven directly as ASGI)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from models import User, UserTenant
from receiver import stats, web
from receiver.app import create_app
from receiver.auth import hash_password
from receiver.security import CONTENT_SECURITY_POLICY, SecurityHeaders
from tests.conftest import ServedApp, settings_for
from tests.factories import SHOP, create_tenant, delivery

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
EXPECTED = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


def assert_hardened(response: httpx.Response, *, cacheable: bool = False) -> None:
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (where, name)
    if cacheable:
        assert "no-store" not in response.headers.get("cache-control", ""), where
    else:
        assert response.headers.get("cache-control") == "no-store", where


def test_the_policy_allows_no_inline_script_or_style():
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }


def test_app_is_built_without_debug_and_with_the_headers_outermost(tmp_path):
    app = create_app(settings_for(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))
    assert app.debug is False
    assert app.user_middleware[0].cls is SecurityHeaders


async def add_user(backend, email: str, *, admin: bool, tenants: tuple[int, ...] = ()) -> None:
    async with backend.sessions() as session, session.begin():
        user = User(email=email, password_hash=hash_password(PASSWORD), is_admin=admin)
        session.add(user)
        await session.flush()
        session.add_all(UserTenant(user_id=user.id, tenant_id=tenant) for tenant in tenants)


@pytest.fixture
async def client(served: ServedApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await client.get("/login")
    assert_hardened(page)
    token = CSRF.search(page.text)
    assert token
    return await client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)}
    )


async def test_every_kind_of_response_carries_the_headers(backend, served, client):
    tenant_id = await create_tenant(backend.sessions)
    await add_user(backend, "admin@example.com", admin=True)

    # Signed out: redirects to the login page, API refusals, the webhook endpoint.
    for path in ("/", f"/stores/{SHOP}"):
        assert_hardened(await client.get(path))
    assert_hardened(await client.get("/api/stats", params={"shop": SHOP}))
    assert_hardened(await client.get("/api/sync/1"))
    assert_hardened(await client.post("/api/sync", json={"tenantId": tenant_id}))
    assert_hardened(await client.post("/webhooks/shopify", content=b"{}"))
    body, headers = delivery("orders/create")
    accepted = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert accepted.status_code == 200
    assert_hardened(accepted)
    assert_hardened(await client.get("/healthz"))
    assert_hardened(await client.get("/readyz"))
    assert_hardened(await client.get("/metrics"))
    assert_hardened(await client.get("/no/such/page"))
    assert_hardened(await client.put("/login"))  # 405

    # The redirect after a good login carries the new session cookie: never cached.
    login = await sign_in(client, "admin@example.com")
    assert login.status_code == 303
    assert "receiver_session=" in login.headers["set-cookie"]
    assert_hardened(login)

    # Signed in: pages, their 404, the API's JSON in every outcome.
    home = await client.get("/")
    assert home.status_code == 200
    assert_hardened(home)
    store = await client.get(f"/stores/{SHOP}")
    assert store.status_code == 200
    assert_hardened(store)
    assert_hardened(await client.get("/stores/nowhere.myshopify.com"))
    stats_response = await client.get("/api/stats", params={"shop": SHOP})
    assert stats_response.status_code == 200
    assert_hardened(stats_response)
    assert_hardened(await client.get("/api/stats", params={"shop": "not a shop"}))
    assert_hardened(await client.get("/api/sync/999"))
    token = CSRF.search(home.text)
    assert token
    started = await client.post(
        "/api/sync", json={"tenantId": tenant_id}, headers={"X-CSRF-Token": token.group(1)}
    )
    assert started.status_code == 202
    assert_hardened(started)
    status = await client.get(started.json()["status_url"])
    assert status.status_code == 200
    assert_hardened(status)
    logout = await client.post("/logout", data={"csrf_token": token.group(1)})
    assert logout.status_code == 303
    assert_hardened(logout)

    # Static files keep their own caching (ETag, Last-Modified), with the other headers.
    for name in ("app.css", "dashboard.js"):
        asset = await client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert_hardened(asset, cacheable=True)


# -- unexpected exceptions ---------------------------------------------------------------

SECRET_DETAIL = "boom: SELECT password_hash FROM users"


def explode(*args: object, **kwargs: object) -> object:
    raise RuntimeError(f"{SECRET_DETAIL} at {__file__}")


async def answered_500(client: httpx.AsyncClient, served: ServedApp, path: str) -> httpx.Response:
    response = await client.get(path)
    # Barrier, not a wait (see test_hostile_input.post): let the server finish logging the
    # traceback before this test can fail and format its own report.
    async with httpx.AsyncClient(timeout=10) as barrier:
        await barrier.get(f"{served.base_url}/healthz")
    return response


def assert_bare_500(response: httpx.Response) -> None:
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert response.headers["content-type"].startswith("text/plain")
    for leak in ("Traceback", "boom", "password_hash", "RuntimeError", ".py", "/work/", "line "):
        assert leak not in response.text
    assert_hardened(response)


async def test_an_unexpected_exception_is_a_bare_500(backend, served, client, monkeypatch):
    """The served app runs in this process, so patching a function a handler calls makes that
    handler raise for real."""
    await create_tenant(backend.sessions)
    await add_user(backend, "admin@example.com", admin=True)
    assert (await sign_in(client, "admin@example.com")).status_code == 303

    monkeypatch.setattr(stats, "store_stats", explode)  # a JSON endpoint
    assert_bare_500(await answered_500(client, served, f"/api/stats?shop={SHOP}"))
    monkeypatch.setattr(web, "session_user", explode)  # an HTML page
    assert_bare_500(await answered_500(client, served, "/login"))
    monkeypatch.undo()
    assert (await client.get(f"/api/stats?shop={SHOP}")).status_code == 200


# -- the middleware's corner cases, as plain ASGI ----------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)


async def no_body() -> Message:
    return {"type": "http.disconnect"}


def http_scope(path: str = "/", app: object = None) -> Scope:
    return {"type": "http", "method": "GET", "path": path, "headers": [], "app": app}


async def test_a_client_that_went_away_gets_nothing_and_logs_nothing():
    async def reads_a_form(scope: Scope, receive: Receive, send: Send) -> None:
        raise ClientDisconnect()

    sent = Recorder()
    await SecurityHeaders(reads_a_form)(http_scope(), no_body, sent)
    assert sent.messages == []


async def test_an_error_after_the_response_started_is_left_to_the_server():
    async def half_then_fail(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")

    sent = Recorder()
    with pytest.raises(RuntimeError, match="mid-stream"):
        await SecurityHeaders(half_then_fail)(http_scope(), no_body, sent)
    assert [message["type"] for message in sent.messages] == ["http.response.start"]
    assert (b"x-content-type-options", b"nosniff") in sent.messages[0]["headers"]


async def test_debug_mode_keeps_starlettes_own_error_page():
    class DebugApp:
        debug = True

    async def fails(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("debugging")

    sent = Recorder()
    with pytest.raises(RuntimeError, match="debugging"):
        await SecurityHeaders(fails)(http_scope(app=DebugApp()), no_body, sent)
    assert sent.messages == []


async def test_headers_a_response_chose_itself_are_kept():
    async def own_policy(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"cache-control", b"max-age=60"), (b"x-frame-options", b"SAMEORIGIN")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    sent = Recorder()
    await SecurityHeaders(own_policy)(http_scope("/api/x"), no_body, sent)
    headers = sent.messages[0]["headers"]
    assert (b"cache-control", b"max-age=60") in headers
    assert (b"x-frame-options", b"SAMEORIGIN") in headers
    assert (b"referrer-policy", b"same-origin") in headers
    assert len([name for name, _ in headers if name == b"x-frame-options"]) == 1
