"""Slow, idle and oversized clients (issue #11 items 2-4) against the real server: uvicorn with
the service's own limits (receiver/limits.py), PostgreSQL as the app role, raw sockets for
the hostile clients and httpx for the well-behaved webhook. Small pools, caps and budgets keep
each flood a few seconds long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select, text

from models import ApiToken, User, UserTenant, WebhookEvent
from receiver.auth import create_api_token, hash_password
from tests.conftest import ServedApp, settings_for
from tests.factories import SHOP, create_tenant, delivery
from tests.integration.test_pages import CSRF

# Shopify gives up on a delivery after 5 s.
SHOPIFY_LIMIT_SECONDS = 5.0
PASSWORD = "correct horse battery staple"
HUGE_ID = "9" * 4301  # one digit more than int() accepts


class RawClient:
    """One TCP connection speaking HTTP/1.1 by hand: it can stop anywhere in a request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, base_url: str) -> RawClient:
        parts = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(
        self, method: str, path: str, headers: dict[str, str], *, expect_continue: bool = False
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *map(": ".join, headers.items())]
        if expect_continue:
            lines.append("Expect: 100-continue")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def status(self, within: float = SHOPIFY_LIMIT_SECONDS) -> int:
        """The status of the next response (a 100 Continue included), headers consumed."""
        async with asyncio.timeout(within):
            line = await self.reader.readline()
            assert line.startswith(b"HTTP/1.1 "), line
            self.headers: dict[str, str] = {}
            while (header := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                self.headers[name.strip().lower()] = value.strip()
        return int(line.split()[1])

    async def closed_by_server(self, within: float) -> bool:
        """True once the server closes the connection (EOF), False if it is still open."""
        try:
            async with asyncio.timeout(within):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return True

    async def trickle_until_answered(self, interval: float) -> int:
        """Send one body byte per `interval` until the server answers; the answer's status."""
        while True:
            try:
                async with asyncio.timeout(interval):
                    return await self.status(within=SHOPIFY_LIMIT_SECONDS)
            except TimeoutError:
                await self.send(b"x")

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def raw_clients(base_url: str, count: int) -> AsyncIterator[list[RawClient]]:
    clients = [await RawClient.open(base_url) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            client.close()


async def timed_webhook(http: httpx.AsyncClient, served: ServedApp) -> tuple[int, float]:
    body, headers = delivery("customers/create")
    started = time.perf_counter()
    response = await http.post(served.webhook_url, content=body, headers=headers)
    return response.status_code, time.perf_counter() - started


async def add_user(pg, email: str, *, admin: bool, tenant_id: int) -> None:
    async with pg.sessions() as session, session.begin():
        user = User(email=email, password_hash=hash_password(PASSWORD), is_admin=admin)
        session.add(user)
        await session.flush()
        session.add(UserTenant(user_id=user.id, tenant_id=tenant_id))


async def signed_in_cookie(served: ServedApp, email: str) -> tuple[str, str]:
    """The session cookie header of a user signed in through the login form, and a CSRF token."""
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
        page = await client.get("/login")
        match = CSRF.search(page.text)
        assert match, page.text
        response = await client.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf_token": match.group(1)}
        )
        assert response.status_code == 303, response.text
        home = await client.get("/")
        token = CSRF.search(home.text)
        assert token, home.text
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        return cookie, token.group(1)


async def test_slow_bodies_on_sync_routes_do_not_starve_webhooks(pg, http):
    """Item 2: a signed-in viewer's and an API token's slow POSTs (more of them than the pool
    has connections) each get 408 at the body deadline while every webhook probe sent during
    the flood gets its 200 inside Shopify's limit."""
    tenant_id = await create_tenant(pg.sessions)
    await add_user(pg, "viewer@example.com", admin=False, tenant_id=tenant_id)
    async with pg.sessions() as session, session.begin():
        token = await create_api_token(session, "slow-admin")
    settings = settings_for(pg.url, database_pool_size=3, http_body_timeout_seconds=2.0)
    with ServedApp(settings) as served:
        cookie, csrf = await signed_in_cookie(served, "viewer@example.com")
        form = {
            "Cookie": cookie,
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": "1000",
        }
        api = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Content-Length": "1000",
        }
        async with raw_clients(served.base_url, 8) as slow:
            for index, client in enumerate(slow):
                path, headers = (f"/stores/{SHOP}/sync", form) if index % 2 else ("/api/sync", api)
                await client.head("POST", path, headers, expect_continue=True)
                # uvicorn sends 100 Continue when the route first reads the body: from here on
                # the route waits on this client.
                assert await client.status() == 100
                await client.send(f"csrf_token={csrf}&mode=full".encode()[:10])
            trickles = [asyncio.create_task(client.trickle_until_answered(0.2)) for client in slow]
            probes = [await timed_webhook(http, served) for _ in range(4)]
            answers = await asyncio.gather(*trickles)
    assert [status for status, _ in probes] == [200] * 4
    assert max(elapsed for _, elapsed in probes) < SHOPIFY_LIMIT_SECONDS
    assert answers == [408] * 8
    async with pg.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookEvent)) == 4


async def test_idle_connections_beyond_the_cap_are_closed_oldest_first(pg, http):
    """Item 3: connections that never finish a request head cannot pile up past the cap; the
    oldest idle ones make room and a fresh client is served at once."""
    await create_tenant(pg.sessions)
    settings = settings_for(pg.url, http_max_connections=10, http_header_timeout_seconds=30.0)
    with ServedApp(settings) as served:
        async with raw_clients(served.base_url, 30) as idle:
            for index, client in enumerate(idle):
                if index % 2:  # half send nothing, half a head that never ends
                    await client.send(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n")
            status, elapsed = await timed_webhook(http, served)
            assert status == 200
            assert elapsed < SHOPIFY_LIMIT_SECONDS
            oldest = await asyncio.gather(*(client.closed_by_server(2.0) for client in idle[:20]))
            assert all(oldest)


async def test_a_kept_alive_client_outlasts_a_flood_of_idle_connections(pg):
    """Shopify keeps its connection open between deliveries: while it delivers, idle
    connections opened beyond the cap close one another (the longest waiting first), not it,
    though it is the oldest connection."""
    await create_tenant(pg.sessions)
    settings = settings_for(pg.url, http_max_connections=10, http_header_timeout_seconds=30.0)
    with ServedApp(settings) as served:
        async with raw_clients(served.base_url, 1) as (shopify,):

            async def deliver() -> int:
                body, headers = delivery("customers/create")
                await shopify.head(
                    "POST", "/webhooks/shopify", headers | {"Content-Length": str(len(body))}
                )
                await shopify.send(body)
                status = await shopify.status()
                await shopify.reader.readexactly(int(shopify.headers["content-length"]))
                return status

            assert await deliver() == 200
            flood: list[RawClient] = []
            try:
                for _ in range(6):  # 30 idle connections, 5 between two deliveries
                    flood += [await RawClient.open(served.base_url) for _ in range(5)]
                    assert await deliver() == 200
                closed = await asyncio.gather(*(c.closed_by_server(2.0) for c in flood[:21]))
                assert all(closed)
            finally:
                for client in flood:
                    client.close()
    async with pg.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(WebhookEvent)) == 7


async def test_a_request_head_must_arrive_in_time_and_in_bounds(pg):
    settings = settings_for(pg.url, http_header_timeout_seconds=0.5)
    with ServedApp(settings) as served:
        async with raw_clients(served.base_url, 3) as (silent, partial, huge):
            await partial.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            await huge.send(b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 70_000 + b"\r\n")
            assert await huge.status() == 400
            assert await silent.closed_by_server(SHOPIFY_LIMIT_SECONDS)
            assert await partial.closed_by_server(SHOPIFY_LIMIT_SECONDS)


async def test_large_unsigned_bodies_beyond_the_budget_get_503_while_webhooks_pass(pg, http):
    """Item 3: large bodies are charged to the unverified-bytes budget before they are read;
    past it, 503 with Retry-After; a small signed webhook does not compete for it."""
    await create_tenant(pg.sessions)
    settings = settings_for(
        pg.url, webhook_unverified_budget_bytes=60_000, webhook_small_body_bytes=16_000
    )
    size = 40_000
    unsigned = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Hmac-Sha256": "bm90IGEgc2lnbmF0dXJl",
        "Content-Length": str(size),
    }
    with ServedApp(settings) as served:
        async with raw_clients(served.base_url, 6) as clients:
            holder, *others = clients
            await holder.head("POST", "/webhooks/shopify", unsigned, expect_continue=True)
            assert await holder.status() == 100  # its 40,000 bytes are held from here
            for client in others:
                await client.head("POST", "/webhooks/shopify", unsigned, expect_continue=True)
            refused = [await client.status() for client in others]
            retry_after = [client.headers.get("retry-after") for client in others]
            status, elapsed = await timed_webhook(http, served)
            await holder.send(b"{" + b" " * (size - 2) + b"}")
            assert await holder.status() == 401
        assert refused == [503] * 5
        assert all(retry_after)
        assert (status, elapsed < SHOPIFY_LIMIT_SECONDS) == (200, True)
        # The holder's bytes were given back: the next large body is read (and refused for
        # its signature, not for the budget).
        big = b"{" + b" " * (size - 2) + b"}"
        response = await http.post(served.webhook_url, content=big, headers=unsigned)
        assert response.status_code == 401


async def test_a_statement_past_its_timeout_is_a_503_and_the_retry_is_stored_once(pg, http):
    """Item 2: a handler stuck on a lock is ended by statement_timeout: 503 (Shopify retries),
    nothing kept, and the retry is processed once."""
    await create_tenant(pg.sessions)
    settings = settings_for(pg.url, database_statement_timeout_seconds=0.5)
    body, headers = delivery("orders/create")
    with ServedApp(settings) as served:
        async with pg.engine.connect() as blocker:
            await blocker.execute(text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
            started = time.perf_counter()
            stuck = await http.post(served.webhook_url, content=body, headers=headers)
            elapsed = time.perf_counter() - started
            await blocker.rollback()
        retried = await http.post(served.webhook_url, content=body, headers=headers)
    assert (stuck.status_code, stuck.headers.get("retry-after") is not None) == (503, True)
    assert elapsed < SHOPIFY_LIMIT_SECONDS
    assert retried.status_code == 200
    assert retried.json()["status"] == "processed"
    async with pg.sessions() as session:
        statuses = (await session.scalars(select(WebhookEvent.status))).all()
    assert statuses == ["processed"]


@pytest.mark.parametrize("digits", [HUGE_ID, "9" * 20, "0" * 30 + "1"])
async def test_huge_path_ids_are_404_on_every_id_route(backend, served, http, digits):
    """Item 4: ids are bounded integers; a number beyond any id is 404 (after the usual
    401 for a stranger), never a 500 from int() of thousands of digits."""
    tenant_id = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        token = await create_api_token(session, "huge-ids")
        assert await session.scalar(select(func.count()).select_from(ApiToken)) == 1
    await add_user(backend, "admin@example.com", admin=True, tenant_id=tenant_id)
    stranger = await http.get(f"{served.base_url}/api/sync/{digits}")
    assert stranger.status_code == 401
    status = await http.get(
        f"{served.base_url}/api/sync/{digits}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status.status_code == 404
    cookie, csrf = await signed_in_cookie(served, "admin@example.com")
    replay = await http.post(
        f"{served.base_url}/stores/{SHOP}/events/{digits}/replay",
        data={"csrf_token": csrf},
        headers={"Cookie": cookie},
    )
    assert replay.status_code == 404
