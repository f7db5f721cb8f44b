"""A store's webhook subscriptions, as the Admin API's `webhookSubscription*` operations see
them, plus what only Shopify can do to them: drop one after repeated failed deliveries.

Topics are kept in GraphQL enum spelling (``ORDERS_CREATE``); ``enum_topic`` converts the
REST spelling (``orders/create``) the webhooks themselves carry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime

from .clock import Clock
from .data import gid

# SHOPIFY.md: after 8 consecutive failed deliveries, an API-created subscription is deleted.
FAILURES_BEFORE_REMOVAL = 8
SUBSCRIPTION_ID_BASE = 1_300_000_000


def enum_topic(topic: str) -> str:
    """``orders/partially_fulfilled`` -> ``ORDERS_PARTIALLY_FULFILLED`` (already-enum passes)."""
    return topic.replace("/", "_").upper()


def iso_seconds(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


class SubscriptionError(ValueError):
    """A user error as `webhookSubscriptionCreate` reports it: field path and message."""

    def __init__(self, message: str, field_path: tuple[str, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = list(field_path)


@dataclass(frozen=True)
class Subscription:
    legacy_id: int
    topic: str  # enum spelling
    uri: str
    api_version: str
    created_at: str
    updated_at: str
    format: str = "JSON"
    name: str | None = None
    # Consecutive failed deliveries; reset by a success.
    failures: int = field(default=0, compare=False)

    @property
    def id(self) -> str:
        return gid("WebhookSubscription", self.legacy_id)


class SubscriptionRegistry:
    """Thread-safe: the simulator's server thread and a test's thread both use it."""

    def __init__(self, clock: Clock, api_version: str) -> None:
        self._clock = clock
        self._api_version = api_version
        self._lock = threading.Lock()
        self._by_id: dict[int, Subscription] = {}
        self._next_id = SUBSCRIPTION_ID_BASE
        self.removed: list[Subscription] = []  # dropped by "Shopify", newest last

    # -- the Admin API --

    def create(
        self, topic: str, uri: str, *, format: str = "JSON", name: str | None = None
    ) -> Subscription:
        topic = enum_topic(topic)
        if not uri:
            raise SubscriptionError("Address can't be blank", ("webhookSubscription", "uri"))
        with self._lock:
            if any(s.topic == topic and s.uri == uri for s in self._by_id.values()):
                raise SubscriptionError(
                    "Address for this topic has already been taken",
                    ("webhookSubscription", "callbackUrl"),
                )
            self._next_id += 1
            stamp = iso_seconds(self._clock.now())
            subscription = Subscription(
                legacy_id=self._next_id,
                topic=topic,
                uri=uri,
                api_version=self._api_version,
                created_at=stamp,
                updated_at=stamp,
                format=format,
                name=name,
            )
            self._by_id[subscription.legacy_id] = subscription
            return subscription

    def update(self, legacy_id: int, *, uri: str | None = None) -> Subscription | None:
        with self._lock:
            current = self._by_id.get(legacy_id)
            if current is None:
                return None
            changed = replace(
                current,
                uri=uri if uri else current.uri,
                updated_at=iso_seconds(self._clock.now()),
            )
            self._by_id[legacy_id] = changed
            return changed

    def delete(self, legacy_id: int) -> bool:
        with self._lock:
            return self._by_id.pop(legacy_id, None) is not None

    def get(self, legacy_id: int) -> Subscription | None:
        with self._lock:
            return self._by_id.get(legacy_id)

    def list(self, topics: list[str] | None = None, uri: str | None = None) -> list[Subscription]:
        """In id order, optionally filtered like the `webhookSubscriptions` arguments."""
        wanted = {enum_topic(t) for t in topics} if topics else None
        with self._lock:
            return [
                s
                for _, s in sorted(self._by_id.items())
                if (wanted is None or s.topic in wanted) and (uri is None or s.uri == uri)
            ]

    # -- what Shopify does on its own --

    def for_topic(self, topic: str) -> list[Subscription]:
        """Where a webhook of this topic goes now (REST or enum spelling)."""
        return self.list([topic])

    def drop(self, topic: str | None = None) -> list[Subscription]:
        """Remove subscriptions (one topic's, or all) as Shopify does after repeated failures."""
        wanted = enum_topic(topic) if topic else None
        with self._lock:
            gone = [s for s in self._by_id.values() if wanted is None or s.topic == wanted]
            for subscription in gone:
                del self._by_id[subscription.legacy_id]
            self.removed.extend(gone)
            return gone

    def delivered(self, legacy_id: int, ok: bool) -> bool:
        """Record a delivery outcome; False when this failure made Shopify remove it."""
        with self._lock:
            current = self._by_id.get(legacy_id)
            if current is None:
                return False
            failures = 0 if ok else current.failures + 1
            if failures >= FAILURES_BEFORE_REMOVAL:
                del self._by_id[legacy_id]
                self.removed.append(current)
                return False
            self._by_id[legacy_id] = replace(current, failures=failures)
            return True
