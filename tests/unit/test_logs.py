"""JSON log lines carry the event name and the structured fields given with extra=."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal

from models.statuses import EventStatus
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


def test_json_line_writes_any_field_value_as_json_dumps_with_str_did():
    # The formatter takes orjson and falls back to json.dumps: every value must still come
    # out as it did (times and unknown types as str(), big integers exact, odd keys kept).
    when = datetime(2026, 12, 1, 20, 0, tzinfo=UTC)
    fields = {
        "when": when,
        "status": EventStatus.PROCESSED,
        "amount": Decimal("12.30"),
        "big": 2**70,
        "counts": {1: "one"},
    }
    record = logging.makeLogRecord({"msg": "webhook.processed", "levelname": "INFO", **fields})
    line = json.loads(JsonFormatter().format(record))
    assert line["when"] == str(when)
    assert line["status"] == "processed"
    assert line["amount"] == "12.30"
    assert line["big"] == 2**70
    assert line["counts"] == {"1": "one"}
