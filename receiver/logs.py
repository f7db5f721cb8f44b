"""Logging set-up: one JSON object per line (LOG_FORMAT=json, the default) or plain text.

Log calls name an event first (`webhook.processed`, `backfill.retry`, ...) and pass structured
fields with `extra=`; lines about a webhook carry shop, topic, webhook_id and event_id.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        first_word = message.split(" ", 1)[0]
        if "." in first_word and first_word.replace(".", "").replace("_", "").isalnum():
            document["event"] = first_word  # our dotted event names: webhook.processed, ...
        document["message"] = message
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging_once() -> None:
    """In a process nobody configured: a worker that `serve --workers N` spawned runs only
    the app factory, so without this its lines (access log included) would go nowhere."""
    if not logging.getLogger().handlers:
        configure_logging()


def configure_logging(log_format: str | None = None, level: int = logging.INFO) -> None:
    log_format = (log_format or os.environ.get("LOG_FORMAT") or "json").lower()
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # One INFO line per Admin API request would drown a backfill's or reconcile's own lines;
    # the client logs retries, throttling and failures itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
