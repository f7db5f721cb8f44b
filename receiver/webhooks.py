"""POST /webhooks/shopify: verify, store durably, apply, then answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.pool import Pool, QueuePool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from handlers.compliance import REDACT_CUSTOMER
from handlers.context import EventContext
from handlers.dispatch import (
    applies_together,
    apply_event,
    apply_events_together,
    body_misfit,
    failure_text,
    is_disconnect,
    log_outcome,
    skip_reason,
    vet_shop,
)
from handlers.inbox import count_duplicates, store_event, store_events
from handlers.json_text import read_json
from handlers.normalize import PayloadError, parse_timestamp
from handlers.resources import resource_for_topic
from handlers.retries import schedule_retry
from handlers.shop_identity import ShopMismatch
from handlers.topic_table import HANDLERS
from models import is_sqlite, utcnow
from models.statuses import EventStatus
from models.tenancy import cross_store_transaction, tenant_transaction, use_all_tenants
from receiver.coalesce import Unclaimed
from receiver.errors import DATABASE_UNREACHABLE, ServiceUnavailable
from receiver.limits import BodyHold, BodyTimeout, OverBudget, request_timeout
from receiver.metrics import (
    BATCH_EVENTS,
    DUPLICATES,
    HANDLER_SECONDS,
    LAG_SECONDS,
    WEBHOOKS,
    topic_label,
)
from receiver.services import Services
from receiver.signature import verify_signature
from receiver.tenants import (
    InvalidShopDomain,
    WebhookTenant,
    normalize_shop_domain,
    tenant_for_webhook,
    webhook_secrets,
)

log = logging.getLogger("shopify_receiver.webhooks")

# Any topic Shopify may send (`orders/create`, Events' `customer.tags_added`, ones not invented
# yet) is stored, so only what fits the column and a log line is required: printable ASCII.
TOPIC = re.compile(r"[\x21-\x7e]+")
MAX_TOPIC_LENGTH = 100  # the column's width
# Shopify's payloads nest a handful of levels; a body nesting deeper than this is not one.
MAX_JSON_DEPTH = 64
# Webhook and event ids are UUIDs; allow a little more but nothing that is not plain ASCII.
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:\-]{1,255}")
API_VERSION = re.compile(r"[A-Za-z0-9._\-]{1,32}")
# One store's whole-record events are stored and applied in batches of at most this many
# (receiver.coalesce): enough to share each commit widely, few enough that a batch stays well
# inside Shopify's five seconds. 32, not 64: with one web process at 64 connections, 32 took
# 1,682-1,753 webhooks/s against 1,583-1,641 for 64 (runs taken in turn), and its batches
# held more events on average, not fewer (about 21 against 14-15; presumably two batches
# closer in size end in turn, which was not taken apart); 16 took 1,588. Two processes, whose
# batches hold about 16, took the same with either (bench/RESULTS.md, notes of 22:25 UTC).
WEBHOOK_BATCH_MAX = 32
# A store's batches in flight at once across the web processes, each process running its
# share (`store_batches_per_process`). One process needs two: one batch writes while the next
# one's requests are read. Several processes overlap each other's batches already, and more
# batches in flight only make each smaller: two processes running two each made batches of
# 9.5 events and took 7-9 % more CPU per webhook (server and PostgreSQL) than one each, which
# made batches of 16 (bench/RESULTS.md, notes of 2026-12-02 21:17 UTC).
WEBHOOK_BATCHES_PER_STORE = 2


def store_batches_per_process(database_url: str, web_processes: int) -> int:
    """How many of a store's batches one web process runs at once. SQLite has one writer: a
    second batch would only poll for the write lock (its busy handler sleeps up to 100 ms at
    a time)."""
    if is_sqlite(database_url):
        return 1
    return max(1, WEBHOOK_BATCHES_PER_STORE // max(1, web_processes))


# How long a store's next batch transaction, opened while its batch runs (BatchTransactions),
# waits to be taken before it is closed: under load a store's batches follow each other within
# tens of milliseconds, and one held longer would only keep a pooled connection from others.
NEXT_TRANSACTION_IDLE_SECONDS = 0.1

# How long a delivery waits for a running batch that writes its record before it goes alone: a
# batch takes tens of milliseconds, and one stuck on a lock must not add its wait to the
# delivery's own limits (a connection within the pool's 2 s), inside Shopify's 5 s.
WEBHOOK_CLAIM_PATIENCE_SECONDS = 0.5


class BodyTooLarge(Exception):
    pass


class BadDelivery(ValueError):
    """A correctly signed request we still cannot accept (missing headers, body not JSON)."""


def shopify_header(headers: Headers, name: str) -> str | None:
    """`X-Shopify-<name>`, or the unprefixed `shopify-<name>` that Events deliveries use."""
    value = headers.get(f"x-shopify-{name}")
    if value is None:
        value = headers.get(f"shopify-{name}")
    return value.strip() if value is not None else None


@dataclass(frozen=True)
class Delivery:
    shop_domain: str
    topic: str
    event_id: str | None
    webhook_id: str | None
    api_version: str | None
    triggered_at: datetime | None
    # None only for a topic we do not handle whose body is not a JSON object (`body_note`).
    payload: dict[str, Any] | None
    body_sha256: str
    body_note: str | None = None
    # The body, when it is the payload's JSON text exactly as the inbox may store it (read by
    # orjson, nothing `_storable` had to replace): the batch path stores it as it came.
    payload_text: bytes | None = None

    @property
    def dedupe_key(self) -> str:
        # Shopify's advice is to dedupe on the event id; the webhook id is stable across
        # retries of one delivery; the body hash is the last resort for hand-made requests.
        return self.event_id or self.webhook_id or f"sha256:{self.body_sha256}"


async def read_body(request: Request, limit: int, hold: BodyHold | None = None) -> bytes:
    """The raw body, refused as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it streams, so an endless body never sits in memory whole. With `hold`, the
    bytes are charged to the unverified-bytes budget (declared length up front), which raises
    OverBudget instead of reading on.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise BodyTooLarge
        if hold is not None:
            hold.grow(int(declared))
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
        if hold is not None:
            hold.grow(len(body))
    return bytes(body)


# What PostgreSQL cannot store in text or jsonb: NUL and unpaired surrogates.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Such characters can only reach a parsed body through a \u escape or, as json.loads decodes
# bytes with surrogatepass, raw surrogate bytes (0xED 0xA0-0xBF); most bodies have neither.
_MAY_BE_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")


def _may_be_unstorable(body: bytes) -> bool:
    # Substring tests first: the pattern's alternation is tried at every byte (about 35 us
    # for a 6 KB body, 4% of a webhook's CPU), a plain search for its two leads about 6 us.
    return (b"\\u" in body or b"\xed" in body) and _MAY_BE_UNSTORABLE.search(body) is not None


def _storable(value: Any) -> Any:
    """Strings PostgreSQL can store: no NUL characters and no unpaired surrogates."""
    if isinstance(value, str):
        if _UNSTORABLE.search(value):
            return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth, level by level without recursion (so no body can exhaust the stack),
    and stopping once past `limit`: only containers are visited, never scalars.

    Parsed JSON holds plain dicts and lists only, so exact type tests (several times cheaper
    than isinstance on a union) find every container."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        below: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return depth


def read_payload(body: bytes) -> tuple[dict[str, Any], bool]:
    """The body as a JSON object, and whether the body itself can be stored as its JSON text
    (read by orjson, and nothing in it that `_storable` replaces)."""
    try:
        payload, plain = read_json(body)
    except (ValueError, RecursionError) as exc:
        raise BadDelivery(f"body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(payload, dict):
        raise BadDelivery("body must be a JSON object")
    # A body with few brackets cannot nest deeply (a C-speed count spares most bodies the walk).
    brackets = body.count(b"{") + body.count(b"[")
    if brackets > MAX_JSON_DEPTH and json_depth(payload) > MAX_JSON_DEPTH:
        raise BadDelivery(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    if _may_be_unstorable(body):
        return _storable(payload), False
    return payload, plain


def _optional_header(headers: Headers, name: str, pattern: re.Pattern[str]) -> str | None:
    value = shopify_header(headers, name)
    if not value:
        return None
    if not pattern.fullmatch(value):
        raise BadDelivery(f"X-Shopify-{name} header is malformed")
    return value


def parse_delivery(headers: Headers, body: bytes) -> Delivery:
    topic = shopify_header(headers, "topic")
    shop = shopify_header(headers, "shop-domain")
    if not topic:
        raise BadDelivery("missing X-Shopify-Topic header")
    if not shop:
        raise BadDelivery("missing X-Shopify-Shop-Domain header")
    topic = topic.lower()
    if len(topic) > MAX_TOPIC_LENGTH or not TOPIC.fullmatch(topic):
        raise BadDelivery("X-Shopify-Topic header is malformed")
    try:
        shop = normalize_shop_domain(shop)
    except InvalidShopDomain as exc:
        raise BadDelivery(f"X-Shopify-Shop-Domain: {exc}") from exc
    try:
        triggered_at = parse_timestamp(shopify_header(headers, "triggered-at"), "triggered-at")
    except PayloadError:
        triggered_at = None  # informational only; the payload's own updated_at orders writes
    payload: dict[str, Any] | None
    note = None
    plain = False
    try:
        payload, plain = read_payload(body)
    except BadDelivery as exc:
        if topic in HANDLERS:
            raise
        # Shopify deletes a subscription whose deliveries keep failing: a topic we do not
        # handle is acknowledged and kept (for its headers) whatever its body.
        payload, note = None, f"body not stored: {exc}"
    return Delivery(
        shop_domain=shop,
        topic=topic,
        event_id=_optional_header(headers, "event-id", DELIVERY_ID),
        webhook_id=_optional_header(headers, "webhook-id", DELIVERY_ID),
        api_version=_optional_header(headers, "api-version", API_VERSION),
        triggered_at=triggered_at,
        payload=payload,
        body_sha256=hashlib.sha256(body).hexdigest(),
        body_note=note,
        payload_text=body if plain else None,
    )


class Verdict(StrEnum):
    """What became of a request: the `outcome` label of WEBHOOKS and the shape of the answer."""

    PROCESSED = EventStatus.PROCESSED.value
    IGNORED = EventStatus.IGNORED.value
    FAILED = EventStatus.FAILED.value
    DUPLICATE = "duplicate"
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    TOO_LARGE = "too_large"
    BUSY = "busy"
    TIMEOUT = "timeout"


# The verdicts of a request that reached the inbox: their handling time is what
# HANDLER_SECONDS measures (a refusal's time is the client's, not ours).
INBOX_VERDICTS = frozenset({Verdict.PROCESSED, Verdict.IGNORED, Verdict.FAILED, Verdict.DUPLICATE})


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    event_id: int | None = None  # the inbox row, for a stored event
    error: str | None = None  # what a refusal's body says
    lag_seconds: float | None = None  # Shopify's trigger time to our receipt, when known


async def receive_webhook(request: Request) -> Response:
    """The edge: metrics and the HTTP answer, both made from the typed outcome."""
    started = time.perf_counter()
    outcome = await _receive(request)
    topic = topic_label(shopify_header(request.headers, "topic"))
    WEBHOOKS.labels(topic, outcome.verdict).inc()
    if outcome.verdict in INBOX_VERDICTS:
        HANDLER_SECONDS.labels(topic).observe(time.perf_counter() - started)
    if outcome.verdict is Verdict.DUPLICATE:
        DUPLICATES.inc()
    if outcome.lag_seconds is not None:
        LAG_SECONDS.observe(outcome.lag_seconds)
    return _response(outcome)


WEBHOOK_PATH = "/webhooks/shopify"


class AcknowledgedWebhooks(logging.Filter):
    """Drops uvicorn's access line of a webhook answered 200: its outcome line
    (`webhook.processed`, `webhook.duplicate`, ...) already says so, with the shop, topic and
    ids. Writing a second line per delivery took 5 % of the server's CPU per webhook and half
    the log's volume. A refused delivery (401, 400, 408, 413, 503) keeps its access line, the
    only line of a 408 or a 413; so does every other request."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's arguments: client, method, path with query string, HTTP version, status.
        args = record.args
        return not (
            isinstance(args, tuple)
            and len(args) == 5
            and args[4] == 200
            and args[2] == WEBHOOK_PATH
            and args[1] == "POST"
        )


def quiet_acknowledged_webhooks() -> None:
    """Installs `AcknowledgedWebhooks` on uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(known, AcknowledgedWebhooks) for known in access.filters):
        access.addFilter(AcknowledgedWebhooks())


ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]


class WebhookLane:
    """POST /webhooks/shopify straight to `receive_webhook`, past the session middleware, the
    exception middleware and the router: a webhook needs none of them, and their layers of
    coroutines cost a measurable share of its CPU. Outer middleware (security headers, the body
    deadline, the 500 of last resort) still wraps it, and an exception is answered by the
    app's own `exception_handlers` (the 503 of an unreachable database). Everything else
    (other methods on the path, other paths) goes on to `app`."""

    def __init__(
        self, app: ASGIApp, exception_handlers: Mapping[type[Exception], ExceptionHandler]
    ) -> None:
        self.app = app
        self.exception_handlers = exception_handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != WEBHOOK_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await receive_webhook(request)
        except Exception as exc:
            # The nearest handler by class, as Starlette's exception middleware looks it up.
            handler = next(
                (
                    self.exception_handlers[cls]
                    for cls in type(exc).__mro__
                    if cls in self.exception_handlers
                ),
                None,
            )
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)


def _response(outcome: Outcome) -> Response:
    verdict = outcome.verdict
    if verdict is Verdict.DUPLICATE:
        return JSONResponse({"status": verdict})
    if verdict in INBOX_VERDICTS:
        return JSONResponse({"status": verdict, "event": outcome.event_id})
    if verdict is Verdict.TIMEOUT:
        return request_timeout()
    if verdict is Verdict.BUSY:
        return JSONResponse({"error": outcome.error}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"error": outcome.error}, status_code=_REFUSAL_STATUS[verdict])


_REFUSAL_STATUS = {Verdict.UNAUTHORIZED: 401, Verdict.BAD_REQUEST: 400, Verdict.TOO_LARGE: 413}


async def _receive(request: Request) -> Outcome:
    hold = request.state.services.body_budget.hold()
    try:
        return await _receive_held(request, hold)
    finally:
        hold.release()


async def _read(request: Request, services: Services, hold: BodyHold) -> bytes | Outcome:
    """The raw body, or the refusal when it cannot be had."""
    limit = services.settings.webhook_max_body_bytes
    try:
        return await read_body(request, limit, hold)
    except BodyTooLarge:
        return Outcome(Verdict.TOO_LARGE, error=f"body exceeds the {limit}-byte limit")
    except OverBudget:
        log.warning("webhook.rejected reason=unverified_budget held=%d", hold.budget.held)
        return Outcome(
            Verdict.BUSY, error="too many large unverified bodies in flight, retry later"
        )
    except BodyTimeout:
        return Outcome(Verdict.TIMEOUT)
    except ClientDisconnect:
        return Outcome(Verdict.BAD_REQUEST, error="client disconnected before the body")


async def _receive_held(request: Request, hold: BodyHold) -> Outcome:
    """Parse, verify, store (committed before the answer), apply."""
    services: Services = request.state.services
    signature = shopify_header(request.headers, "hmac-sha256")
    if not signature:
        return Outcome(Verdict.UNAUTHORIZED, error="missing X-Shopify-Hmac-Sha256 header")
    body = await _read(request, services, hold)
    if isinstance(body, Outcome):
        return body

    app_secrets = [secret.reveal() for secret in services.settings.api_secrets]
    verified = verify_signature(body, signature, app_secrets)
    if verified:
        hold.release()  # verified bytes are Shopify's; the budget is for strangers' bytes
    shop_header = shopify_header(request.headers, "shop-domain") or ""
    try:
        shop_domain: str | None = normalize_shop_domain(shop_header)
    except InvalidShopDomain:
        shop_domain = None
    if verified and shop_domain is not None:
        together = await _receive_together(services, request.headers, body)
        if together is not None:
            return together

    try:
        # Not `tenant_transaction`: the store is learnt inside the transaction (the lookup
        # scopes it in the same round trip), and an unknown shop's event is stored unscoped.
        async with services.sessions() as session, session.begin():
            tenant = await tenant_for_webhook(session, shop_domain) if shop_domain else None
            if not verified and tenant is not None:
                verified = verify_signature(body, signature, _store_secrets(services, tenant))
            hold.release()
            if not verified:
                log.info("webhook.rejected reason=signature shop=%s", shop_header[:255])
                return Outcome(Verdict.UNAUTHORIZED, error="HMAC signature does not match")
            try:
                delivery, held = await _vetted_delivery(session, request.headers, body, tenant)
            except (BadDelivery, ShopMismatch) as exc:
                log.info("webhook.rejected reason=%s shop=%s", exc, shop_header[:255])
                return Outcome(Verdict.BAD_REQUEST, error=str(exc))
            stored = await _store(session, delivery, tenant, held)
            if isinstance(stored, Outcome):
                return stored
            if tenant is not None and stored.applies:
                await _apply(session, delivery, tenant, stored)
    except _HandlerFailed as failed:
        # The handler's writes are undone with the whole transaction; the event is kept.
        received_at = failed.stored.received_at
        return await _store_failed(services, delivery, tenant, received_at, failed.error)
    log_outcome(stored.status, stored.reason, delivery.dedupe_key, _fields(delivery, stored.id))
    if tenant is not None and stored.applies and delivery.topic == REDACT_CUSTOMER:
        await services.job_queue.enqueue_redactions(tenant.id)  # recorded; scrubbed by a job
    return Outcome(
        Verdict(stored.status),
        event_id=stored.id,
        lag_seconds=_lag(delivery, stored.received_at),
    )


async def _receive_together(services: Services, headers: Headers, body: bytes) -> Outcome | None:
    """A verified event of a topic that applies together (a whole order, customer or
    product) joins its store's next batch: one transaction, one commit, multi-row writes for
    every event in it (`store_together`). None when it takes the one-by-one path instead."""
    topic = (shopify_header(headers, "topic") or "").lower()
    if not applies_together(topic):
        return None
    try:
        delivery = parse_delivery(headers, body)
        misfit = body_misfit(delivery.topic, delivery.shop_domain, delivery.payload or {})
        if misfit:
            raise BadDelivery(misfit)
    except BadDelivery as exc:
        log.info("webhook.rejected reason=%s shop=%s", exc, shopify_header(headers, "shop-domain"))
        return Outcome(Verdict.BAD_REQUEST, error=str(exc))
    try:
        return await services.webhook_batches.submit(delivery.shop_domain, delivery)
    except Unclaimed:
        # A batch holding its record has run past the coalescer's patience (stuck on a lock,
        # say): alone, it meets the limits any delivery meets (a connection within the pool's
        # timeout, statements within theirs) instead of waiting on that batch's.
        return None


def batch_claims(delivery: Delivery) -> tuple[tuple[str, ...], ...]:
    """What a batch holding `delivery` writes that another of its store's batches may too: the
    event's dedupe key and the record its body is (children are written under it). Kept out
    of concurrent batches (receiver.coalesce), the second batch never waits on the first's
    row locks: a redelivery or the next version of a record joins a later batch instead."""
    claims: tuple[tuple[str, ...], ...] = (("event", delivery.topic, delivery.dedupe_key),)
    resource = resource_for_topic(delivery.topic)
    record_id = delivery.payload.get("id") if delivery.payload else None
    if resource is not None and record_id is not None:
        claims += ((resource.name, str(record_id)),)
    return claims


_Opened = tuple[AsyncSession, WebhookTenant | None]


class BatchTransactions:
    """Where a store's webhook batches get their transaction: a session whose transaction
    has begun, the store's row read and (PostgreSQL) scoped to it (`tenant_for_webhook`).

    With `ahead_from`, a batch of two or more deliveries (the store is busy) has its store's
    next transaction opened while it runs, so the next batch starts writing at once: opening
    costs two round trips (BEGIN, the store's row), each waiting for the event loop behind
    the parsing of other requests. In one web process at 64 connections opening took a batch
    6.8 ms of its 38.7 ms, and taking one opened ahead 0.5 ms; the service went from 0.84x to
    0.97x the reference with one process and from 0.80x to 0.96x with two (bench/RESULTS.md,
    2026-12-03 03:23 and 04:08 UTC, one machine).

    At most one is opened ahead per store, and only while fewer connections than the pool's
    size are checked out: its overflow stays for requests, so one opened ahead never makes
    another store's request wait for a connection. One not taken within
    NEXT_TRANSACTION_IDLE_SECONDS is closed. The store's row is then read up to that long
    before the batch uses it, as it always was read before the batch's own writes: a status
    change committed meanwhile (an uninstall) reaches the batches that open after it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        ahead_from: Pool | None = None,
        idle_seconds: float = NEXT_TRANSACTION_IDLE_SECONDS,
    ) -> None:
        """`ahead_from`: the pool of `sessions`' engine, whose room below its size
        transactions opened ahead may take (None: none is opened ahead)."""
        self._sessions = sessions
        self._pool = ahead_from
        self._idle_seconds = idle_seconds
        self._next: dict[str, tuple[asyncio.Task[_Opened], asyncio.TimerHandle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def take(self, shop_domain: str) -> _Opened:
        """The store's transaction for a batch: the one opened ahead, or a new one. Its
        opening's failure (the database out of reach) is the batch's."""
        held = self._next.pop(shop_domain, None)
        if held is None:
            return await self._open(shop_domain)
        task, timer = held
        timer.cancel()
        return await task

    def open_next(self, shop_domain: str) -> None:
        """Open the store's next transaction in the background, unless one is open already or
        the pool has no room below its size."""
        if self._closed or shop_domain in self._next or not self._pool_has_room():
            return
        task = asyncio.create_task(self._open(shop_domain))
        timer = asyncio.get_running_loop().call_later(
            self._idle_seconds, self._expire, shop_domain, task
        )
        self._next[shop_domain] = (task, timer)

    async def close(self) -> None:
        """Close every transaction opened ahead and not taken, and open no more (the app's
        shutdown: a batch still running may try)."""
        self._closed = True
        held, self._next = self._next, {}
        for task, timer in held.values():
            timer.cancel()
            await self._discard(task)
        # Closes begun by the idle timer; none begins once the timers are cancelled.
        await asyncio.gather(*self._closing)

    def _pool_has_room(self) -> bool:
        return isinstance(self._pool, QueuePool) and self._pool.checkedout() < self._pool.size()

    async def _open(self, shop_domain: str) -> _Opened:
        session = self._sessions()
        try:
            return session, await tenant_for_webhook(session, shop_domain)
        except BaseException:
            await session.close()
            raise

    def _expire(self, shop_domain: str, task: asyncio.Task[_Opened]) -> None:
        held = self._next.get(shop_domain)
        if held is None or held[0] is not task:
            return
        del self._next[shop_domain]
        closing = asyncio.create_task(self._discard(task))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _discard(task: asyncio.Task[_Opened]) -> None:
        try:
            session, _ = await task
            await session.close()
        except Exception as exc:
            # Nobody took it: the next batch opens its own and meets the error itself.
            log.debug("webhook.batch_transaction_not_closed error=%s", failure_text(exc))


async def store_together(
    transactions: BatchTransactions, shop_domain: str, deliveries: list[Delivery]
) -> list[Outcome | None]:
    """Store and apply one store's batch of events in one transaction; the outcome of each,
    known once it committed. When the batch cannot be applied whole (one body the handler
    refuses, a deadlock), nothing of it is kept and every outcome is None: each event then
    takes the one-by-one path, where a failing one is stored `failed` without costing the
    others. An unknown store's events take that path too."""
    try:
        session, tenant = await transactions.take(shop_domain)
        # Closing the session rolls back whatever was not committed.
        async with session:
            if tenant is None:
                return [None] * len(deliveries)
            if len(deliveries) > 1:
                transactions.open_next(shop_domain)
            received_at = utcnow()
            reasons = [
                skip_reason(
                    delivery.topic,
                    delivery.shop_domain,
                    tenant.status,
                    delivery.payload,
                    tenant.shopify_shop_id,
                )
                for delivery in deliveries
            ]
            rows = [
                _event_values(
                    delivery,
                    tenant,
                    received_at,
                    EventStatus.IGNORED if reason else EventStatus.PROCESSED,
                    reason,
                )
                for delivery, reason in zip(deliveries, reasons, strict=True)
            ]
            ids = await store_events(
                session, rows, [delivery.payload_text for delivery in deliveries]
            )
            applying: list[tuple[str, dict[str, Any]]] = []
            duplicates: list[Delivery] = []
            for delivery, reason, event_id in zip(deliveries, reasons, ids, strict=True):
                if event_id is None:
                    duplicates.append(delivery)
                elif reason is None and delivery.payload is not None:
                    applying.append((delivery.topic, delivery.payload))
            if duplicates:
                await _duplicates(session, duplicates)
            if applying:
                await apply_events_together(session, tenant.id, applying)
            await session.commit()
        BATCH_EVENTS.observe(len(deliveries))
    except Exception as exc:
        # The database out of reach (no connection free in time, connection lost, statement
        # cancelled) is the 503 Shopify retries, for the batch as for one event: one by one
        # would only wait for it again.
        if is_disconnect(exc) or isinstance(exc, DATABASE_UNREACHABLE):
            raise
        log.warning(
            "webhook.batch_failed shop=%s events=%d error=%s: applying them one by one",
            shop_domain,
            len(deliveries),
            failure_text(exc),
        )
        return [None] * len(deliveries)
    outcomes: list[Outcome | None] = []
    for delivery, reason, event_id in zip(deliveries, reasons, ids, strict=True):
        if event_id is None:
            outcomes.append(Outcome(Verdict.DUPLICATE))
            continue
        status = EventStatus.IGNORED if reason else EventStatus.PROCESSED
        log_outcome(status, reason, delivery.dedupe_key, _fields(delivery, event_id))
        outcomes.append(
            Outcome(Verdict(status), event_id=event_id, lag_seconds=_lag(delivery, received_at))
        )
    return outcomes


@dataclass(frozen=True)
class _Stored:
    """An inbox row just inserted, with the outcome it will have if its handler succeeds."""

    id: int
    status: EventStatus
    reason: str | None  # why it is ignored, or None when it is applied
    received_at: datetime

    @property
    def applies(self) -> bool:
        return self.reason is None


async def _store(
    session: AsyncSession, delivery: Delivery, tenant: WebhookTenant | None, held: int | None
) -> _Stored | Outcome:
    """Insert the inbox row (a duplicate's Outcome when the event was stored before)."""
    if tenant is None:
        await use_all_tenants(session)  # an unknown shop's event belongs to no tenant yet
    reason = skip_reason(
        delivery.topic,
        delivery.shop_domain,
        tenant.status if tenant else None,
        delivery.payload,
        held,
    )
    if delivery.body_note:
        reason = f"{reason}; {delivery.body_note}"
    status = EventStatus.IGNORED if reason else EventStatus.PROCESSED
    # Stored with the outcome it will have if the handler succeeds; a failing handler
    # rolls everything back and the event is stored again as `failed` (_store_failed).
    received_at = utcnow()
    event_id = await _store_event(session, delivery, tenant, received_at, status, reason)
    if event_id is None:
        return await _duplicate(session, delivery)
    return _Stored(event_id, status, reason, received_at)


async def _apply(
    session: AsyncSession, delivery: Delivery, tenant: WebhookTenant, stored: _Stored
) -> None:
    """Run the topic's handler in the inbox row's transaction; _HandlerFailed when it raises
    (a lost database connection propagates: nothing can be recorded, the answer is 503)."""
    context = EventContext(
        tenant_id=tenant.id,
        topic=delivery.topic,
        webhook_event_id=stored.id,
        triggered_at=delivery.triggered_at,
        received_at=stored.received_at,
    )
    try:
        await apply_event(session, context, delivery.payload)
    except Exception as exc:
        if is_disconnect(exc):
            raise
        raise _HandlerFailed(exc, stored) from exc


async def _vetted_delivery(
    session: AsyncSession, headers: Headers, body: bytes, tenant: WebhookTenant | None
) -> tuple[Delivery, int | None]:
    """The verified request as a Delivery, and the shop id held for its store afterwards;
    BadDelivery or ShopMismatch when the body cannot be what the headers say."""
    delivery = parse_delivery(headers, body)
    held = tenant.shopify_shop_id if tenant else None
    if delivery.payload is not None:
        misfit = body_misfit(delivery.topic, delivery.shop_domain, delivery.payload)
        if misfit:
            raise BadDelivery(misfit)
        held = await vet_shop(
            session,
            delivery.topic,
            delivery.shop_domain,
            delivery.payload,
            tenant.id if tenant else None,
            held,
        )
    return delivery, held


class _HandlerFailed(Exception):
    def __init__(self, error: Exception, stored: _Stored) -> None:
        super().__init__(str(error))
        self.error = error
        self.stored = stored


def _store_secrets(services: Services, tenant: WebhookTenant) -> list[str]:
    try:
        return webhook_secrets(services.secret_box, tenant)
    except InvalidToken as exc:
        log.error("webhook.secret_undecryptable tenant=%s", tenant.id)
        raise ServiceUnavailable(
            "the store's webhook secret cannot be decrypted with ENCRYPTION_KEYS"
        ) from exc


def _fields(delivery: Delivery, event_id: int | None) -> dict[str, Any]:
    return {
        "shop": delivery.shop_domain,
        "topic": delivery.topic,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "inbox_id": event_id,
    }


def _lag(delivery: Delivery, received_at: datetime) -> float | None:
    if delivery.triggered_at is None:
        return None
    return max(0.0, (received_at - delivery.triggered_at).total_seconds())


async def _store_event(
    session: AsyncSession,
    delivery: Delivery,
    tenant: WebhookTenant | None,
    received_at: datetime,
    status: str,
    error: str | None,
) -> int | None:
    """Insert the inbox row with its dedupe key; None when this event was stored before (a
    duplicate). Of two concurrent copies of one event exactly one gets an id back and goes on
    to apply it; the other waits for that commit (or rollback): see handlers.inbox."""
    return await store_event(session, _event_values(delivery, tenant, received_at, status, error))


def _event_values(
    delivery: Delivery,
    tenant: WebhookTenant | None,
    received_at: datetime,
    status: str,
    error: str | None,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant.id if tenant else None,
        "shop_domain": delivery.shop_domain,
        "topic": delivery.topic,
        "event_id": delivery.event_id,
        "webhook_id": delivery.webhook_id,
        "dedupe_key": delivery.dedupe_key,
        "api_version": delivery.api_version,
        "triggered_at": delivery.triggered_at,
        "received_at": received_at,
        "processed_at": received_at,
        "status": status,
        "error": error,
        "attempts": 1,
        "payload": delivery.payload,
    }


async def _duplicate(session: AsyncSession, delivery: Delivery) -> Outcome:
    await _duplicates(session, [delivery])
    return Outcome(Verdict.DUPLICATE)


async def _duplicates(session: AsyncSession, deliveries: list[Delivery]) -> None:
    """Log and count redeliveries of stored events, all in one round trip."""
    for delivery in deliveries:
        log.info(
            "webhook.duplicate shop=%s topic=%s event=%s",
            delivery.shop_domain,
            delivery.topic,
            delivery.dedupe_key,
            extra=_fields(delivery, None),
        )
    await count_duplicates(
        session,
        [(delivery.shop_domain, delivery.topic, delivery.dedupe_key) for delivery in deliveries],
    )


async def _store_failed(
    services: Services,
    delivery: Delivery,
    tenant: WebhookTenant | None,
    received_at: datetime,
    error: Exception,
) -> Outcome:
    note = failure_text(error)
    scope = (
        tenant_transaction(services.sessions, tenant.id)
        if tenant is not None
        else cross_store_transaction(services.sessions)
    )
    async with scope as session:
        event_id = await _store_event(
            session, delivery, tenant, received_at, EventStatus.FAILED, note
        )
        if event_id is None:  # a concurrent copy was stored while ours rolled back
            return await _duplicate(session, delivery)
        max_attempts = services.settings.event_max_attempts
        await schedule_retry(session, event_id, 1, received_at, max_attempts)
    log_outcome(EventStatus.FAILED, note, delivery.dedupe_key, _fields(delivery, event_id))
    return Outcome(Verdict.FAILED, event_id=event_id, lag_seconds=_lag(delivery, received_at))
