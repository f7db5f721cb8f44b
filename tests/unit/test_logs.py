"""JSON log lines carry the event name and the structured fields given with extra=."""

from __future__ import annotations

import json
import logging

from receiver.logs import JsonFormatter


def test_json_line_has_event_fields_and_no_internal_attributes():
    record = logging.makeLogRecord(
        {
            "name": "shopify_receiver.handlers",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "webhook.processed shop=%s topic=%s",
            "args": ("a.myshopify.com", "orders/create"),
            "shop": "a.myshopify.com",
            "topic": "orders/create",
            "webhook_id": "b7f0c1",
            "event_id": "e-1",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "webhook.processed"
    assert line["level"] == "info"
    assert (line["shop"], line["topic"], line["webhook_id"], line["event_id"]) == (
        "a.myshopify.com",
        "orders/create",
        "b7f0c1",
        "e-1",
    )
    assert line["message"] == "webhook.processed shop=a.myshopify.com topic=orders/create"
    assert "args" not in line
    assert "msg" not in line
