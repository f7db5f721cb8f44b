"""POST /webhooks/shopify: verify, store durably, apply, then answer."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import InvalidToken
from sqlalchemy import update
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from handlers import process_event
from handlers.dispatch import body_misfit
from handlers.normalize import PayloadError, parse_timestamp
from models import WebhookEvent, utcnow
from models.tenancy import use_all_tenants, use_tenant
from models.upsert import insert_on_conflict
from receiver.errors import ServiceUnavailable
from receiver.metrics import DUPLICATES, HANDLER_SECONDS, LAG_SECONDS, WEBHOOKS, topic_label
from receiver.services import Services
from receiver.signature import verify_signature
from receiver.tenants import InvalidShopDomain, find_tenant, normalize_shop_domain, webhook_secrets

log = logging.getLogger("shopify_receiver.webhooks")

TOPIC = re.compile(r"[a-z0-9_]+(/[a-z0-9_]+){1,3}")
MAX_TOPIC_LENGTH = 100  # the column's width
# Shopify's payloads nest a handful of levels; a body nesting deeper than this is not one.
MAX_JSON_DEPTH = 64
# Webhook and event ids are UUIDs; allow a little more but nothing that is not plain ASCII.
DELIVERY_ID = re.compile(r"[A-Za-z0-9._:\-]{1,255}")
API_VERSION = re.compile(r"[A-Za-z0-9._\-]{1,32}")


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
    payload: dict[str, Any]
    body_sha256: str

    @property
    def dedupe_key(self) -> str:
        # Shopify's advice is to dedupe on the event id; the webhook id is stable across
        # retries of one delivery; the body hash is the last resort for hand-made requests.
        return self.event_id or self.webhook_id or f"sha256:{self.body_sha256}"


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it is known to exceed `limit` bytes.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    counted as it streams, so an endless body never sits in memory whole.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _storable(value: Any) -> Any:
    """Strings PostgreSQL can store: no NUL characters and no unpaired surrogates."""
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= char <= "\udfff" for char in value):
            return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


def json_depth(value: Any) -> int:
    """Nesting depth, counted without recursion so no body can exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BadDelivery(f"body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(payload, dict):
        raise BadDelivery("body must be a JSON object")
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise BadDelivery(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    return _storable(payload)


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
    return Delivery(
        shop_domain=shop,
        topic=topic,
        event_id=_optional_header(headers, "event-id", DELIVERY_ID),
        webhook_id=_optional_header(headers, "webhook-id", DELIVERY_ID),
        api_version=_optional_header(headers, "api-version", API_VERSION),
        triggered_at=triggered_at,
        payload=parse_payload(body),
        body_sha256=hashlib.sha256(body).hexdigest(),
    )


async def receive_webhook(request: Request) -> Response:
    started = time.perf_counter()
    response = await _receive(request)
    outcome = getattr(response, "outcome", None)
    if outcome is not None:
        topic = topic_label(shopify_header(request.headers, "topic"))
        WEBHOOKS.labels(topic, outcome).inc()
        if outcome in {"processed", "ignored", "failed", "duplicate"}:
            HANDLER_SECONDS.labels(topic).observe(time.perf_counter() - started)
    return response


def _answer(status: int, body: dict[str, Any], outcome: str) -> JSONResponse:
    response = JSONResponse(body, status_code=status)
    response.outcome = outcome  # type: ignore[attr-defined]
    return response


async def _receive(request: Request) -> Response:
    services: Services = request.state.services
    signature = shopify_header(request.headers, "hmac-sha256")
    if not signature:
        return _answer(401, {"error": "missing X-Shopify-Hmac-Sha256 header"}, "unauthorized")
    try:
        body = await read_body(request, services.settings.webhook_max_body_bytes)
    except BodyTooLarge:
        limit = services.settings.webhook_max_body_bytes
        return _answer(413, {"error": f"body exceeds the {limit}-byte limit"}, "too_large")
    except ClientDisconnect:
        return _answer(400, {"error": "client disconnected before the body"}, "bad_request")

    app_secrets = [secret.reveal() for secret in services.settings.api_secrets]
    verified = verify_signature(body, signature, app_secrets)
    shop_header = shopify_header(request.headers, "shop-domain") or ""
    try:
        shop_domain: str | None = normalize_shop_domain(shop_header)
    except InvalidShopDomain:
        shop_domain = None

    async with services.sessions() as session, session.begin():
        tenant = await find_tenant(session, shop_domain) if shop_domain else None
        if not verified and tenant is not None:
            try:
                store_secrets = webhook_secrets(services.secret_box, tenant)
            except InvalidToken as exc:
                log.error("webhook.secret_undecryptable shop=%s", tenant.shop_domain)
                raise ServiceUnavailable(
                    "the store's webhook secret cannot be decrypted with ENCRYPTION_KEYS"
                ) from exc
            verified = verify_signature(body, signature, store_secrets)
        if not verified:
            log.info("webhook.rejected reason=signature shop=%s", shop_header[:255])
            return _answer(401, {"error": "HMAC signature does not match"}, "unauthorized")
        try:
            delivery = parse_delivery(request.headers, body)
            misfit = body_misfit(delivery.topic, delivery.shop_domain, delivery.payload)
            if misfit:
                raise BadDelivery(misfit)
        except BadDelivery as exc:
            log.info("webhook.rejected reason=%s shop=%s", exc, shop_header[:255])
            return _answer(400, {"error": str(exc)}, "bad_request")

        if tenant is not None:
            await use_tenant(session, tenant.id)
        else:
            await use_all_tenants(session)  # an unknown shop's event belongs to no tenant yet
        # ON CONFLICT DO NOTHING RETURNING: of two concurrent copies of one event, exactly one
        # gets a row back and goes on to apply it; the other waits for that commit and returns
        # nothing, so a duplicate is never applied twice and never read half-written.
        insert = (
            insert_on_conflict(session, WebhookEvent.__table__)
            .values(
                tenant_id=tenant.id if tenant else None,
                shop_domain=delivery.shop_domain,
                topic=delivery.topic,
                event_id=delivery.event_id,
                webhook_id=delivery.webhook_id,
                dedupe_key=delivery.dedupe_key,
                api_version=delivery.api_version,
                triggered_at=delivery.triggered_at,
                received_at=utcnow(),
                status="received",
                attempts=0,
                payload=delivery.payload,
            )
            .on_conflict_do_nothing(index_elements=["shop_domain", "topic", "dedupe_key"])
            .returning(WebhookEvent.__table__.c.id)
        )
        event_id = (await session.execute(insert)).scalar_one_or_none()
        if event_id is None:
            log.info(
                "webhook.duplicate shop=%s topic=%s event=%s",
                delivery.shop_domain,
                delivery.topic,
                delivery.dedupe_key,
                extra={
                    "shop": delivery.shop_domain,
                    "topic": delivery.topic,
                    "webhook_id": delivery.webhook_id,
                    "event_id": delivery.event_id,
                },
            )
            DUPLICATES.inc()
            # No data changes, but the count is what tells a store's owner Shopify retried:
            # the dashboard's dedupe hits per topic.
            await session.execute(
                update(WebhookEvent)
                .where(
                    WebhookEvent.shop_domain == delivery.shop_domain,
                    WebhookEvent.topic == delivery.topic,
                    WebhookEvent.dedupe_key == delivery.dedupe_key,
                )
                .values(
                    duplicate_count=WebhookEvent.duplicate_count + 1,
                    last_duplicate_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            return _answer(200, {"status": "duplicate"}, "duplicate")
        event = await session.get_one(WebhookEvent, event_id)
        await process_event(session, event)
    if delivery.triggered_at is not None:
        LAG_SECONDS.observe(max(0.0, (event.received_at - delivery.triggered_at).total_seconds()))
    return _answer(200, {"status": event.status, "event": event.id}, event.status)
