"""A plain progress line per resource for `shopify-receiver backfill`: count, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from backfill.runner import ResourceProgress


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressPrinter:
    def __init__(self, stream: TextIO = sys.stderr, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.clock = clock
        self.started: dict[str, tuple[float, int]] = {}
        self.current: str | None = None
        self.interactive = stream.isatty()

    def __call__(self, resource: str, state: ResourceProgress) -> None:
        count = int(state.get("count", 0))
        now = self.clock()
        # Rate counts only this run's records: a resumed job starts from its checkpoint.
        start_time, start_count = self.started.setdefault(resource, (now, count))
        if self.current not in (None, resource):
            self.stream.write("\n")
        self.current = resource
        elapsed = max(now - start_time, 1e-9)
        rate = (count - start_count) / elapsed
        total = state.get("total")
        parts = [f"{resource:<10}", f"{count:>10,}"]
        if isinstance(total, int) and total > 0:
            parts.append(f"/ {total:,} ({min(count / total, 1):.0%})")
            if rate > 0 and not state.get("done"):
                parts.append(f"ETA {_duration(max(total - count, 0) / rate)}")
        parts.append(f"{rate:,.0f} records/s")
        if state.get("done"):
            parts.append("done")
        line = "  ".join(parts)
        self.stream.write(("\r" + line) if self.interactive else (line + "\n"))
        self.stream.flush()

    def finish(self) -> None:
        if self.current is not None and self.interactive:
            self.stream.write("\n")
            self.stream.flush()
