"""Which log format and level a process gets, and that routine ticks stay out of INFO."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from rich.console import Console

from backfill.maintenance import Maintenance, watchdog_tick
from receiver.logs import (
    ROUTINE_TASKS,
    LoggingConfigError,
    choose_format,
    choose_level,
    configure_logging,
)

log = logging.getLogger("shopify_receiver.test")


@pytest.fixture(autouse=True)
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200, color_system=None), out


def test_terminal_gets_text_anything_else_json_and_log_format_overrides():
    assert choose_format(None, stream_is_terminal=True) == "text"
    assert choose_format(None, stream_is_terminal=False) == "json"
    assert choose_format("", stream_is_terminal=False) == "json"
    assert choose_format("JSON", stream_is_terminal=True) == "json"
    assert choose_format("text", stream_is_terminal=False) == "text"
    with pytest.raises(LoggingConfigError, match="LOG_FORMAT must be json or text, not 'xml'"):
        choose_format("xml", stream_is_terminal=True)


def test_log_level_names_and_default():
    assert choose_level(None) == logging.INFO
    assert choose_level("DEBUG") == logging.DEBUG
    assert choose_level("warning") == logging.WARNING
    with pytest.raises(LoggingConfigError, match="LOG_LEVEL must be one of"):
        choose_level("loud")


def test_a_terminal_reads_human_lines_with_their_fields():
    terminal, out = console(terminal=True)
    configure_logging(console=terminal)
    log.info("backfill.retry shop=%s attempt=%d", "a.myshopify.com", 2, extra={"job": 7})
    text = out.getvalue()
    assert "backfill.retry shop=a.myshopify.com attempt=2 job=7" in text
    assert "INFO" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.strip().splitlines()[0])


def test_a_pipe_reads_json_lines_unless_text_is_asked_for(monkeypatch):
    pipe, out = console(terminal=False)
    configure_logging(console=pipe)
    log.info("webhook.processed shop=%s", "a.myshopify.com", extra={"topic": "orders/create"})
    line = json.loads(out.getvalue())
    assert (line["event"], line["topic"]) == ("webhook.processed", "orders/create")

    monkeypatch.setenv("LOG_FORMAT", "text")
    pipe, out = console(terminal=False)
    configure_logging(console=pipe)
    log.warning("webhook.rejected reason=signature")
    assert out.getvalue().endswith(
        "WARNING shopify_receiver.test webhook.rejected reason=signature\n"
    )


def test_log_level_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    pipe, out = console(terminal=False)
    configure_logging(console=pipe)
    log.info("backfill.started job=1")
    log.warning("backfill.shop_id_unavailable shop=a")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == [
        "backfill.shop_id_unavailable"
    ]


async def test_watchdog_without_public_url_is_a_debug_line(caplog):
    maintenance = Maintenance(
        webhook_url=None, watchdog_interval=timedelta(hours=1), reconcile_interval=timedelta(0)
    )
    with caplog.at_level(logging.DEBUG):
        assert await watchdog_tick(None, maintenance) == []  # type: ignore[arg-type]
    skipped = [record for record in caplog.records if "watchdog.skipped" in record.getMessage()]
    assert [record.levelno for record in skipped] == [logging.DEBUG]


def _procrastinate_record(action: str, task_name: str, level: int = logging.INFO) -> None:
    logging.getLogger("procrastinate.worker").log(
        level,
        f"Job {task_name}() ended with status: Success",
        extra={"action": action, "job": {"task_name": task_name, "id": 1}},
    )


def test_the_worker_s_routine_maintenance_lines_are_debug(monkeypatch):
    from backfill.queue import NAMESPACE, procrastinate_app

    app = procrastinate_app("postgresql://unused/db")
    periodic = {entry.task.name for entry in app.periodic_registry.periodic_tasks.values()}
    assert periodic  # the worker still has maintenance tasks; each is one we call routine
    assert {name.rsplit(":", 1)[-1] for name in periodic} == ROUTINE_TASKS

    pipe, out = console(terminal=False)
    configure_logging(console=pipe)
    _procrastinate_record("job_success", f"{NAMESPACE}:watch_subscriptions")
    _procrastinate_record("job_success", f"{NAMESPACE}:run_backfill")
    _procrastinate_record("job_error", f"{NAMESPACE}:watch_subscriptions", logging.ERROR)
    shown = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["level"], line["job"]["task_name"]) for line in shown] == [
        ("info", f"{NAMESPACE}:run_backfill"),
        ("error", f"{NAMESPACE}:watch_subscriptions"),
    ]

    monkeypatch.setenv("LOG_LEVEL", "debug")
    pipe, out = console(terminal=False)
    configure_logging(console=pipe)
    _procrastinate_record("job_success", f"{NAMESPACE}:watch_subscriptions")
    assert json.loads(out.getvalue())["level"] == "debug"
