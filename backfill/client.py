"""Admin GraphQL client: paces itself from Shopify's cost reports, retries what is retryable,
and gives up with a clear error after a bounded number of attempts."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from backfill.metrics import THROTTLE_WAIT_SECONDS, THROTTLE_WAITS

log = logging.getLogger("shopify_receiver.backfill.client")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class BackfillError(Exception):
    """A backfill step failed for good; the message says why in words a person can act on."""


class CredentialsInvalid(BackfillError):
    pass


class QueryTooCostly(BackfillError):
    """MAX_COST_EXCEEDED: the same query with a smaller page will pass."""


class Credentials(Protocol):
    async def token(self) -> str: ...

    async def refresh(self, rejected: str) -> str:
        """A new token after `rejected` got a 401; raises CredentialsInvalid if impossible."""
        ...


@dataclass
class ThrottleState:
    """Shopify's leaky bucket as last reported, projected forward at the restore rate, less
    the points of the requests still in flight (`reserved`): Shopify takes a query's requested
    cost when the query starts, so two sent together each need their points in the bucket."""

    maximum: float = 1000.0
    available: float = 1000.0
    restore_rate: float = 50.0
    observed_at: float | None = None
    reserved: float = 0.0

    def update(self, cost: dict[str, Any], now: float) -> None:
        status = cost.get("throttleStatus") or {}
        try:
            self.maximum = float(status.get("maximumAvailable", self.maximum))
            self.available = float(status.get("currentlyAvailable", self.available))
            self.restore_rate = float(status.get("restoreRate", self.restore_rate)) or 1.0
        except (TypeError, ValueError):
            return
        self.observed_at = now

    def available_at(self, now: float) -> float:
        if self.observed_at is None:
            return self.available
        return min(self.maximum, self.available + (now - self.observed_at) * self.restore_rate)

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds until `cost` points are in the bucket (0 when they already are)."""
        missing = min(cost, self.maximum) - self.available_at(now)
        return max(0.0, missing / self.restore_rate)

    def has_room(self, cost: float, now: float) -> bool:
        """Whether `cost` points are in the bucket besides those reserved for requests in
        flight."""
        return min(cost, self.maximum) <= self.available_at(now) - self.reserved


@dataclass(frozen=True)
class RateLimitWait:
    """The client is about to sleep for Shopify's rate limit: `points` are missing from the
    bucket, which refills at `restore_rate` points a second."""

    points: float
    restore_rate: float
    seconds: float


# Awaited before the sleep, so what it records (the job's progress) is written in step with the
# pages around it.
WaitCallback = Callable[[RateLimitWait], Awaitable[None]]


@dataclass
class ClientStats:
    requests: int = 0
    throttled: int = 0
    retries: int = 0
    paced_seconds: float = 0.0
    points_requested: float = 0.0
    points_used: float = 0.0
    errors: list[str] = field(default_factory=list)


class AdminClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        endpoint: str,
        credentials: Credentials,
        *,
        shop: str = "",
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.http = http
        self.endpoint = endpoint
        self.credentials = credentials
        self.shop = shop
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.clock = clock
        self.jitter = jitter
        self.throttle = ThrottleState()
        self.stats = ClientStats()
        self.last_requested_cost: float | None = None
        # Told before each rate-limit sleep (the CLI's progress display shows it).
        self.on_wait: WaitCallback | None = None
        # Requests sent at once take their points in turn: one waits (for points or for a
        # request in flight to answer), the others queue behind it.
        self._sending = asyncio.Lock()
        self._answered = asyncio.Event()
        self._in_flight = 0

    def _backoff(self, attempt: int) -> float:
        # Full jitter: spreads the retries of many workers instead of synchronising them.
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(ceiling * (0.5 + 0.5 * self.jitter()))

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await self.sleep(seconds)

    async def execute(
        self, query: str, variables: dict[str, Any] | None = None, *, cost: float = 0.0
    ) -> dict[str, Any]:
        """Run one query and return its `data`. `cost` is the expected requested cost, used to
        wait for enough points before sending, so that throttling is the exception."""
        token = await self.credentials.token()
        refreshed = False
        last_problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = await self._send(query, variables, token, cost)
            except httpx.TransportError as exc:
                last_problem = f"connection problem ({type(exc).__name__}: {exc})"
                await self._retry(attempt, last_problem)
                continue
            if response.status_code == 401:
                if refreshed:
                    raise CredentialsInvalid(
                        f"{self.shop}: Shopify refused the access token even after a refresh"
                    )
                token = await self.credentials.refresh(token)
                refreshed = True
                continue
            if response.status_code == 429:
                self.stats.throttled += 1
                last_problem = "HTTP 429 Too Many Requests"
                await self._retry(attempt, last_problem, retry_after(response), rate_limited=True)
                continue
            if response.status_code >= 500:
                last_problem = f"HTTP {response.status_code} from Shopify"
                await self._retry(attempt, last_problem)
                continue
            if response.status_code != 200:
                raise BackfillError(
                    f"{self.shop}: Shopify answered HTTP {response.status_code}: "
                    f"{response.text[:300]}"
                )
            try:
                body = response.json()
            except ValueError:
                last_problem = "a response that is not JSON"
                await self._retry(attempt, last_problem)
                continue
            cost_report = (body.get("extensions") or {}).get("cost") or {}
            self.throttle.update(cost_report, self.clock())
            errors = body.get("errors")
            if errors:
                codes = _error_codes(errors)
                if "THROTTLED" in codes:
                    self.stats.throttled += 1
                    last_problem = "THROTTLED"
                    requested = float(cost_report.get("requestedQueryCost") or cost or 1)
                    wait = self.throttle.wait_for(requested, self.clock())
                    THROTTLE_WAITS.labels("throttled").inc()
                    THROTTLE_WAIT_SECONDS.labels("throttled").inc(wait)
                    await self._retry(attempt, last_problem, wait + 0.05, rate_limited=True)
                    continue
                if "MAX_COST_EXCEEDED" in codes:
                    raise QueryTooCostly(_error_text(errors))
                raise BackfillError(f"{self.shop}: GraphQL error: {_error_text(errors)}")
            requested_cost = float(cost_report.get("requestedQueryCost") or 0)
            self.last_requested_cost = requested_cost or None
            self.stats.points_requested += requested_cost
            self.stats.points_used += float(cost_report.get("actualQueryCost") or 0)
            data = body.get("data")
            if not isinstance(data, dict):
                raise BackfillError(f"{self.shop}: response has no data: {response.text[:300]}")
            return data
        raise BackfillError(
            f"{self.shop}: gave up after {self.max_attempts} attempts; last: {last_problem}"
        )

    async def _send(
        self, query: str, variables: dict[str, Any] | None, token: str, cost: float
    ) -> httpx.Response:
        await self._reserve(cost)
        self.stats.requests += 1
        try:
            return await self.http.post(
                self.endpoint,
                json={"query": query, "variables": variables or {}},
                headers={"X-Shopify-Access-Token": token},
            )
        finally:
            # Before the caller reads the answer's cost report, with no await between: a
            # request woken here sees the bucket as this answer left it.
            self._release(cost)

    async def _reserve(self, cost: float) -> None:
        """Wait until `cost` points are in the bucket besides those of the requests in
        flight, then hold them until this request is answered. While others are in flight it
        waits for one to answer (each answer reports the bucket); with none, it sleeps until
        the bucket has refilled enough, as one request at a time always did."""
        async with self._sending:
            while self._in_flight and not self.throttle.has_room(cost, self.clock()):
                await self._answered.wait()
            pace = self.throttle.wait_for(cost, self.clock())
            if pace > 0:
                self.stats.paced_seconds += pace
                THROTTLE_WAITS.labels("paced").inc()
                THROTTLE_WAIT_SECONDS.labels("paced").inc(pace)
                await self._tell_wait(pace)
                await self._pause(pace)
            self._in_flight += 1
            self.throttle.reserved += cost

    def _release(self, cost: float) -> None:
        self._in_flight -= 1
        # Exactly nothing once nothing is in flight: rounding must not leave points held.
        self.throttle.reserved = self.throttle.reserved - cost if self._in_flight else 0.0
        self._answered.set()
        self._answered = asyncio.Event()

    async def _tell_wait(self, seconds: float) -> None:
        if self.on_wait is not None and seconds > 0:
            rate = self.throttle.restore_rate
            await self.on_wait(RateLimitWait(seconds * rate, rate, seconds))

    async def _retry(
        self, attempt: int, problem: str, wait: float | None = None, *, rate_limited: bool = False
    ) -> None:
        self.stats.retries += 1
        if attempt >= self.max_attempts:
            return
        delay = self._backoff(attempt) if wait is None else min(wait, self.max_delay * 4)
        if rate_limited:
            await self._tell_wait(delay)
        log.info(
            "backfill.retry shop=%s attempt=%d problem=%s wait=%.2f",
            self.shop,
            attempt,
            problem,
            delay,
        )
        await self._pause(delay)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_codes(errors: Any) -> set[str]:
    if not isinstance(errors, list):
        return set()
    return {
        str((error.get("extensions") or {}).get("code"))
        for error in errors
        if isinstance(error, dict)
    }


def _error_text(errors: Any) -> str:
    if isinstance(errors, list):
        return "; ".join(
            str(error.get("message")) if isinstance(error, dict) else str(error) for error in errors
        )[:500]
    return str(errors)[:500]
