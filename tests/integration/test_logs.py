"""Every log line about a webhook event names its shop, topic and webhook id."""

from __future__ import annotations

import json
import logging

from receiver.logs import JsonFormatter
from tests.factories import SHOP, create_tenant, delivery


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
