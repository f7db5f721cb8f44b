"""Clocks the simulator reads: one for elapsed time (throttle refills, token expiry, bulk
progress) and one for wall-clock timestamps (``updatedAt`` of records changed by a test).

Tests inject a :class:`ManualClock` so that time only moves when they say so: no sleeps.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a steady clock; only differences matter."""
        ...

    def now(self) -> datetime:
        """The current UTC time, timezone-aware."""
        ...


class SystemClock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Time that moves only through :meth:`advance`; both readings move together.

    Thread-safe because the simulator reads it on the server thread while a test advances
    it on its own.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._elapsed = 0.0
        # After the default generated history (which ends 2025-01-01), so records a test
        # changes are newer than every untouched one, as they would be on a live store.
        self._start = start or datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        with self._lock:
            return self._elapsed

    def now(self) -> datetime:
        with self._lock:
            return self._start + timedelta(seconds=self._elapsed)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._elapsed += seconds
