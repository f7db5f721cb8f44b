"""Every log line about a webhook event names its shop, topic and webhook id."""

from __future__ import annotations

import json
import logging
import queue
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from receiver.logs import JsonFormatter
from tests.factories import SHOP, create_tenant, delivery
from tests.integration.test_cli import CLI, cli_env, wait_until_serving


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_webhook_log_lines_carry_shop_topic_and_webhook_id(backend, served, http):
    await create_tenant(backend.sessions)
    lines = Lines()
    logger = logging.getLogger("shopify_receiver")
    logger.addHandler(lines)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        body, headers = delivery("orders/create")
        for _ in range(2):  # processed, then duplicate
            assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success
    finally:
        logger.removeHandler(lines)
        logger.setLevel(previous)
    about_it = [line for line in lines.lines if line.get("event", "").startswith("webhook.")]
    assert {line["event"] for line in about_it} >= {"webhook.processed", "webhook.duplicate"}
    for line in about_it:
        assert line["shop"] == SHOP
        assert line["topic"] == "orders/create"
        assert line["webhook_id"] == headers["X-Shopify-Webhook-Id"]
        assert line["event_id"] == headers["X-Shopify-Event-Id"]


@contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[str, Callable[[], dict]]]:
    """`serve` with these options on a free port, its stderr read as it comes: yields the
    base URL and a function returning its next JSON line (other lines skipped). Its stderr
    is a pipe, so its lines are JSON by default."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(CLI), "serve", *options, "--port", str(port)],
        cwd=tmp_path,
        env=cli_env(None, PERIODIC_CHECKS="off"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stderr or []])
    reader.start()

    def next_record() -> dict:
        while True:
            try:
                return dict(json.loads(lines.get(timeout=30)))
            except ValueError:
                continue

    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_serving(process, base)
        yield base, next_record
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_every_worker_of_serve_logs_its_webhooks(tmp_path):
    """`serve --workers 2` spawns processes that only run the app factory: their lines about
    webhooks must still come out, as JSON."""
    with serving(tmp_path, "--workers", "2") as (base, next_record):
        bodies = [delivery("orders/create", shop=f"worker-{n}.myshopify.com") for n in range(6)]
        for body, headers in bodies:
            response = httpx.post(f"{base}/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text
        wanted = {headers["X-Shopify-Webhook-Id"] for _, headers in bodies}
        seen: set[str] = set()
        while not wanted <= seen:
            record = next_record()
            if record.get("event") == "webhook.ignored":  # stores unknown to this database
                seen.add(record["webhook_id"])


def test_an_acknowledged_webhook_is_logged_once_and_a_refused_one_keeps_its_access_line(
    tmp_path,
):
    """A webhook answered 200 has its outcome line only; a refused one (a bad signature) and
    any other request keep uvicorn's access line."""
    with serving(tmp_path) as (base, next_record):
        body, headers = delivery("orders/create")
        accepted = httpx.post(f"{base}/webhooks/shopify", content=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
        forged = {**headers, "X-Shopify-Hmac-Sha256": "AAAA" + headers["X-Shopify-Hmac-Sha256"]}
        refused = httpx.post(f"{base}/webhooks/shopify", content=body, headers=forged)
        assert refused.status_code == 401, refused.text
        # Requests are answered, and logged, one after the other: once this one's access line
        # is out, every line about the two webhooks is.
        assert httpx.get(f"{base}/readyz").status_code in (200, 503)
        records = [next_record()]
        while "GET /readyz" not in records[-1].get("message", ""):
            records.append(next_record())
    access = [
        record["message"].split('"')[1] + record["message"].rsplit('"', 1)[1]
        for record in records
        if record.get("logger") == "uvicorn.access"
    ]
    assert "POST /webhooks/shopify HTTP/1.1 401" in access
    assert not any(
        line.startswith("POST /webhooks/shopify") and line.endswith(" 200") for line in access
    )
    about_it = [
        record for record in records if record.get("webhook_id") == headers["X-Shopify-Webhook-Id"]
    ]
    assert [
        record["event"] for record in about_it if record.get("event") != "webhook.rejected"
    ] == ["webhook.ignored"]
