"""The one place an inbox event gets applied: which topics apply, what a body must look like,
and running the topic's handler from `handlers.topic_table`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.children import ChildSet, Tombstones, write_with_children
from handlers.context import EventContext
from handlers.errors import error_text
from handlers.resources import (
    INVENTORY_LEVEL_DELETE_TOPICS,
    INVENTORY_LEVEL_TOPICS,
    RESOURCES,
    child_for_topic,
    resource_for_topic,
)
from handlers.retries import backoff
from handlers.shop_identity import (
    COMPLIANCE_TOPICS,
    DESTRUCTIVE_TOPICS,
    ShopMismatch,
    check_shop_id,
    destructive_shape_misfit,
    learn_from_body,
    names_other_domain,
    unconfirmed_shop,
)
from handlers.topic_table import HANDLERS, SPECIAL_HANDLERS
from models import Tenant, WebhookEvent, utcnow
from models.statuses import EventStatus, TenantStatus
from models.tenancy import of_store, use_tenant

log = logging.getLogger("shopify_receiver.handlers")


def body_misfit(topic: str, shop_domain: str, payload: dict[str, Any]) -> str | None:
    """Why a correctly signed body cannot be what `topic` for `shop_domain` carries, or None.

    The signature covers the body only: topic and shop headers can be altered on a replayed
    body. Where the body names its shop or its resource, that wins over the headers. A topic
    we do not handle is stored whatever its body, so only handled topics are checked.
    """
    if topic not in HANDLERS:
        return None
    other_shop = names_other_domain(shop_domain, payload)
    if other_shop:
        return other_shop
    if topic in DESTRUCTIVE_TOPICS:
        return destructive_shape_misfit(topic, payload)
    if topic == "orders/edited":
        edit = payload.get("order_edit")
        if not isinstance(edit, dict) or "order_id" not in edit:
            return f"{topic} body has no order_edit with an order_id"
        return None
    if topic == "customers/purchasing_summary":
        # A summary of the customer's purchases, not the customer: it names them by gid.
        return None if payload.get("customerId") else f"{topic} body has no customerId"
    child = child_for_topic(topic)
    if child is not None:
        return _child_misfit(topic, child[1], payload)
    if topic in INVENTORY_LEVEL_TOPICS or topic in INVENTORY_LEVEL_DELETE_TOPICS:
        return _level_misfit(topic, payload)
    resource = resource_for_topic(topic)
    if resource is None:
        return None
    typename = resource.typename
    if "id" not in payload:
        return f"{topic} body has no id"
    gid = payload.get("admin_graphql_api_id")
    if isinstance(gid, str) and not gid.startswith(f"gid://shopify/{typename}/"):
        return f"{topic} body is {gid.rsplit('/', 1)[0]!r}, not a {typename}"
    if topic in resource.delete_topics:
        # A deletion notice carries the id and little else; a whole record (a captured
        # create or update) re-sent as a delete would tombstone a live row.
        if "updated_at" in payload or "created_at" in payload:
            return f"{topic} body is a whole {typename}, not a deletion notice"
        return None
    if "updated_at" not in payload:
        return f"{topic} body has no updated_at"
    return None


def _child_misfit(topic: str, child: ChildSet, payload: dict[str, Any]) -> str | None:
    """A body that is one child (a refund, a transaction, a fulfillment). Refunds and
    transactions both carry an id and an order_id, so only the gid tells them apart: it is
    required (Shopify's REST bodies of these always carry it). A fulfillment is ordered by
    its updated_at, so a body without one could not be ordered against a newer one."""
    if "id" not in payload:
        return f"{topic} body has no id"
    gid = payload.get("admin_graphql_api_id")
    if not isinstance(gid, str) or not gid.startswith(f"gid://shopify/{child.typename}/"):
        shown = gid.rsplit("/", 1)[0] if isinstance(gid, str) else "no admin_graphql_api_id"
        return f"{topic} body is {shown!r}, not a {child.typename}"
    absent = [key for key in child.body_keys if key not in payload]
    if absent:
        return f"{topic} body has no {', '.join(absent)}"
    return None


def _level_misfit(topic: str, payload: dict[str, Any]) -> str | None:
    """An inventory level names its item and location. Its gid (`gid://shopify/
    InventoryLevel/<n>?inventory_item_id=<item>`) names the item again: a level of another
    item replayed under these ids would not match. A disconnect carries the two ids only:
    a level's state (`available`) re-sent as a disconnect would remove a live level."""
    absent = [key for key in ("inventory_item_id", "location_id") if key not in payload]
    if absent:
        return f"{topic} body has no {', '.join(absent)}"
    gid = payload.get("admin_graphql_api_id")
    if gid is not None:
        if not isinstance(gid, str) or not gid.startswith("gid://shopify/InventoryLevel/"):
            return f"{topic} body is {str(gid).rsplit('/', 1)[0]!r}, not an InventoryLevel"
        _, _, query = gid.partition("?")
        named = dict(part.partition("=")[::2] for part in query.split("&") if part)
        if named.get("inventory_item_id") != str(payload["inventory_item_id"]):
            return f"{topic} body's gid names another inventory item"
    if topic in INVENTORY_LEVEL_DELETE_TOPICS:
        if "available" in payload:
            return f"{topic} body is a level's state, not a disconnection notice"
        return None
    if "updated_at" not in payload:
        return f"{topic} body has no updated_at"
    return None


async def vet_shop(
    session: AsyncSession,
    topic: str,
    shop_domain: str,
    payload: dict[str, Any],
    tenant_id: int | None,
    held: int | None,
) -> int | None:
    """For a destructive topic: raise ShopMismatch when the body's shop id is another shop's,
    and learn the store's id from a body naming both its domain and its id. Returns the shop
    id held for the store afterwards (for `skip_reason`)."""
    if topic not in DESTRUCTIVE_TOPICS:
        return held
    await check_shop_id(session, topic, shop_domain, payload, held)
    if tenant_id is None:
        return held
    return await learn_from_body(session, tenant_id, topic, shop_domain, payload, held)


def handled_topics() -> list[str]:
    return sorted(HANDLERS)


def skip_reason(
    topic: str,
    shop_domain: str,
    tenant_status: str | None,
    payload: Any,
    shopify_shop_id: int | None,
) -> str | None:
    """Why an event is stored `ignored` instead of applied, or None when it is applied.

    A destructive body that names the header's shop neither by domain nor by the shop id held
    (Shopify's samples use placeholders) waits, ignored, until the id is known.

    `shop/redact` applies only to a store that is not active: Shopify sends it 48 hours after
    app/uninstalled, so one arriving for an active store is a captured body re-sent after the
    store reinstalled (the signature has no date), and would delete the live store's data.
    """
    if topic not in HANDLERS:
        return f"topic {topic} is not handled"
    if tenant_status is None:
        return f"unknown shop {shop_domain}"
    if tenant_status != TenantStatus.ACTIVE and topic not in COMPLIANCE_TOPICS:
        return f"shop is {tenant_status}"
    if topic in DESTRUCTIVE_TOPICS:
        unconfirmed = unconfirmed_shop(topic, shop_domain, payload, shopify_shop_id)
        if unconfirmed is not None:
            return unconfirmed
    if topic == "shop/redact" and tenant_status == TenantStatus.ACTIVE:
        return (
            "store is active (reinstalled?): Shopify sends shop/redact 48 hours after "
            "app/uninstalled; replay this event (`events replay --id N`) once the store "
            "is uninstalled"
        )
    return None


async def apply_event(session: AsyncSession, context: EventContext, payload: Any) -> None:
    """Run the topic's handler (the caller decided with `skip_reason` that it applies)."""
    await HANDLERS[context.topic](session, context, payload or {})


def applies_together(topic: str) -> bool:
    """Whether events of `topic` can be applied many at once (`apply_events_together`): a
    topic whose body is a whole record of a resource, handled by its upsert handler."""
    resource = resource_for_topic(topic)
    return (
        resource is not None and topic in resource.upsert_topics and topic not in SPECIAL_HANDLERS
    )


async def apply_events_together(
    session: AsyncSession, tenant_id: int, events: Sequence[tuple[str, dict[str, Any]]]
) -> None:
    """Apply one store's events of `applies_together` topics, each resource's records in one
    write: what applying them one by one in any order leaves, since of several versions of a
    record the newest wins either way. (A child only an older version listed is never
    written, where one by one it would be written and then tombstoned.)"""
    by_resource: dict[str, list[dict[str, Any]]] = {}
    for topic, payload in events:
        resource = resource_for_topic(topic)
        if resource is None or not applies_together(topic):
            raise ValueError(f"{topic} events are applied one by one")
        by_resource.setdefault(resource.name, []).append(payload)
    # Resources in the registry's order, records in id order: two batches then take their
    # row locks in one order and never wait on each other in a cycle.
    # Every resource's child tombstones are held to the end, and go in as few statements as
    # hold them (`Tombstones`).
    tombstones = Tombstones()
    for resource in RESOURCES.values():
        payloads = by_resource.get(resource.name)
        if not payloads:
            continue
        payloads.sort(key=_record_id)  # stable: versions of one record keep their order
        await write_with_children(
            session,
            resource.model,
            resource.children,
            resource.normalize_rest,
            tenant_id,
            payloads,
            graphql=False,
            source="webhook",
            tombstones=tombstones,
        )
    await tombstones.write(session)


def _record_id(payload: dict[str, Any]) -> int:
    value = payload.get("id")
    return value if isinstance(value, int) else 0


def failure_text(exc: BaseException) -> str:
    """What `webhook_events.error` and the WARNING line say: never a payload or row value."""
    return error_text(exc)


# query_canceled (statement_timeout among its causes) and
# idle_in_transaction_session_timeout: the server ended the work, not the payload.
_CANCELLED_SQLSTATES = frozenset({"57014", "25P03"})


def is_disconnect(exc: BaseException) -> bool:
    """The database went away mid-transaction, or ended the statement or transaction for
    running too long: nothing can be recorded; the caller answers 503 and Shopify retries."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    return exc.connection_invalidated or getattr(exc.orig, "sqlstate", None) in _CANCELLED_SQLSTATES


async def process_event(session: AsyncSession, event: WebhookEvent) -> None:
    """Apply a stored event again and record the outcome on it (`handlers.events`' replays,
    for the CLI and the dashboard).

    The handler runs in a savepoint: when it raises, its writes are undone and the event is
    kept as `failed` with the error, so one bad payload never costs the inbox row. (A first
    delivery takes a leaner path in receiver.webhooks, with the same rules.)
    """
    if event.tenant_id is not None:
        # Write what the caller changed on the event under the caller's scope, then work as
        # the event's store: handlers never see another store's rows.
        await session.flush()
        await use_tenant(session, event.tenant_id)
    event.attempts += 1
    event.processed_at = utcnow()
    tenant = await session.get(Tenant, event.tenant_id) if event.tenant_id else None
    reason = await _replay_refusal(session, event, tenant)
    if reason is None:
        held = tenant.shopify_shop_id if tenant else None
        reason = skip_reason(
            event.topic, event.shop_domain, tenant.status if tenant else None, event.payload, held
        )
    if reason is not None or tenant is None:
        _finish(event, EventStatus.IGNORED, reason)
        return
    context = EventContext(
        tenant_id=tenant.id,
        topic=event.topic,
        webhook_event_id=event.id,
        triggered_at=event.triggered_at,
        received_at=event.received_at,
    )
    try:
        async with session.begin_nested():
            await apply_event(session, context, event.payload)
    except Exception as exc:
        if is_disconnect(exc):
            raise
        _fail(event, exc)
    else:
        _finish(event, EventStatus.PROCESSED, None)


async def _replay_refusal(
    session: AsyncSession, event: WebhookEvent, tenant: Tenant | None
) -> str | None:
    """Why a stored event of a handled topic must not be applied: the checks a first delivery
    passes before it is stored (events stored before they existed did not pass them)."""
    if event.topic not in HANDLERS:
        return None
    if not isinstance(event.payload, dict):
        return "stored body is not a JSON object"
    misfit = body_misfit(event.topic, event.shop_domain, event.payload)
    if misfit is not None:
        return misfit
    try:
        await vet_shop(
            session,
            event.topic,
            event.shop_domain,
            event.payload,
            tenant.id if tenant else None,
            tenant.shopify_shop_id if tenant else None,
        )
    except ShopMismatch as exc:
        return str(exc)
    return None


def _finish(event: WebhookEvent, status: str, note: str | None) -> None:
    event.status = status
    event.error = note
    event.next_attempt_at = None
    log_outcome(status, note, event.dedupe_key, event_fields(event))


def _fail(event: WebhookEvent, exc: Exception) -> None:
    event.status = EventStatus.FAILED
    event.error = failure_text(exc)
    # Even after a hand replay of a dead event: the retry sweep, which knows
    # EVENT_MAX_ATTEMPTS, tries it once more and then declares it dead again.
    event.next_attempt_at = utcnow() + backoff(event.attempts)
    log_outcome(EventStatus.FAILED, event.error, event.dedupe_key, event_fields(event))


def log_outcome(status: str, note: str | None, dedupe_key: str, fields: dict[str, Any]) -> None:
    log.log(
        logging.WARNING if status in (EventStatus.FAILED, EventStatus.DEAD) else logging.INFO,
        "webhook.%s shop=%s topic=%s event=%s note=%s",
        status,
        fields["shop"],
        fields["topic"],
        dedupe_key,
        note,
        extra=fields,
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


async def last_received(session: AsyncSession, tenant_id: int, topic: str) -> datetime | None:
    """When the store's last event of `topic` arrived: a short backward scan of the
    (tenant_id, topic, received_at) index, so callers ask one topic at a time."""
    return await session.scalar(
        select(func.max(WebhookEvent.received_at)).where(
            of_store(WebhookEvent.tenant_id, tenant_id), WebhookEvent.topic == topic
        )
    )
