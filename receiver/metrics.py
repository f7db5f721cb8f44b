"""Prometheus metrics of the web process, GET /metrics (text format), and the same endpoint
for `worker` processes.

`serve --workers N` runs prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set
by `serve` before the workers start): every worker writes its counters to files there and
/metrics adds them all up, so whichever worker answers a scrape reports the same totals. Topic
labels are limited to the topics we handle (others are "unhandled"), so no client can grow
the label set. With METRICS_TOKEN set, a scrape needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response

from handlers import HANDLERS
from receiver.settings import Secret

log = logging.getLogger("shopify_receiver.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

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
BATCH_EVENTS = Histogram(
    "shopify_receiver_webhook_batch_events",
    "Events stored and applied in one transaction (coalesced webhook commits).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
LAG_SECONDS = Histogram(
    "shopify_receiver_webhook_lag_seconds",
    "From Shopify's X-Shopify-Triggered-At to our receipt.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)


def topic_label(topic: str | None) -> str:
    return topic if topic in HANDLERS else "unhandled"


def registry() -> CollectorRegistry:
    """This process's metrics, or in multiprocess mode the sum over every process."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    combined = CollectorRegistry()
    MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # untyped upstream
    return combined


def prepare_multiprocess_dir() -> Path:
    """Before `serve` starts its workers: a fresh directory for their metric files (one of our
    own, or PROMETHEUS_MULTIPROC_DIR emptied), so totals start from zero and no file of a
    previous run is added in. Must run before any worker imports prometheus_client."""
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="shopify-receiver-metrics-"))
        os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def authorized(metrics_token: Secret | None, header: str | None) -> bool:
    """No METRICS_TOKEN: open. Else `Bearer <token>`, compared in constant time."""
    if metrics_token is None:
        return True
    scheme, _, token = (header or "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        token.strip().encode(), metrics_token.reveal().encode()
    )


UNAUTHORIZED = b"metrics need Authorization: Bearer <METRICS_TOKEN>\n"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


async def metrics(request: Request) -> Response:
    token = request.state.services.settings.metrics_token
    if not authorized(token, request.headers.get("authorization")):
        return Response(UNAUTHORIZED, status_code=401, media_type="text/plain", headers=CHALLENGE)
    return Response(generate_latest(registry()), media_type=CONTENT_TYPE_LATEST)


# -- the worker's endpoint ---------------------------------------------------------------

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line each."""


def metrics_wsgi_app(metrics_token: Secret | None) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; scrape /metrics\n"]
        if not authorized(metrics_token, environ.get("HTTP_AUTHORIZATION")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), *CHALLENGE.items()])
            return [UNAUTHORIZED]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [generate_latest(registry())]

    return app


def serve_worker_metrics(host: str, port: int, metrics_token: Secret | None) -> WSGIServer:
    """GET /metrics of a `worker` process (backfill records, throttle waits), from a daemon
    thread: scrapes never wait on the worker's event loop, nor it on them."""
    server = make_server(host, port, metrics_wsgi_app(metrics_token), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info("worker.metrics address=%s:%s", host, server.server_port)
    return server
