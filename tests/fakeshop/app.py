"""The simulator's HTTP surface (Starlette).

Routes (``{shop}`` is ``name.myshopify.com`` or just ``name``; without it the Host header
picks the store, and a server with a single store answers for any host):

- ``POST [/{shop}]/admin/api/{version}/graphql.json``: the Admin GraphQL API
- ``GET [/{shop}]/admin/oauth/authorize``: the merchant approves the app at once, and is sent
  back to ``redirect_uri`` with a one-use ``code`` and Shopify's signed query
- ``POST [/{shop}]/admin/oauth/access_token``: exchange a code or an App Bridge session token
  for an offline token (``expiring=1``: an expiring one), or refresh an expiring one
- ``GET /_fakeshop/bulk/{shop}/{id}/{key}.jsonl``: a finished bulk operation's file
- ``GET /_fakeshop/health``
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .api import UNAUTHORIZED, Answer, answer_graphql, parse_body
from .faults import Fault, Target
from .hooks import GraphQLRequest
from .store import FakeStore

API_VERSION = "2026-10"
_VERSION = re.compile(r"^(\d{4}-\d{2}|unstable)$")
RATE_LIMITED = {
    "errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume "
    "uninterrupted service."
}


def _abort_connection(receive: Receive) -> bool:
    """Close the client's connection without a response.

    ASGI has no verb for this, so it reaches uvicorn's request cycle through its bound
    ``receive`` method; marking the cycle disconnected keeps uvicorn from answering 500 in our
    place. The client sees the connection close (httpx: ``RemoteProtocolError``).
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if cycle is None or transport is None:
        return False
    cycle.disconnected = True
    transport.abort()
    return True


class _Dropped(Response):
    """No response at all: the connection is closed."""

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _abort_connection(receive):
            raise ConnectionAbortedError("fakeshop: cannot drop this connection")


class _HalfSent(Response):
    """Headers promising the whole body, then half of it, then a closed connection."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__(content=body, status_code=status, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        if not _abort_connection(receive):
            raise ConnectionAbortedError("fakeshop: cannot drop this connection")


def _json(answer: Answer, version: str | None = None) -> JSONResponse:
    headers = dict(answer.headers)
    if version:
        headers["X-Shopify-API-Version"] = version
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


def _fault_response(fault: Fault) -> Response | None:
    """The response a status or drop fault replaces the real one with (None: not such a fault)."""
    if fault.kind == "drop":
        return _Dropped()
    if fault.kind != "status":
        return None
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = f"{fault.retry_after:g}"
    if fault.status == 429:
        return JSONResponse(RATE_LIMITED, status_code=429, headers=headers)
    if fault.status >= 500 and fault.status != 500:
        # Gateway errors come from Shopify's edge, as HTML.
        return Response(
            f"<html><body><h1>{fault.status}</h1></body></html>",
            status_code=fault.status,
            media_type="text/html",
            headers=headers,
        )
    return JSONResponse(
        {"errors": "Internal Server Error" if fault.status == 500 else f"HTTP {fault.status}"},
        status_code=fault.status,
        headers=headers,
    )


class FakeShopApp:
    """The ASGI app serving any number of stores."""

    def __init__(self, stores: Iterable[FakeStore] = ()) -> None:
        self.stores: dict[str, FakeStore] = {}
        for store in stores:
            self.add(store)
        self.app = Starlette(
            routes=[
                Route("/admin/api/{version}/graphql.json", self.graphql, methods=["POST"]),
                Route("/{shop}/admin/api/{version}/graphql.json", self.graphql, methods=["POST"]),
                Route("/admin/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/{shop}/admin/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/admin/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/{shop}/admin/oauth/access_token", self.access_token, methods=["POST"]),
                Route("/_fakeshop/bulk/{shop}/{operation:int}/{key}.jsonl", self.download),
                Route("/_fakeshop/health", self.health),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def add(self, store: FakeStore) -> None:
        self.stores[store.shop_domain] = store

    def find(self, request: Request) -> FakeStore | None:
        shop = request.path_params.get("shop")
        if shop is None:
            shop = request.headers.get("host", "").split(":")[0]
            if shop not in self.stores and len(self.stores) == 1:
                return next(iter(self.stores.values()))
        if not shop.endswith(".myshopify.com"):
            shop = f"{shop}.myshopify.com"
        return self.stores.get(shop)

    @staticmethod
    def _base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def _fault(self, store: FakeStore, target: Target) -> Fault | None:
        fault = store.faults.next_for(target)
        if fault is None:
            return None
        label = f"{fault.kind}:{fault.status}" if fault.kind == "status" else fault.kind
        store.stats.faults[label] += 1
        if fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        return fault

    async def graphql(self, request: Request) -> Response:
        store = self.find(request)
        version = request.path_params["version"]
        if store is None or not _VERSION.match(version):
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        stats = store.stats
        stats.graphql_in_flight += 1
        stats.most_graphql_in_flight = max(stats.most_graphql_in_flight, stats.graphql_in_flight)
        try:
            if store.latency > 0:
                await asyncio.sleep(store.latency)
            return await self._graphql(request, store, version)
        finally:
            stats.graphql_in_flight -= 1

    async def _graphql(self, request: Request, store: FakeStore, version: str) -> Response:
        store.stats.requests += 1
        token = request.headers.get("x-shopify-access-token")
        fault = await self._fault(store, "graphql")
        if fault is not None:
            if fault.kind == "drop":
                # Read the request first: closing a socket with unread input sends a reset,
                # and the client should see a clean close without a response.
                await request.body()
            replaced = _fault_response(fault)
            if replaced is not None:
                return replaced
            if fault.kind == "revoke_token" and token:
                store.tokens.revoke(token)
            if fault.kind == "expire_token" and token:
                store.tokens.expire(token)
        if store.tokens.check(token) != "ok":
            store.stats.unauthorized += 1
            return JSONResponse(UNAUTHORIZED, status_code=401)
        parsed = parse_body(await request.body(), request.headers.get("content-type", ""))
        if parsed is None:
            return JSONResponse(
                {"errors": {"query": "Required parameter missing or invalid"}}, status_code=400
            )
        query, variables, operation_name = parsed
        answer = answer_graphql(
            store,
            query,
            variables,
            operation_name,
            self._base_url(request),
            force_throttle=fault is not None and fault.kind == "throttle",
            api_version=version,
        )
        number = store.hooks.next_number()
        if store.hooks:
            # On a worker thread: a hook may deliver webhooks over HTTP or call this server,
            # and the event loop must keep serving meanwhile. The client waits for it.
            await asyncio.to_thread(
                store.hooks.run,
                GraphQLRequest(
                    number, query, variables or {}, operation_name, answer.status, answer.body
                ),
            )
        if fault is not None and fault.kind == "drop_body":
            return _HalfSent(json.dumps(answer.body).encode(), answer.status)
        return _json(answer, version)

    async def access_token(self, request: Request) -> Response:
        store = self.find(request)
        if store is None:
            return JSONResponse({"errors": "Not Found"}, status_code=404)
        fault = await self._fault(store, "oauth")
        if fault is not None:
            replaced = _fault_response(fault)
            if replaced is not None:
                return replaced
        raw = await request.body()
        form: dict[str, Any]
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                loaded = json.loads(raw or b"{}")
            except ValueError:
                loaded = None
            form = loaded if isinstance(loaded, dict) else {}
        else:
            form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        form = {k: str(v) for k, v in form.items()}
        status, body = store.tokens.grant(form)
        if status == 200 and form.get("grant_type") == "refresh_token":
            store.stats.token_refreshes += 1
        return JSONResponse(body, status_code=status)

    async def authorize(self, request: Request) -> Response:
        """Shopify's consent screen, approved at once; what it refuses it shows as a page."""
        store = self.find(request)
        if store is None:
            return Response("Not Found", status_code=404)
        query = request.query_params
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != store.tokens.client_id:
            return Response("Oauth error invalid_request: unknown client_id", status_code=400)
        if urlsplit(redirect_uri).scheme not in ("http", "https"):
            return Response("Oauth error invalid_request: bad redirect_uri", status_code=400)
        params = {
            "code": store.tokens.authorize(query.get("scope", "")),
            "host": base64.urlsafe_b64encode(
                f"admin.shopify.com/store/{store.shop_domain.split('.')[0]}".encode()
            )
            .decode()
            .rstrip("="),
            "shop": store.shop_domain,
            "state": query.get("state", ""),
            "timestamp": str(int(time.time())),
        }
        params["hmac"] = query_hmac(params, store.tokens.client_secret)
        return RedirectResponse(f"{redirect_uri}?{urlencode(params)}", status_code=302)

    async def download(self, request: Request) -> Response:
        store = self.find(request)
        operation = store.bulk.get(request.path_params["operation"]) if store else None
        if store is None or operation is None or operation.key != request.path_params["key"]:
            return Response("Not Found", status_code=404)
        if operation.status not in ("COMPLETED", "FAILED"):
            return Response("Not Found", status_code=404)
        fault = await self._fault(store, "download")
        if fault is not None:
            replaced = _fault_response(fault)
            if replaced is not None:
                return replaced
        store.stats.downloads += 1
        cut_short = fault is not None and fault.kind == "drop_body"

        async def body() -> AsyncIterator[bytes]:
            for chunk in store.bulk.chunks(operation):
                if cut_short:
                    # Half a chunk, likely ending mid-line, then a dead connection.
                    yield chunk[: len(chunk) // 2]
                    _abort_connection(request.receive)
                    return
                store.stats.download_lines += chunk.count(b"\n")
                yield chunk

        return StreamingResponse(body(), media_type="application/jsonl")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "shops": sorted(self.stores)})


def query_hmac(params: dict[str, str], secret: str) -> str:
    """Shopify's signature of a redirect's query: hex HMAC-SHA256 of the other parameters,
    sorted, as ``k=v`` joined with ``&``."""
    message = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "hmac")
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
