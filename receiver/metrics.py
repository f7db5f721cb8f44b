"""Prometheus metrics of the web process, and GET /metrics (text format).

Each process keeps its own counters; with `serve --workers N`, scrape each worker or run one
worker per container. Topic labels are limited to the topics we handle (others are
"unhandled"), so no client can grow the label set.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from handlers import HANDLERS

WEBHOOKS = Counter(
    "shopify_receiver_webhooks_total",
    "Webhook deliveries by topic and outcome (processed, ignored, failed, duplicate, "
    "unauthorized, bad_request, too_large).",
    ["topic", "outcome"],
)
DUPLICATES = Counter(
    "shopify_receiver_webhook_duplicates_total", "Deliveries of an event already stored."
)
HANDLER_SECONDS = Histogram(
    "shopify_receiver_webhook_handler_seconds",
    "Time to store and apply one delivery, by topic.",
    ["topic"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG_SECONDS = Histogram(
    "shopify_receiver_webhook_lag_seconds",
    "From Shopify's X-Shopify-Triggered-At to our receipt.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)


def topic_label(topic: str | None) -> str:
    return topic if topic in HANDLERS else "unhandled"


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
