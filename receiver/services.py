"""What the lifespan builds once per process and every request uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backfill.queue import JobQueue
from backfill.runner import BackfillEnvironment
from models import SecretBox
from receiver.limits import BodyBudget
from receiver.settings import Settings

if TYPE_CHECKING:
    from receiver.coalesce import Coalescer
    from receiver.webhooks import Delivery, Outcome


@dataclass(frozen=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    secret_box: SecretBox
    head_revision: str
    backfill: BackfillEnvironment
    job_queue: JobQueue
    # Webhook bytes held before their signature is checked (receiver/limits.py).
    body_budget: BodyBudget
    # One store's concurrent webhooks of whole records, stored and applied together.
    webhook_batches: Coalescer[str, Delivery, Outcome | None]
