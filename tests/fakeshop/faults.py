"""Fault injection: a per-store queue of faults consumed in order by matching requests, plus
optional random faults for soak benchmarks.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal

# Which requests a fault applies to.
Target = Literal["graphql", "download", "oauth", "any"]
Kind = Literal["status", "delay", "drop", "drop_body", "revoke_token", "expire_token", "throttle"]


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour. Build them with the class methods."""

    kind: Kind
    status: int = 0
    retry_after: float | None = None
    seconds: float = 0.0
    target: Target = "graphql"
    times: int = 1

    @classmethod
    def rate_limited(
        cls, retry_after: float = 2.0, *, times: int = 1, target: Target = "graphql"
    ) -> Fault:
        """HTTP 429 with ``Retry-After`` (what Shopify's edge answers to request floods)."""
        return cls("status", status=429, retry_after=retry_after, times=times, target=target)

    @classmethod
    def http(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        times: int = 1,
        target: Target = "graphql",
    ) -> Fault:
        """An error status (500, 502, 503, ...) instead of an answer."""
        return cls("status", status=status, retry_after=retry_after, times=times, target=target)

    @classmethod
    def slow(cls, seconds: float, *, times: int = 1, target: Target = "graphql") -> Fault:
        """Answer normally, but only after ``seconds``."""
        return cls("delay", seconds=seconds, times=times, target=target)

    @classmethod
    def drop(cls, *, times: int = 1, target: Target = "graphql") -> Fault:
        """Close the connection without sending any response."""
        return cls("drop", times=times, target=target)

    @classmethod
    def drop_mid_body(cls, *, times: int = 1, target: Target = "graphql") -> Fault:
        """Send the status line and half the body, then close the connection."""
        return cls("drop_body", times=times, target=target)

    @classmethod
    def revoke_token(cls) -> Fault:
        """Revoke the access token this request carries: 401 now and from then on."""
        return cls("revoke_token")

    @classmethod
    def expire_token(cls) -> Fault:
        """Expire the access token this request carries (refreshable if it has a refresh token)."""
        return cls("expire_token")

    @classmethod
    def throttled(cls, *, times: int = 1) -> Fault:
        """Answer THROTTLED whatever the bucket holds."""
        return cls("throttle", times=times)


@dataclass
class FaultPlan:
    """Faults waiting for requests; thread-safe (tests inject while the server consumes)."""

    queue: deque[Fault] = field(default_factory=deque)
    random_faults: list[tuple[float, Fault]] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            self.queue.extend(faults)

    def add_random(self, probability: float, fault: Fault, seed: int | None = None) -> None:
        """Fire ``fault`` on each matching request with ``probability`` (deterministic per seed)."""
        with self._lock:
            if seed is not None:
                self.rng = random.Random(seed)
            self.random_faults.append((probability, fault))

    def clear(self) -> None:
        with self._lock:
            self.queue.clear()
            self.random_faults.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(fault.times for fault in self.queue)

    def next_for(self, target: Target) -> Fault | None:
        """The fault the next ``target`` request meets, if any (consumed)."""
        with self._lock:
            for position, fault in enumerate(self.queue):
                if fault.target in (target, "any"):
                    if fault.times <= 1:
                        del self.queue[position]
                    else:
                        self.queue[position] = replace(fault, times=fault.times - 1)
                    return fault
            for probability, fault in self.random_faults:
                if fault.target in (target, "any") and self.rng.random() < probability:
                    return fault
        return None
