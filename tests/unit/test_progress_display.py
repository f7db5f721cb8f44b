"""The backfill's progress display as rich renders it: records, total, %, smoothed rate, ETA,
rate-limit waits; plain lines without a terminal; log lines above the live line in one."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from rich.console import Console

from backfill.runner import ResourceProgress
from receiver.logs import configure_logging
from receiver.progress import BackfillProgress
from tests.terminal import screen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def console(*, terminal: bool, width: int = 160) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=width, color_system=None), out


def report(
    display: BackfillProgress, clock: Clock, at: float, count: int, total: int | None, **kw: object
) -> None:
    clock.now = 1000.0 + at
    display("orders", ResourceProgress(count=count, total=total, **kw))  # type: ignore[typeddict-item]


def test_records_total_percent_rate_and_eta(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    report(display, clock, 0, 0, 1000)
    report(display, clock, 10, 250, 1000)
    report(display, clock, 20, 500, 1000)
    shown = display.render()
    assert "orders" in shown
    assert "500 / 1,000" in shown
    assert "50%" in shown
    assert "25 records/s" in shown
    assert "ETA 00:20" in shown


def test_the_rate_is_smoothed_over_the_window_not_the_last_page(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    report(display, clock, 0, 0, 10_000)
    report(display, clock, 10, 100, 10_000)
    report(display, clock, 20, 1100, 10_000)  # a bulk batch lands at once
    report(display, clock, 30, 1200, 10_000)
    # Neither the last page's 10/s nor the batch's 100/s: 1,100 records in the 20 s observed.
    assert "55 records/s" in display.render()


def test_a_resumed_job_s_rate_counts_only_this_run(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    report(display, clock, 0, 400, 1000)
    report(display, clock, 10, 500, 1000)
    report(display, clock, 20, 600, 1000)
    shown = display.render()
    assert "10 records/s" in shown
    assert "600 / 1,000" in shown


def test_a_rate_limit_wait_shows_until_the_next_page(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    report(display, clock, 0, 250, 1000)
    report(
        display, clock, 1, 250, 1000, waiting_points=812.4, restore_rate=100.0, waiting_seconds=8.1
    )
    assert "waiting for Shopify's rate limit: 812 points at 100/s" in display.render()
    report(display, clock, 9, 500, 1000)
    assert "waiting" not in display.render()


def test_a_running_bulk_operation_shows_what_shopify_has_exported(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    report(display, clock, 0, 0, 20_000, bulk_status="RUNNING", bulk_objects=41_250)
    assert "Shopify is exporting (running, 41,250 objects so far)" in display.render()
    report(display, clock, 3, 1000, 20_000)
    assert "exporting" not in display.render()


def test_done_fills_the_bar_and_an_unknown_total_shows_the_count(clock):
    display = BackfillProgress(console(terminal=True)[0], clock=clock)
    clock.now = 1000.0
    display("metafields", ResourceProgress(count=1234, total=None))
    assert "1,234" in display.render()
    report(display, clock, 0, 0, 1000)
    report(display, clock, 5, 990, 1000, done=True)  # two orders were deleted meanwhile
    shown = display.render()
    assert "990 / 990" in shown
    assert "100%" in shown
    assert "took 00:05" in shown


def test_without_a_terminal_lines_are_few_and_plain(clock):
    pipe, out = console(terminal=False, width=80)  # a log file's notional width
    display = BackfillProgress(pipe, clock=clock, quiet_interval=10.0)
    with display:
        for second, count in enumerate(range(0, 500, 50)):
            report(display, clock, second, count, 10_000)
        report(
            display, clock, 12, 600, 10_000, waiting_points=900, restore_rate=100, waiting_seconds=9
        )
        report(display, clock, 21, 10_000, 10_000, done=True)
        report(display, clock, 21, 10_000, 10_000, done=True)  # the last batch, then done
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert len(lines) == 3, lines  # one line each, never wrapped into a table's cells
    assert all(line.startswith("orders ") for line in lines), lines
    # 550 records from the second report (1 s) to the twelfth (12 s): 50/s, 9,400 left.
    assert lines[1] == (
        "orders 600 / 10,000 6% 50 records/s ETA 03:08 "
        "waiting for Shopify's rate limit: 900 points at 100/s"
    ), lines
    assert "10,000 / 10,000 100%" in lines[-1]
    assert "took 00:21" in lines[-1]


@pytest.fixture
def restore_root_logger(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_in_a_terminal_log_lines_print_above_the_progress_line(
    clock, restore_root_logger, monkeypatch, log_format
):
    monkeypatch.setenv("LOG_FORMAT", log_format)
    terminal, out = console(terminal=True, width=120)
    configure_logging(console=terminal)
    log = logging.getLogger("shopify_receiver.backfill.client")
    with BackfillProgress(terminal, clock=clock) as display:
        report(display, clock, 0, 0, 1000)
        report(display, clock, 10, 250, 1000)
        display.progress.refresh()
        log.info("backfill.retry shop=a.myshopify.com attempt=1")
        report(display, clock, 20, 500, 1000)
        display.progress.refresh()
        log.warning("backfill.shop_id_unavailable shop=a.myshopify.com")
        report(display, clock, 30, 750, 1000)
    lines = [line for line in screen(out.getvalue()) if line.strip()]
    retry = [line for line in lines if "backfill.retry" in line]
    unavailable = [line for line in lines if "backfill.shop_id_unavailable" in line]
    progress = [line for line in lines if "records/s" in line]
    assert len(retry) == len(unavailable) == 1, lines
    assert "records/s" not in retry[0] + unavailable[0]
    assert len(progress) == 1, lines  # redrawn in place, never left behind a log line
    assert "750 / 1,000" in progress[0]
    assert lines[-1] == progress[0]
