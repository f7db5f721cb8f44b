"""Logging set-up: human lines when stderr is a terminal, one JSON object per line otherwise.

`LOG_FORMAT=json|text` overrides the choice, `LOG_LEVEL` (default `info`) sets the level.
Log calls name an event first (`webhook.processed`, `backfill.retry`, ...) and pass structured
fields with `extra=`; lines about a webhook carry shop, topic, webhook_id and event_id.

In a terminal every line goes through one rich console (`terminal_console()`), the same one the
backfill's progress display draws on: rich prints a log line above the live progress line
instead of gluing it onto the end.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.logging import RichHandler

LOG_FORMATS = ("json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}

# procrastinate's per-job INFO lines for the once-a-minute maintenance tasks of backfill/queue.py:
# a dozen lines a minute that say nothing happened. At DEBUG; their failures stay at ERROR.
ROUTINE_TASKS = frozenset(
    {
        "sweep_backfills",
        "watch_subscriptions",
        "reconcile_stores",
        "retry_events",
        "refetch_cut_lists",
        "make_inbox_partitions",
    }
)
ROUTINE_ACTIONS = frozenset(
    {"periodic_task_deferred", "registering_periodic_task", "start_job", "job_success"}
)

_console: Console | None = None


class LoggingConfigError(ValueError):
    """LOG_FORMAT or LOG_LEVEL holds a value we do not know; the message says what to set."""


class RoutineTicks(logging.Filter):
    """Turns the worker's routine maintenance lines into DEBUG ones (dropped below DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("procrastinate"):
            return True
        job = getattr(record, "job", None) or {}
        task = str(job.get("task_name") or getattr(record, "task", "") or "")
        if getattr(record, "action", None) in ROUTINE_ACTIONS and (
            task.rsplit(":", 1)[-1].rsplit(".", 1)[-1] in ROUTINE_TASKS
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
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
        document.update(_fields(record))
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        try:
            # orjson: each webhook writes a line, and json.dumps cost a few percent of a
            # webhook's CPU. Times pass through to str() as json.dumps's default=str wrote them.
            return orjson.dumps(
                document, default=str, option=orjson.OPT_PASSTHROUGH_DATETIME
            ).decode()
        except TypeError:  # what orjson refuses (non-string keys, integers past 64 bits)
            return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """The message, then the `extra=` fields as key=value (a terminal has no columns for them)."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        text = record.getMessage() + (f" {fields}" if fields else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class PlainTextFormatter(TextFormatter):
    """Text for a file or a pipe: time, level and logger in front, as grep and people expect."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        return f"{stamp} {record.levelname} {record.name} {super().format(record)}"


class ConsoleLineHandler(logging.Handler):
    """Writes already formatted lines (JSON in a terminal, when asked for) through the rich
    console, so they too land above a live progress line rather than on it."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


def terminal_console() -> Console:
    """The process's console on stderr, shared by the log handler and the progress display."""
    global _console
    if _console is None:
        _console = Console(stderr=True)
    return _console


def choose_format(requested: str | None, stream_is_terminal: bool) -> str:
    """LOG_FORMAT when set; otherwise text for a person at a terminal, JSON for collectors."""
    if requested is None or not requested.strip():
        return "text" if stream_is_terminal else "json"
    value = requested.strip().lower()
    if value not in LOG_FORMATS:
        raise LoggingConfigError(
            f"LOG_FORMAT must be json or text, not {requested!r}; unset it to choose by terminal"
        )
    return value


def choose_level(requested: str | None) -> int:
    if requested is None or not requested.strip():
        return logging.INFO
    value = requested.strip().lower()
    if value not in LOG_LEVELS:
        raise LoggingConfigError(
            f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {requested!r}"
        )
    return int(logging.getLevelNamesMapping()[value.upper()])


def build_handler(log_format: str, console: Console) -> logging.Handler:
    handler: logging.Handler
    if console.is_terminal:
        if log_format == "json":
            handler = ConsoleLineHandler(console)
            handler.setFormatter(JsonFormatter())
        else:
            handler = RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S")
            handler.setFormatter(TextFormatter())
        return handler
    handler = logging.StreamHandler(console.file)
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainTextFormatter())
    return handler


def configure_logging_once() -> None:
    """In a process nobody configured: a worker that `serve --workers N` spawned runs only
    the app factory, so without this its lines (access log included) would go nowhere."""
    if not logging.getLogger().handlers:
        configure_logging()


def configure_logging(
    log_format: str | None = None,
    level: int | None = None,
    *,
    console: Console | None = None,
) -> None:
    """Raises LoggingConfigError for a LOG_FORMAT or LOG_LEVEL we do not know."""
    console = console or terminal_console()
    # No format of ours shows the process, thread or multiprocessing name; collecting them
    # costs a system call (getpid) and lookups on each webhook's line.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    chosen = choose_format(log_format or os.environ.get("LOG_FORMAT"), console.is_terminal)
    root = logging.getLogger()
    handler = build_handler(chosen, console)
    handler.addFilter(RoutineTicks())
    root.handlers[:] = [handler]
    root.setLevel(level if level is not None else choose_level(os.environ.get("LOG_LEVEL")))
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # One INFO line per Admin API request would drown a backfill's or reconcile's own lines;
    # the client logs retries, throttling and failures itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
