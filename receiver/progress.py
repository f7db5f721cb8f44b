"""The progress display of `shopify-receiver backfill`, drawn by rich: one line per resource
with records, total, %, a rate smoothed over the last 60 s, ETA, and what the client waits for.

In a terminal the lines are live and log lines print above them (both go through the console
of `receiver.logs`). Elsewhere (a pipe, CI) a finished resource, or a rate-limit wait, prints
one plain line, at most one per resource every `quiet_interval` seconds apart from the last.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from backfill.runner import ResourceProgress
from receiver.logs import terminal_console

# Long enough to hold a few bulk batches (1,000 records each, some seconds apart on a paced
# store) and paced pages, short enough to follow a change of pace.
RATE_WINDOW_SECONDS = 60.0


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s", style="progress.data.speed")


class EtaColumn(TimeRemainingColumn):
    """`ETA 02:14` while running, `took 05:31` once done."""

    def render(self, task: Task) -> Text:
        if task.finished and task.finished_time is not None:
            minutes, seconds = divmod(int(task.finished_time), 60)
            hours, minutes = divmod(minutes, 60)
            took = (
                f"{hours:d}:{minutes:02d}:{seconds:02d}"
                if hours
                else f"{minutes:02d}:{seconds:02d}"
            )
            return Text(f"took {took}", style="progress.elapsed")
        if task.total is None:
            return Text("")
        return Text.assemble("ETA ", super().render(task))


class CountColumn(MofNCompleteColumn):
    """`1,234 / 20,000`, or just the count when Shopify gave no total."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text(f"{int(task.completed):,}", style="progress.download")
        return Text(f"{int(task.completed):,} / {int(task.total):,}", style="progress.download")


def wait_note(state: ResourceProgress) -> str:
    """What the job is waiting for, if anything: the rate limit, or Shopify's bulk export."""
    points = state.get("waiting_points")
    rate = state.get("restore_rate")
    if points is not None and rate is not None:
        return f"waiting for Shopify's rate limit: {points:,.0f} points at {rate:,.0f}/s"
    status = state.get("bulk_status")
    if status is not None:
        objects = int(state.get("bulk_objects", 0))
        return f"Shopify is exporting ({status.lower()}, {objects:,} objects so far)"
    return ""


class BackfillProgress:
    """A `ProgressCallback` for `run_sync_job`; use it as a context manager around the run."""

    def __init__(
        self,
        console: Console | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        quiet_interval: float = 10.0,
    ) -> None:
        self.console = console or terminal_console()
        self.clock = clock
        self.quiet_interval = quiet_interval
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(bar_width=24),
            CountColumn(),
            TaskProgressColumn(),
            RateColumn(),
            EtaColumn(compact=True),
            TextColumn("{task.fields[note]}", style="yellow"),
            console=self.console,
            get_time=clock,
            speed_estimate_period=RATE_WINDOW_SECONDS,
            # Without a terminal rich draws nothing until the end; `_plain_line` reports instead.
            disable=not self.console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}
        self.printed: dict[str, tuple[float, str]] = {}

    def __enter__(self) -> BackfillProgress:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def __call__(self, resource: str, state: ResourceProgress) -> None:
        count = int(state.get("count", 0))
        total = state.get("total")
        note = wait_note(state)
        if resource not in self.tasks:
            # A resumed job starts at its checkpoint: only this run's records count for the rate.
            self.tasks[resource] = self.progress.add_task(
                resource, total=total, completed=count, note=note
            )
        task_id = self.tasks[resource]
        done = bool(state.get("done"))
        if done or (total is not None and count > total):
            # Shopify's count is from the start: records created or deleted meanwhile move
            # the end, and a finished resource is whole whatever the count said.
            total = count
        self.progress.update(task_id, total=total, completed=count, note=note)
        if not self.console.is_terminal:
            self._plain_line(resource, task_id, urgent=done)

    def _plain_line(self, resource: str, task_id: TaskID, *, urgent: bool) -> None:
        now = self.clock()
        last_time, last_line = self.printed.get(resource, (None, ""))
        if not urgent and last_time is not None and now - last_time < self.quiet_interval:
            return
        task = next(task for task in self.progress.tasks if task.id == task_id)
        # The columns' own text, without the bar: a log file has no width to fit a table into.
        parts = [
            rendered.plain
            for column in self.progress.columns
            if isinstance(column, ProgressColumn) and not isinstance(column, BarColumn)
            for rendered in [column(task)]
            if isinstance(rendered, Text) and rendered.plain.strip()
        ]
        line = " ".join(part.strip() for part in parts)
        if line == last_line:
            return
        self.printed[resource] = (now, line)
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def render(self) -> str:
        """The display as text (what a terminal shows now), for tests and for a final summary."""
        with self.console.capture() as capture:
            self.console.print(self.progress.make_tasks_table(self.progress.tasks))
        return capture.get()
