"""When a failed event is applied again: exponential backoff with jitter, a bounded number
of attempts, then `dead` (replayed only by hand).

Pure schedule: the first delivery (receiver.webhooks), a replay (handlers.dispatch) and the
retry sweep (backfill.retries) all ask here, so an event's timeline is the same whichever
path failed it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from models import WebhookEvent
from models.statuses import EventStatus

DEFAULT_MAX_ATTEMPTS = 8

# The wait after the n-th failed attempt (the last one repeats): a bug fixed and deployed
# within minutes is caught by the early retries; a store down for a day by the late ones.
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
)
# Up to this fraction later than the step: events that failed together (a database blip, a
# bad deploy) do not all come due in the same second again.
JITTER = 0.2


def backoff(attempts: int, *, rng: random.Random | None = None) -> timedelta:
    """The wait after an event's `attempts`-th failed attempt (1 for the first delivery)."""
    step = BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]
    return step * (1 + JITTER * (rng or random).random())


def next_attempt_at(
    attempts: int, now: datetime, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> datetime | None:
    """When to apply an event again after its `attempts`-th attempt failed at `now`; None
    when that was the last one (the event is `dead`)."""
    if attempts >= max_attempts:
        return None
    return now + backoff(attempts)


async def schedule_retry(
    session: AsyncSession,
    event_id: int,
    attempts: int,
    now: datetime,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> EventStatus:
    """Record on a just-failed event when it is tried again, or that it is `dead`."""
    when = next_attempt_at(attempts, now, max_attempts)
    status = EventStatus.FAILED if when is not None else EventStatus.DEAD
    await session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .values(status=status, next_attempt_at=when)
        .execution_options(synchronize_session=False)
    )
    return status
