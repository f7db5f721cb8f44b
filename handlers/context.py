"""What a topic handler is given: the event's context, and the handler's signature."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class EventContext:
    tenant_id: int
    topic: str
    webhook_event_id: int | None
    triggered_at: datetime | None
    received_at: datetime


Handler = Callable[[AsyncSession, EventContext, dict[str, Any]], Awaitable[None]]
