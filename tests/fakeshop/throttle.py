"""The per-store (per app and store, on Shopify) leaky bucket of query-cost points."""

from __future__ import annotations

import threading
from typing import Any

from .clock import Clock


class LeakyBucket:
    """Points refill continuously at ``restore_rate`` up to ``maximum``.

    A query needs its full requested cost available up front; after execution the difference
    between requested and actual cost is refunded, as Shopify does.
    """

    def __init__(
        self,
        clock: Clock,
        maximum: float = 2000.0,
        restore_rate: float = 100.0,
        enabled: bool = True,
    ) -> None:
        self.clock = clock
        self.maximum = float(maximum)
        self.restore_rate = float(restore_rate)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._available = self.maximum
        self._at = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
        elapsed = max(0.0, now - self._at)
        self._available = min(self.maximum, self._available + elapsed * self.restore_rate)
        self._at = now

    @property
    def available(self) -> float:
        with self._lock:
            self._refill()
            return self._available if self.enabled else self.maximum

    def take(self, cost: float) -> bool:
        """Deduct ``cost`` if that many points are available; False means throttled."""
        with self._lock:
            self._refill()
            if not self.enabled:
                return True
            if cost > self._available:
                return False
            self._available -= cost
            return True

    def refund(self, points: float) -> None:
        with self._lock:
            self._refill()
            if self.enabled:
                self._available = min(self.maximum, self._available + max(0.0, points))

    def drain(self, points: float | None = None) -> None:
        """Empty the bucket (or take ``points``) as if another client had spent them."""
        with self._lock:
            self._refill()
            self._available = max(
                0.0, self._available - (self.maximum if points is None else points)
            )

    def configure(
        self,
        maximum: float | None = None,
        restore_rate: float | None = None,
        enabled: bool | None = None,
    ) -> None:
        with self._lock:
            self._refill()
            if maximum is not None:
                self.maximum = float(maximum)
                self._available = min(self._available, self.maximum)
            if restore_rate is not None:
                self.restore_rate = float(restore_rate)
            if enabled is not None:
                self.enabled = enabled

    def status(self) -> dict[str, Any]:
        """``throttleStatus`` as Shopify reports it (whole points currently available)."""
        return {
            "maximumAvailable": self.maximum,
            "currentlyAvailable": int(self.available),
            "restoreRate": self.restore_rate,
        }
