"""The yardstick of ``bench.webhooks``: what a careful minimal webhook receiver on our stack does.

``create_app`` is a plain Starlette app whose one endpoint verifies the HMAC-SHA256 (base64,
constant-time compare) over the raw body, parses the JSON, and then, in one transaction through
a raw asyncpg pool, inserts the event under its dedupe key (shop, topic, event id; ON CONFLICT
DO NOTHING) and, when the event is new, upserts the record it carries with the order-safe guard
(applied only when its ``updated_at`` is not older than the stored one). It answers 200 after
the commit. No row-level security, no children, no payload checks, no logging per request:
what a peer that keeps the inbox and dedupe guarantees would do at least. Served by uvicorn
exactly like the service (``--factory``, same loop and HTTP implementations, same worker
counts), so the difference between the two is what the service does on top.

``noop_app`` is a bare ASGI app that reads the body and answers 200: the benchmark points the
load generator at it to measure the generator's own ceiling.

Environment: ``REFERENCE_DATABASE_URL`` (a ``postgresql://`` DSN), ``REFERENCE_WEBHOOK_SECRET``,
``DATABASE_POOL_SIZE`` (default 20, the service's default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TABLE = "bench_reference_events"
RECORDS_TABLE = "bench_reference_records"
CREATE_TABLES = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
    "shop_domain text NOT NULL, topic text NOT NULL, dedupe_key text NOT NULL, "
    "received_at timestamptz NOT NULL DEFAULT now(), body jsonb NOT NULL, "
    "UNIQUE (shop_domain, topic, dedupe_key))",
    f"CREATE TABLE IF NOT EXISTS {RECORDS_TABLE} (kind text NOT NULL, "
    "shopify_id bigint NOT NULL, updated_at timestamptz NOT NULL, body jsonb NOT NULL, "
    "PRIMARY KEY (kind, shopify_id))",
)
INSERT_EVENT = (
    f"INSERT INTO {TABLE} (shop_domain, topic, dedupe_key, body) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (shop_domain, topic, dedupe_key) DO NOTHING RETURNING id"
)
UPSERT_RECORD = (
    f"INSERT INTO {RECORDS_TABLE} AS stored (kind, shopify_id, updated_at, body) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (kind, shopify_id) DO UPDATE "
    "SET updated_at = excluded.updated_at, body = excluded.body "
    "WHERE stored.updated_at <= excluded.updated_at"
)


def create_app() -> Starlette:
    dsn = os.environ["REFERENCE_DATABASE_URL"]
    secret = os.environ["REFERENCE_WEBHOOK_SECRET"].encode()
    pool_size = int(os.environ.get("DATABASE_POOL_SIZE", "20"))
    pool: asyncpg.Pool | None = None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal pool
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size)
        try:
            yield
        finally:
            await pool.close()

    async def receive(request: Request) -> Response:
        headers = request.headers
        signature = headers.get("x-shopify-hmac-sha256", "")
        body = await request.body()
        expected = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature.encode("latin-1", errors="replace")):
            return JSONResponse({"error": "HMAC signature does not match"}, status_code=401)
        topic = headers.get("x-shopify-topic", "")
        shop = headers.get("x-shopify-shop-domain", "")
        key = headers.get("x-shopify-event-id") or headers.get("x-shopify-webhook-id")
        try:
            payload = json.loads(body)
            shopify_id = int(payload["id"])
            updated_at = datetime.fromisoformat(payload["updated_at"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a record"}, status_code=400)
        text = body.decode()
        assert pool is not None
        async with pool.acquire() as connection, connection.transaction():
            if await connection.fetchval(INSERT_EVENT, shop, topic, key or text, text) is None:
                return JSONResponse({"status": "duplicate"})
            kind = topic.partition("/")[0]
            await connection.execute(UPSERT_RECORD, kind, shopify_id, updated_at, text)
        return JSONResponse({"status": "processed"})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/shopify", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def noop_app(
    scope: Scope,
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"status":"ok"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")],
        }
    )
    await send({"type": "http.response.body", "body": body})
