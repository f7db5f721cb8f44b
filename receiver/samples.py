"""Realistic sample payloads for every handled topic (`send-test-webhook`, tests, demos)."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from receiver.signature import sign

SAMPLE_SHOP = "example.myshopify.com"
SAMPLE_API_VERSION = "2026-10"


def sample_file_name(topic: str) -> str:
    return topic.replace("/", "_") + ".json"


@cache
def _load(topic: str) -> dict[str, Any]:
    path = resources.files("receiver") / "webhook_samples" / sample_file_name(topic)
    try:
        sample: dict[str, Any] = json.loads(path.read_text())
        return sample
    except FileNotFoundError:
        raise KeyError(f"no sample payload for {topic}") from None


def sample_payload(topic: str, shop: str = SAMPLE_SHOP) -> dict[str, Any]:
    """The sample for `topic`, addressed to `shop` wherever the payload names its shop."""
    payload = copy.deepcopy(_load(topic))
    # `domain` is the shop's primary domain; the sample's is its myshopify domain.
    for key in ("shop_domain", "myshopify_domain", "domain"):
        if key in payload:
            payload[key] = shop
    return payload


def triggered_at_header(moment: datetime | None = None) -> str:
    """Shopify's format: UTC with nanoseconds, e.g. 2023-03-29T18:00:27.877041743Z."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def webhook_headers(
    topic: str,
    shop: str,
    body: bytes,
    secret: str,
    *,
    event_id: str | None = None,
    webhook_id: str | None = None,
    api_version: str = SAMPLE_API_VERSION,
) -> dict[str, str]:
    """The headers Shopify sends with a delivery of `body`, signed with `secret`."""
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": api_version,
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": triggered_at_header(),
    }
