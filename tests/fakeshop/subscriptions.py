"""A store's webhook subscriptions, as the Admin API's `webhookSubscription*` operations see
them, plus what only Shopify can do to them: drop one after repeated failed deliveries.

Topics are kept in GraphQL enum spelling (``ORDERS_CREATE``); ``enum_topic`` converts the
REST spelling (``orders/create``) the webhooks themselves carry.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

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
    """User errors as `webhookSubscriptionCreate`/`Update` report them: field path and message
    (the first one; Shopify may report several, all in ``user_errors``)."""

    def __init__(
        self, message: str, field_path: tuple[str, ...], *more: tuple[str, tuple[str, ...]]
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field_path = list(field_path)
        self.errors = [(message, tuple(field_path)), *more]

    @property
    def user_errors(self) -> list[dict[str, Any]]:
        return [{"field": list(path), "message": text} for text, path in self.errors]


# Where Shopify points address errors, whether the client sent `uri` or `callbackUrl`.
ADDRESS_FIELD = ("webhookSubscription", "callbackUrl")
_SCHEMES = ("https://", "http://", "pubsub://", "arn:aws:events:")
_INTERNAL_HOSTS = re.compile(
    r"^(localhost|127\.\d+\.\d+\.\d+|0\.0\.0\.0|::1|.*\.local|.*\.internal|"
    r".*\.myshopify\.com|.*\.shopify\.com)$",
    re.IGNORECASE,
)
_UNSET: Any = object()


def address_errors(uri: str, https_only: bool) -> list[tuple[str, tuple[str, ...]]]:
    """What Shopify says about a subscription address (empty: acceptable)."""
    if not uri.strip():
        return [("Address can't be blank", ADDRESS_FIELD)]
    errors: list[tuple[str, tuple[str, ...]]] = []
    if not uri.startswith(_SCHEMES) or (
        uri.startswith(("https://", "http://")) and not urlsplit(uri).hostname
    ):
        return [("Address is invalid", ADDRESS_FIELD)]
    if https_only and uri.startswith("http://"):
        errors.append(("Address protocol http:// is not supported", ADDRESS_FIELD))
    host = (urlsplit(uri).hostname or "") if uri.startswith(("https://", "http://")) else ""
    if https_only and host and _INTERNAL_HOSTS.match(host):
        errors.append(("Address cannot be a Shopify or an internal domain", ADDRESS_FIELD))
    return errors


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
    filter: str | None = None  # Shopify search syntax; only matching events are sent
    include_fields: tuple[str, ...] = ()  # empty: the whole payload
    # Namespaces whose metafields the records' bodies carry (`metafields`); none: no key.
    metafield_namespaces: tuple[str, ...] = ()
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
        # Shopify refuses http:// and internal addresses (localhost, 127.0.0.1, ...). Off by
        # default so tests can subscribe a receiver on loopback; switch on to see the refusal.
        self.https_only = False

    # -- the Admin API --

    def create(
        self,
        topic: str,
        uri: str,
        *,
        format: str = "JSON",
        name: str | None = None,
        filter: str | None = None,
        include_fields: tuple[str, ...] = (),
        metafield_namespaces: tuple[str, ...] = (),
    ) -> Subscription:
        topic = enum_topic(topic)
        with self._lock:
            candidate = Subscription(
                legacy_id=self._next_id + 1,
                topic=topic,
                uri=uri,
                api_version=self._api_version,
                created_at="",
                updated_at="",
                format=format,
                name=name,
                filter=filter or None,
                include_fields=tuple(include_fields),
                metafield_namespaces=tuple(metafield_namespaces),
            )
            self._check(candidate)
            self._next_id += 1
            stamp = iso_seconds(self._clock.now())
            subscription = replace(candidate, created_at=stamp, updated_at=stamp)
            self._by_id[subscription.legacy_id] = subscription
            return subscription

    def update(
        self,
        legacy_id: int,
        *,
        uri: str | None = None,
        format: str | None = None,
        name: str | None = _UNSET,
        filter: str | None = _UNSET,
        include_fields: tuple[str, ...] | None = None,
        metafield_namespaces: tuple[str, ...] | None = None,
    ) -> Subscription | None:
        """Change what is given (None or left out: unchanged); None if there is no such id."""
        with self._lock:
            current = self._by_id.get(legacy_id)
            if current is None:
                return None
            changed = replace(
                current,
                uri=uri if uri is not None else current.uri,
                format=format or current.format,
                name=current.name if name is _UNSET else name,
                filter=current.filter if filter is _UNSET else (filter or None),
                include_fields=(
                    current.include_fields if include_fields is None else tuple(include_fields)
                ),
                metafield_namespaces=(
                    current.metafield_namespaces
                    if metafield_namespaces is None
                    else tuple(metafield_namespaces)
                ),
                updated_at=iso_seconds(self._clock.now()),
            )
            self._check(changed)
            self._by_id[legacy_id] = changed
            return changed

    def _check(self, candidate: Subscription) -> None:
        """Raise the user errors Shopify would give for ``candidate`` (lock held)."""
        errors = address_errors(candidate.uri, self.https_only)
        # Shopify keeps one subscription per topic, address, format and filter.
        if any(
            s.legacy_id != candidate.legacy_id
            and (s.topic, s.uri, s.format, s.filter)
            == (candidate.topic, candidate.uri, candidate.format, candidate.filter)
            for s in self._by_id.values()
        ):
            errors.append(("Address for this topic has already been taken", ADDRESS_FIELD))
        if errors:
            (message, path), *more = errors
            raise SubscriptionError(message, path, *more)

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
