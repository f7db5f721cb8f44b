"""Webhooks the way Shopify sends them: each record change a test makes through the store
becomes an event of the right topic, rendered as the REST resource, signed with the app's
client secret and POSTed to every subscription of that topic in ``store.subscriptions``.

Off until :meth:`WebhookEmitter.enable` so that stores built by other tests never send
anything. Delivery is synchronous by default (the change returns after every subscriber has
answered), which keeps tests deterministic; :meth:`hold` / :meth:`release` queue events and
deliver them later in any order, and ``duplicate=True`` sends every delivery twice, as Shopify
does when an acknowledgement is lost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import httpx

from .data import mix64, stream_key
from .rest import DEFAULT_UTC_OFFSET, DEFAULT_VARIANT_LIMIT, RestRenderer, SpendStyle
from .subscriptions import Subscription

if TYPE_CHECKING:
    from .store import FakeStore

Action = Literal["create", "update", "delete"]
DeliveryOrder = Literal["fifo", "reverse", "shuffled"] | Sequence[int]

# REST spelling, as X-Shopify-Topic carries it. Customers and products say `update`, orders
# say `updated`: Shopify's own inconsistency.
TOPICS: dict[str, dict[Action, str]] = {
    "orders": {"create": "orders/create", "update": "orders/updated", "delete": "orders/delete"},
    "customers": {
        "create": "customers/create",
        "update": "customers/update",
        "delete": "customers/delete",
    },
    "products": {
        "create": "products/create",
        "update": "products/update",
        "delete": "products/delete",
    },
    "locations": {
        "create": "locations/create",
        "update": "locations/update",
        "delete": "locations/delete",
    },
}
# SHOPIFY.md: Shopify must connect within 1 s and have the whole response within 5 s.
DELIVERY_TIMEOUT = httpx.Timeout(5.0, connect=1.0)


def sign(body: bytes, secret: str) -> str:
    """X-Shopify-Hmac-Sha256: base64 HMAC-SHA256 of the exact body bytes.

    Written here rather than imported from the receiver, so the receiver's verifier is
    checked against an independent implementation.
    """
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def filter_matches(expression: str, payload: dict[str, Any]) -> bool:
    """A subscription's ``filter`` (Shopify search syntax) against a payload.

    The subset simulated: terms joined by ``AND``, each ``path:value`` or ``path:>=value``
    (``>``, ``<``, ``<=`` too), ``path`` dotted into objects and lists (any element matching),
    values bare or quoted, compared as numbers when both sides are, else case-insensitively.
    Anything else (``OR``, ``NOT``, parentheses, wildcards) raises: a filter the simulator
    would silently misread is worse than none.
    """
    terms = [term.strip() for term in re.split(r"\s+AND\s+", expression.strip())]
    for term in terms:
        match = _TERM.fullmatch(term)
        if match is None or re.search(r"\s(OR|NOT)\s|[()*]", term):
            raise NotImplementedError(f"fakeshop: webhook filter {term!r} is not simulated")
        path, operator, value = match.group("path"), match.group("op"), match.group("value")
        value = value.strip("\"'")
        if not any(_compare(found, operator, value) for found in _values_at(payload, path)):
            return False
    return True


_TERM = re.compile(r"(?P<path>[A-Za-z_][\w.]*):(?P<op>>=|<=|>|<)?(?P<value>\S.*)")


def _values_at(value: Any, path: str) -> list[Any]:
    found = [value]
    for part in path.split("."):
        step: list[Any] = []
        for item in found:
            items = item if isinstance(item, list) else [item]
            step.extend(entry[part] for entry in items if isinstance(entry, dict) and part in entry)
        found = step
    return [item for value in found for item in (value if isinstance(value, list) else [value])]


def _compare(found: Any, operator: str | None, wanted: str) -> bool:
    try:
        left: Any = float(found)
        right: Any = float(wanted)
    except (TypeError, ValueError):
        left, right = str(found).lower(), wanted.lower()
    if operator is None:
        return bool(left == right)
    return bool(
        {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[operator]
    )


def _serialise(payload: dict[str, Any]) -> bytes:
    # Compact UTF-8, like Shopify's bodies; the signature covers exactly these bytes.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def triggered_at(moment: datetime) -> str:
    """Shopify's format: UTC with nanoseconds, ``2023-03-29T18:00:27.877041743Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


@dataclass
class Attempt:
    """One POST of one delivery."""

    status: int | None  # None: no response (connection refused, timeout, dropped)
    error: str | None
    duplicate: bool = False  # a second copy sent on purpose

    @property
    def ok(self) -> bool:
        # A 2xx is success; anything else, redirects included, is a failure (SHOPIFY.md).
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Delivery:
    """An event for one subscription. Its webhook id stays the same across retries."""

    event: WebhookEvent
    subscription: Subscription
    webhook_id: str
    body: bytes  # the event's body, cut to the subscription's include_fields if it has any
    signature: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return any(attempt.ok for attempt in self.attempts)

    def headers(self) -> dict[str, str]:
        event = self.event
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": event.topic,
            "X-Shopify-Hmac-Sha256": self.signature,
            "X-Shopify-Shop-Domain": event.shop_domain,
            "X-Shopify-API-Version": self.subscription.api_version,
            "X-Shopify-Webhook-Id": self.webhook_id,
            "X-Shopify-Event-Id": event.event_id,
            "X-Shopify-Triggered-At": triggered_at(event.triggered_at),
        }
        if self.subscription.name:
            headers["X-Shopify-Name"] = self.subscription.name
        return headers


@dataclass
class WebhookEvent:
    """One underlying event: a topic and a body, fanned out to the topic's subscriptions."""

    sequence: int  # emission order, from 1
    topic: str
    shop_domain: str
    event_id: str
    triggered_at: datetime
    payload: dict[str, Any]
    body: bytes  # the exact bytes signed and sent
    signature: str
    resource: str | None = None
    index: int | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    skipped: bool = False  # no subscription when it was due: never sent

    @property
    def shopify_id(self) -> int | None:
        value = self.payload.get("id")
        return value if isinstance(value, int) else None


METAFIELD_OWNERS = frozenset({"orders", "products", "customers"})


class WebhookEmitter:
    """A store's webhook sender. Thread-safe: changes can come from the test's thread and from
    request hooks running on the simulator's server thread.

    Counters (events and attempts): ``emitted`` events, ``delivered`` and ``failed`` POSTs,
    ``skipped`` events nobody subscribed to (or whose subscription was gone when they were
    due), ``duplicates`` extra copies sent on purpose. ``log`` keeps every event in emission
    order.
    """

    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.enabled = False
        self.secret = store.tokens.client_secret
        self.duplicate = False
        self.renderer = RestRenderer(store)
        self.log: list[WebhookEvent] = []
        self.emitted = 0
        self.delivered = 0
        self.failed = 0
        self.skipped = 0
        self.duplicates = 0
        self._queue: list[WebhookEvent] = []
        self._holding = False
        self._queued_mode = False
        self._client: httpx.Client | None = None
        self._own_client = False
        # Re-entrant: deliveries run under it, so two threads never interleave the POSTs of
        # one flush, and emit() and flush() deliver while already holding it.
        self._lock = threading.RLock()
        self._key = stream_key(store.seed, f"webhooks:{store.shop_domain}")

    # -- switching on and off --

    def enable(
        self,
        secret: str | None = None,
        *,
        queued: bool = False,
        duplicate: bool = False,
        client: httpx.Client | None = None,
        utc_offset: timedelta = DEFAULT_UTC_OFFSET,
        spend: SpendStyle = "total_spent",
        variant_limit: int = DEFAULT_VARIANT_LIMIT,
    ) -> WebhookEmitter:
        """Start emitting. ``secret`` signs (default: the store's app client secret);
        ``queued`` keeps events until :meth:`flush`; ``client`` replaces the HTTP client
        (e.g. one with an ``httpx.MockTransport``); the emitter closes it on :meth:`disable`."""
        with self._lock:
            if secret is not None:
                self.secret = secret
            self._queued_mode = queued
            self.duplicate = duplicate
            self.renderer = RestRenderer(
                self.store, utc_offset=utc_offset, spend=spend, variant_limit=variant_limit
            )
            if client is not None:
                self._close_client()
                self._client, self._own_client = client, True
            self.enabled = True
        return self

    def disable(self) -> None:
        """Stop emitting; queued events are dropped and the HTTP client closed."""
        with self._lock:
            self.enabled = False
            self._queue.clear()
            self._holding = False
            self._close_client()

    def _close_client(self) -> None:
        if self._client is not None and self._own_client:
            self._client.close()
        self._client = None

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=DELIVERY_TIMEOUT, follow_redirects=False)
            self._own_client = True
        return self._client

    # -- emitting --

    def record_changed(self, resource: str, action: Action, index: int) -> WebhookEvent | None:
        """Called by the store after each create/update/delete; emits when enabled."""
        if not self.enabled:
            return None
        topic = TOPICS[resource][action]
        if action == "delete":
            payload = self.renderer.deleted(
                resource, self.store.resource(resource).numeric_id(index)
            )
        else:
            node = self.store.resource(resource).node(index)
            if node is None:
                raise KeyError(f"{resource} {index} is not live")
            payload = self.renderer.render(resource, node)
        return self.emit(topic, payload, resource=resource, index=index)

    def emit(
        self,
        topic: str,
        payload: dict[str, Any] | None = None,
        *,
        resource: str | None = None,
        index: int | None = None,
    ) -> WebhookEvent:
        """Emit any topic. Without ``payload``, ``resource``/``index`` name the record to
        render (``emit("orders/paid", resource="orders", index=5)``)."""
        if payload is None:
            if resource is None or index is None:
                raise ValueError("give a payload, or the resource and index to render")
            node = self.store.resource(resource).node(index)
            if node is None:
                raise KeyError(f"{resource} {index} is not live")
            payload = self.renderer.render(resource, node)
        body = _serialise(payload)
        # Where an event goes is decided when it happens: a subscription created later does
        # not receive it, and a filter it does not match keeps it from that subscription.
        subscriptions = [
            subscription
            for subscription in self.store.subscriptions.for_topic(topic)
            if not getattr(subscription, "filter", None)
            or filter_matches(subscription.filter, payload)
        ]
        with self._lock:
            self.emitted += 1
            event = WebhookEvent(
                sequence=self.emitted,
                topic=topic,
                shop_domain=self.store.shop_domain,
                event_id=self._uuid(self.emitted, 0),
                triggered_at=self.store.clock.now(),
                payload=payload,
                body=body,
                signature=sign(body, self.secret),
                resource=resource,
                index=index,
            )
            event.deliveries = [
                self._delivery(event, subscription) for subscription in subscriptions
            ]
            self.log.append(event)
            if not subscriptions:
                event.skipped = True
                self.skipped += 1
                return event
            if self._holding or self._queued_mode:
                self._queue.append(event)
                return event
            self._deliver_event(event, duplicate=self.duplicate)
        return event

    def _delivery(self, event: WebhookEvent, subscription: Subscription) -> Delivery:
        body, signature = event.body, event.signature
        payload = event.payload
        # A subscription with metafieldNamespaces receives the record's metafields of those
        # namespaces in its body (`metafields`), and no others.
        namespaces = getattr(subscription, "metafield_namespaces", ())
        if namespaces and event.resource in METAFIELD_OWNERS and event.index is not None:
            node = self.store.resource(event.resource).node(event.index)
            if node is not None and not event.topic.endswith("/delete"):
                metafields = self.renderer.metafields(event.resource, node, namespaces)
                payload = {**payload, "metafields": metafields}
                body = _serialise(payload)
                signature = sign(body, self.secret)
        # A subscription with includeFields receives only those (top-level) fields.
        include = getattr(subscription, "include_fields", ())
        if include:
            kept = {name: payload[name] for name in include if name in payload}
            body = _serialise(kept)
            signature = sign(body, self.secret)
        webhook_id = self._uuid(event.sequence, subscription.legacy_id)
        return Delivery(event, subscription, webhook_id, body, signature)

    def _uuid(self, sequence: int, salt: int) -> str:
        # Deterministic per (store, emission): a failing run can be replayed exactly.
        high = mix64(self._key ^ (sequence * 0x9E3779B97F4A7C15 + salt) & ((1 << 64) - 1))
        low = mix64(high ^ salt)
        return str(uuid.UUID(int=(high << 64) | low, version=4))

    # -- delivering --

    def _post(self, delivery: Delivery, duplicate: bool) -> Attempt:
        # To the subscription's address now: a retry follows an address the app corrected.
        current = self.store.subscriptions.get(delivery.subscription.legacy_id)
        try:
            response = self._http().post(
                (current or delivery.subscription).uri,
                content=delivery.body,
                headers=delivery.headers(),
            )
            attempt = Attempt(response.status_code, None, duplicate)
        except httpx.HTTPError as exc:
            attempt = Attempt(None, f"{type(exc).__name__}: {exc}", duplicate)
        delivery.attempts.append(attempt)
        if attempt.ok:
            self.delivered += 1
        else:
            self.failed += 1
        if duplicate:
            self.duplicates += 1
        # Eight consecutive failures and Shopify deletes an API-created subscription.
        self.store.subscriptions.delivered(delivery.subscription.legacy_id, attempt.ok)
        return attempt

    def _deliver_event(self, event: WebhookEvent, *, duplicate: bool) -> None:
        with self._lock:
            live = 0
            for delivery in event.deliveries:
                if self.store.subscriptions.get(delivery.subscription.legacy_id) is None:
                    continue  # removed while the event waited: Shopify drops it
                live += 1
                self._post(delivery, duplicate=False)
                if duplicate:
                    self._post(delivery, duplicate=True)
            if live == 0:
                event.skipped = True
                self.skipped += 1

    def redeliver(self, event: WebhookEvent) -> None:
        """Send ``event`` again to its subscriptions: same bytes, same webhook and event ids,
        as a retry after a lost acknowledgement looks."""
        with self._lock:
            for delivery in event.deliveries:
                if self.store.subscriptions.get(delivery.subscription.legacy_id) is not None:
                    self._post(delivery, duplicate=True)

    def retry_failed(self) -> int:
        """One retry round: every delivery that has not succeeded yet is sent again (same
        ids and body). Returns how many were sent; subscriptions that reach eight
        consecutive failures are removed, and their deliveries are not retried."""
        with self._lock:
            due = [
                delivery
                for event in self.log
                for delivery in event.deliveries
                if delivery.attempts
                and not delivery.ok
                and self.store.subscriptions.get(delivery.subscription.legacy_id) is not None
            ]
            for delivery in due:
                self._post(delivery, duplicate=False)
            return len(due)

    # -- timing --

    def hold(self) -> None:
        """Queue events from now on instead of delivering them."""
        with self._lock:
            self._holding = True

    def release(
        self,
        order: DeliveryOrder = "fifo",
        *,
        seed: int | None = None,
        duplicate: bool | None = None,
    ) -> list[WebhookEvent]:
        """Stop holding and deliver what was queued, in ``order``."""
        with self._lock:
            self._holding = False
            return self.flush(order, seed=seed, duplicate=duplicate)

    @contextmanager
    def held(
        self,
        order: DeliveryOrder = "fifo",
        *,
        seed: int | None = None,
        duplicate: bool | None = None,
    ) -> Iterator[list[WebhookEvent]]:
        """``with emitter.held("reverse"):`` changes inside are delivered on leaving, in
        ``order``; the yielded list receives the delivered events."""
        self.hold()
        delivered: list[WebhookEvent] = []
        try:
            yield delivered
        finally:
            delivered.extend(self.release(order, seed=seed, duplicate=duplicate))

    def flush(
        self,
        order: DeliveryOrder = "fifo",
        *,
        seed: int | None = None,
        duplicate: bool | None = None,
    ) -> list[WebhookEvent]:
        """Deliver queued events: ``fifo``, ``reverse``, ``shuffled`` (by ``seed``) or a
        permutation of positions. Returns them in the order delivered."""
        with self._lock:
            queue, self._queue = self._queue, []
            if order == "fifo":
                ordered = queue
            elif order == "reverse":
                ordered = queue[::-1]
            elif order == "shuffled":
                ordered = list(queue)
                random.Random(seed).shuffle(ordered)
            else:
                positions = list(order)
                if sorted(positions) != list(range(len(queue))):
                    self._queue = queue
                    raise ValueError(f"order must be a permutation of 0..{len(queue) - 1}")
                ordered = [queue[position] for position in positions]
            for event in ordered:
                self._deliver_event(
                    event, duplicate=self.duplicate if duplicate is None else duplicate
                )
            return ordered

    @property
    def pending(self) -> int:
        """Events queued and not yet delivered."""
        with self._lock:
            return len(self._queue)

    # -- reading --

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                "emitted": self.emitted,
                "delivered": self.delivered,
                "failed": self.failed,
                "skipped": self.skipped,
                "duplicates": self.duplicates,
                "pending": len(self._queue),
            }

    @property
    def last(self) -> WebhookEvent | None:
        with self._lock:
            return self.log[-1] if self.log else None

    def events(self, topic: str | None = None) -> list[WebhookEvent]:
        with self._lock:
            return [event for event in self.log if topic is None or event.topic == topic]
