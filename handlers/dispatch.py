"""Topic -> handler registry, and the one place an inbox event gets applied."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from models import Tenant, WebhookEvent, utcnow
from models.tenancy import use_tenant

log = logging.getLogger("shopify_receiver.handlers")

# Shopify sends these even after uninstall (shop/redact comes 48 hours later).
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
MAX_ERROR_LENGTH = 4000


@dataclass(frozen=True)
class EventContext:
    tenant: Tenant
    topic: str
    webhook_event_id: int | None
    triggered_at: datetime | None
    received_at: datetime

    @property
    def tenant_id(self) -> int:
        return self.tenant.id


Handler = Callable[[AsyncSession, EventContext, dict[str, Any]], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}

# The resource each data topic's body is, as its admin_graphql_api_id names it.
TOPIC_RESOURCES = {"orders": "Order", "customers": "Customer", "products": "Product"}
SHOP_DOMAIN_FIELDS = ("shop_domain", "myshopify_domain")


def body_misfit(topic: str, shop_domain: str, payload: dict[str, Any]) -> str | None:
    """Why a correctly signed body cannot be what `topic` for `shop_domain` carries, or None.

    The signature covers the body only: topic and shop headers can be altered on a replayed
    body. Where the body names its shop or its resource, that wins over the headers.
    """
    for field in SHOP_DOMAIN_FIELDS:
        named = payload.get(field)
        if isinstance(named, str) and named.strip().lower() != shop_domain:
            return f"body's {field} {named!r} is not the X-Shopify-Shop-Domain {shop_domain!r}"
    family, _, action = topic.partition("/")
    resource = TOPIC_RESOURCES.get(family)
    if resource is None or action in {"edited", "redact", "data_request"}:
        return None
    if "id" not in payload:
        return f"{topic} body has no id"
    gid = payload.get("admin_graphql_api_id")
    if isinstance(gid, str) and not gid.startswith(f"gid://shopify/{resource}/"):
        return f"{topic} body is {gid.rsplit('/', 1)[0]!r}, not a {resource}"
    if action != "delete" and "updated_at" not in payload:
        return f"{topic} body has no updated_at"
    return None


def handles(*topics: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for topic in topics:
            if topic in HANDLERS:
                raise RuntimeError(f"two handlers for {topic}")
            HANDLERS[topic] = handler
        return handler

    return register


def handled_topics() -> list[str]:
    return sorted(HANDLERS)


async def process_event(session: AsyncSession, event: WebhookEvent) -> None:
    """Apply a stored event and record the outcome on it; used for first delivery and replay.

    The handler runs in a savepoint: when it raises, its writes are undone and the event is
    kept as `failed` with the error, so one bad payload never costs the inbox row.
    """
    if event.tenant_id is not None:
        # Write what the caller changed on the event under the caller's scope, then work as
        # the event's store: handlers never see another store's rows.
        await session.flush()
        await use_tenant(session, event.tenant_id)
    event.attempts += 1
    event.processed_at = utcnow()
    handler = HANDLERS.get(event.topic)
    tenant = await session.get(Tenant, event.tenant_id) if event.tenant_id else None
    if handler is None:
        _finish(event, "ignored", f"topic {event.topic} is not handled")
        return
    if tenant is None:
        _finish(event, "ignored", f"unknown shop {event.shop_domain}")
        return
    if tenant.status != "active" and event.topic not in COMPLIANCE_TOPICS:
        _finish(event, "ignored", f"shop is {tenant.status}")
        return
    context = EventContext(
        tenant=tenant,
        topic=event.topic,
        webhook_event_id=event.id,
        triggered_at=event.triggered_at,
        received_at=event.received_at,
    )
    try:
        async with session.begin_nested():
            await handler(session, context, event.payload or {})
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the database went away: nothing can be recorded, let the caller answer 503
        _fail(event, exc)
    except Exception as exc:
        _fail(event, exc)
    else:
        _finish(event, "processed", None)


def _finish(event: WebhookEvent, status: str, note: str | None) -> None:
    event.status = status
    event.error = note
    log.info(
        "webhook.%s shop=%s topic=%s event=%s note=%s",
        status,
        event.shop_domain,
        event.topic,
        event.dedupe_key,
        note,
        extra=event_fields(event),
    )


def _fail(event: WebhookEvent, exc: Exception) -> None:
    event.status = "failed"
    event.error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
    log.warning(
        "webhook.failed shop=%s topic=%s event=%s error=%s",
        event.shop_domain,
        event.topic,
        event.dedupe_key,
        event.error,
        extra=event_fields(event),
    )


def event_fields(event: WebhookEvent) -> dict[str, Any]:
    """Structured fields every log line about a webhook event carries."""
    return {
        "shop": event.shop_domain,
        "topic": event.topic,
        "webhook_id": event.webhook_id,
        "event_id": event.event_id,
        "inbox_id": event.id,
    }
