"""The retry sweep: failed events whose next attempt is due are applied again, across
stores, through the same path as a hand replay (`handlers.dispatch.process_event`).

Each event is claimed and applied in a transaction of its own: on PostgreSQL the row is
read `FOR UPDATE SKIP LOCKED`, so two workers sweeping at once never apply one event twice
(the second skips it, or finds it no longer due once the first commits). On SQLite the one
writer at a time gives the same guarantee.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.dispatch import event_fields, is_disconnect, log_outcome, process_event
from handlers.errors import error_text, may_quote_data
from handlers.retries import DEFAULT_MAX_ATTEMPTS, next_attempt_at
from models import WebhookEvent, utcnow
from models.statuses import EventStatus
from models.tenancy import use_all_tenants

log = logging.getLogger("shopify_receiver.backfill.retries")

# Events one sweep applies at most; the rest wait for the next tick (a minute on).
SWEEP_LIMIT = 200


@dataclass(frozen=True)
class RetryOutcome:
    event_id: int
    status: str
    attempts: int
    next_attempt_at: datetime | None


async def retry_due_events(
    sessions: async_sessionmaker[AsyncSession],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
    limit: int = SWEEP_LIMIT,
) -> list[RetryOutcome]:
    """Apply every failed event due at `now` (default: the current time) once more."""
    now = now or utcnow()
    outcomes: list[RetryOutcome] = []
    # Events whose attempt broke outside the handler's savepoint: not tried again this sweep.
    broken: set[int] = set()
    while len(outcomes) + len(broken) < limit:
        try:
            outcome = await _retry_one(sessions, max_attempts, now, broken)
        except _AttemptBroke as exc:
            broken.add(exc.event_id)
            continue
        if outcome is None:
            break
        outcomes.append(outcome)
    return outcomes


class _AttemptBroke(Exception):
    def __init__(self, event_id: int) -> None:
        super().__init__(event_id)
        self.event_id = event_id


async def _retry_one(
    sessions: async_sessionmaker[AsyncSession],
    max_attempts: int,
    now: datetime,
    broken: set[int],
) -> RetryOutcome | None:
    event_id: int | None = None
    try:
        async with sessions() as session, session.begin():
            # Due events of every store; process_event then narrows the transaction to the
            # event's own store before its handler runs.
            await use_all_tenants(session)
            query = (
                select(WebhookEvent)
                .where(
                    WebhookEvent.status == EventStatus.FAILED,
                    WebhookEvent.next_attempt_at <= now,
                )
                .order_by(WebhookEvent.next_attempt_at, WebhookEvent.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if broken:
                query = query.where(WebhookEvent.id.not_in(broken))
            event = await session.scalar(query)
            if event is None:
                return None
            event_id = event.id
            await process_event(session, event)
            if event.status == EventStatus.FAILED:
                # Scheduled from the sweep's clock, not the wall clock: tests drive `now`.
                event.next_attempt_at = next_attempt_at(event.attempts, now, max_attempts)
                if event.next_attempt_at is None:
                    event.status = EventStatus.DEAD
                    log_outcome(
                        EventStatus.DEAD,
                        f"gave up after {event.attempts} attempts; replay by hand",
                        event.dedupe_key,
                        event_fields(event),
                    )
            return RetryOutcome(event.id, event.status, event.attempts, event.next_attempt_at)
    except Exception as exc:
        if event_id is None or is_disconnect(exc):
            raise
        log.error(
            "retries.attempt_broke inbox_id=%s error=%s",
            event_id,
            error_text(exc),
            exc_info=not may_quote_data(exc),
        )
        raise _AttemptBroke(event_id) from exc
