"""The yardstick of ``bench.webhooks``: the least a webhook receiver on our stack can do.

``create_app`` is a plain Starlette app whose one endpoint verifies the HMAC-SHA256 (base64,
constant-time compare) over the raw body and INSERTs the body into one table with asyncpg
(autocommit: one statement, one commit), then answers 200. No dedupe, no parsing, no
upsert, no logging per request. Served by uvicorn exactly like the service (``--factory``,
same loop and HTTP implementations, same worker counts), so the difference between the two is
what the service does on top.

``noop_app`` is a bare ASGI app that reads the body and answers 200: the benchmark points the
load generator at it to measure the generator's own ceiling.

Environment: ``REFERENCE_DATABASE_URL`` (a ``postgresql://`` DSN), ``REFERENCE_WEBHOOK_SECRET``,
``DATABASE_POOL_SIZE`` (default 20, the service's default).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TABLE = "bench_reference_events"
CREATE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY, "
    "received_at timestamptz NOT NULL DEFAULT now(), body jsonb NOT NULL)"
)
INSERT = f"INSERT INTO {TABLE} (body) VALUES ($1)"


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
        signature = request.headers.get("x-shopify-hmac-sha256", "")
        body = await request.body()
        expected = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature.encode("latin-1", errors="replace")):
            return JSONResponse({"error": "HMAC signature does not match"}, status_code=401)
        assert pool is not None
        await pool.execute(INSERT, body.decode())
        return JSONResponse({"status": "ok"})

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
