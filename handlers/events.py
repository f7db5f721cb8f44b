"""Replaying stored events: the one loop behind `events replay` and the dashboard's replay
button. Each event is applied again by `process_event`, which records its new outcome."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.dispatch import process_event
from handlers.inbox import assign_tenant
from models import Tenant, WebhookEvent
from models.statuses import EventStatus
from models.tenancy import of_store, use_all_tenants


@dataclass(frozen=True)
class Store:
    """A store whose events alone may be replayed (the dashboard's store page)."""

    id: int
    shop_domain: str


@dataclass(frozen=True)
class Replayed:
    event_id: int
    status: str
    error: str | None


@dataclass(frozen=True)
class ReplayReport:
    events: tuple[Replayed, ...]

    @property
    def any_failed(self) -> bool:
        return any(event.status == EventStatus.FAILED for event in self.events)


async def replay_events(
    sessions: async_sessionmaker[AsyncSession],
    *,
    event_id: int | None = None,
    status: EventStatus | None = None,
    store: Store | None = None,
) -> ReplayReport:
    """Apply again the event `event_id`, or every event with `status`, oldest first, in one
    transaction. With `store`, only that store's events, including ones delivered before the
    store was added (matched by domain). An event without a store is given the one its
    domain names now, if any. An id that names no event (for `store`) replays nothing."""
    if (event_id is None) == (status is None):
        raise ValueError("give exactly one of event_id or status")
    query = select(WebhookEvent).order_by(WebhookEvent.id)
    if event_id is not None:
        query = query.where(WebhookEvent.id == event_id)
    else:
        query = query.where(WebhookEvent.status == status)
    if store is not None:
        query = query.where(
            or_(
                of_store(WebhookEvent.tenant_id, store.id),
                and_(
                    WebhookEvent.tenant_id.is_(None),
                    WebhookEvent.shop_domain == store.shop_domain,
                ),
            )
        )
    replayed = []
    # Not `cross_store_transaction`: process_event narrows the scope to each event's store,
    # so it is widened again before the next event (which may be another store's, or none's).
    async with sessions() as session, session.begin():
        await use_all_tenants(session)
        events = list(await session.scalars(query))
        for event in events:
            await session.flush()  # the previous event's outcome, under the scope it ran in
            await use_all_tenants(session)
            if event.tenant_id is None:
                tenant_id = await session.scalar(
                    select(Tenant.id).where(Tenant.shop_domain == event.shop_domain)
                )
                await assign_tenant(session, event, tenant_id)
            await process_event(session, event)
            replayed.append(Replayed(event.id, event.status, event.error))
    return ReplayReport(tuple(replayed))
