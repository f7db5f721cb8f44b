"""Bounds on what a client can hold: connections, time to send a request, unverified bytes.

Shopify must connect within 1 s and have the whole answer within 5 s, so a webhook must never
wait behind clients that are slow on purpose. Three pieces, all configured from Settings:

- `server_config()` builds the one uvicorn configuration that `serve` and the tests run, with
  `LimitedHttpProtocol` (a connection cap and a deadline for each request head).
- `BodyDeadline`, an ASGI middleware: a request body not received within its deadline ends
  the request with 408 (and the connection), before any database connection was taken.
- `BodyBudget`: the bytes of webhook bodies held before their signature is checked, across
  the process; beyond it a webhook gets 503 with Retry-After (Shopify retries).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import uvicorn
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from receiver.settings import Settings

# A request head (request line and headers) larger than this is refused. Shopify's are about
# 1 KiB; browsers' with our cookie a few KiB. httptools has no limit of its own.
MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int
    header_timeout_seconds: float
    max_head_bytes: int = MAX_HEAD_BYTES


class ReceiverConfig(uvicorn.Config):
    """uvicorn's Config carrying our limits to the protocol; a module-level class so that
    `serve --workers N` can hand it to its worker processes (uvicorn pickles the config)."""

    def __init__(self, app: Any, limits: HttpLimits, **options: Any) -> None:
        super().__init__(app, **options)
        self.limits = limits


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_connections=settings.http_max_connections,
        header_timeout_seconds=settings.http_header_timeout_seconds,
    )


def server_config(app: Any, settings: Settings, **options: Any) -> ReceiverConfig:
    """The uvicorn configuration of the service, for `serve` and for the tests alike."""
    limits = http_limits(settings)
    options.setdefault("lifespan", "on")
    return ReceiverConfig(
        app,
        limits,
        http=LimitedHttpProtocol,
        # The head deadline below also bounds an idle kept-alive connection; uvicorn's own
        # keep-alive timer would only close it sooner.
        timeout_keep_alive=max(1, round(limits.header_timeout_seconds)),
        # uvicorn's limit_concurrency counts open connections too: idle ones would turn every
        # request into a 503. The connection cap below evicts idle connections instead, and a
        # request that finds no database connection free gets its 503 from the pool timeout.
        limit_concurrency=None,
        **options,
    )


# Per server (one per process): its connections, oldest first, to find an idle one to evict.
_CONNECTIONS: WeakKeyDictionary[ServerState, OrderedDict[LimitedHttpProtocol, None]] = (
    WeakKeyDictionary()
)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap and a request-head deadline.

    uvicorn alone lets a connection that never completes a request head stay open forever (its
    keep-alive timer starts only after a response, and stops at the first byte), keeps any
    number of them, and answers `limit_concurrency` only once a request arrives. Here:

    - a connection must complete each request head within `header_timeout_seconds` of opening
      or of its previous response, and in at most `max_head_bytes`, or it is closed;
    - beyond `max_connections`, a new connection closes the one that has no request running
      (idle or still sending its head) and has waited longest since it opened or had its
      last answer. So a flood of idle connections can lock out neither a fresh client nor
      one that keeps its connection between requests (Shopify); only when every connection
      is serving a request is the new one refused.

    Only uvicorn's protocol callbacks and `cycle` (the running request) are used.
    """

    def __init__(self, config: uvicorn.Config, server_state: ServerState, **kwargs: Any) -> None:
        super().__init__(config, server_state, **kwargs)
        self.limits: HttpLimits = getattr(
            config, "limits", HttpLimits(max_connections=1000, header_timeout_seconds=5.0)
        )
        self.open = _CONNECTIONS.setdefault(server_state, OrderedDict())
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_bytes = 0
        self.in_head = False

    def waiting_for_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.open) >= self.limits.max_connections and not self._evict_one():
            self.logger.warning("connection refused: %d connections busy", len(self.open))
            transport.close()
            return
        self.open[self] = None
        self._arm_head_timer()

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request head, counted from its
        opening or its last answer (`open` is kept in that order): a client that keeps its
        connection between requests, as Shopify does, outlasts a flood of connections that
        send nothing, and a new client is as safe as before."""
        for connection in self.open:
            if connection.waiting_for_head():
                del self.open[connection]
                connection.transport.close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.pop(self, None)
        self._cancel_head_timer()
        super().connection_lost(exc)

    # httptools buffers a header until it ends, without limit, so the head is measured here as
    # it arrives: from the first byte of a request to the end of its headers (a chunk that
    # also ends the previous body counts whole), never during a body.
    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = 0
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.in_head and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_head_bytes:
                self.send_400_response("Request head too large")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self in self.open:
            self.open.move_to_end(self)  # `open` stays in order of last activity
        if not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self.head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_deadline
        )

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_deadline(self) -> None:
        self.head_timer = None
        # A request that is running has its body deadline (BodyDeadline) instead.
        if self.waiting_for_head() and not self.transport.is_closing():
            self.transport.close()


class BodyTimeout(ClientDisconnect):
    """The request body did not arrive within its deadline (a ClientDisconnect, so every
    reader that stops on a vanished client stops on this too)."""


class BodyDeadline:
    """Past `seconds` from the request's start, reading its body raises BodyTimeout and the
    request ends with 408 and a closed connection. Only body reads are bounded: once the body
    is complete, `receive` is passed through untouched."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        complete = False
        timed_out = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal complete, timed_out
            if complete:
                return await receive()
            if timed_out:
                raise BodyTimeout()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                raise BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTimeout:
            if started:
                raise
        if timed_out and not started:
            await request_timeout()(scope, receive, send)


def request_timeout() -> JSONResponse:
    # The rest of the body is still on its way: close rather than read it.
    return JSONResponse(
        {"error": "request body not received in time"},
        status_code=408,
        headers={"Connection": "close"},
    )


class OverBudget(Exception):
    pass


class BodyBudget:
    """Bytes of webhook bodies held before their signature is checked, in this process.

    A body of at most `small_bytes` is never charged: Shopify's webhooks are almost all a few
    KiB, and a flood of large bodies must not turn them away. Their memory is bounded anyway,
    by the connection cap times `small_bytes`. A larger body is charged in full, up front when
    it declares its length, else as it streams; when the charge would pass `total_bytes` the
    request is refused (503, Retry-After) without reading further.
    """

    def __init__(self, total_bytes: int, small_bytes: int) -> None:
        self.total_bytes = total_bytes
        self.small_bytes = small_bytes
        self.held = 0

    def hold(self) -> BodyHold:
        return BodyHold(self)


class BodyHold:
    """One request's share of a BodyBudget; release() is idempotent."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.charged = 0

    def grow(self, size: int) -> None:
        """Hold `size` bytes for this body in total, or raise OverBudget (holding no more)."""
        due = size if size > self.budget.small_bytes else 0
        extra = due - self.charged
        if extra <= 0:
            return
        if self.budget.held + extra > self.budget.total_bytes:
            raise OverBudget
        self.budget.held += extra
        self.charged = due

    def release(self) -> None:
        self.budget.held -= self.charged
        self.charged = 0


def run_server(config: uvicorn.Config) -> None:
    """uvicorn.run() for a ready Config (uvicorn.run builds its own from keywords only)."""
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
    if not server.started and config.workers == 1:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
