"""customers/redact off the request path: the webhook records a `compliance_requests` row
(completed_at NULL) with its inbox row and queues a job; the job scrubs the customer and
completes the request in one transaction, so a job killed half-way leaves the request open
and the sweep (`pending_redaction_stores`, every minute and at worker start) queues it again.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.compliance import REDACT_CUSTOMER, complete_customer_redaction
from models import ComplianceRequest
from models.tenancy import of_store, use_all_tenants, use_tenant


async def pending_redaction_stores(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """Stores with a customers/redact recorded and not yet carried out."""
    async with sessions() as session, session.begin():
        await use_all_tenants(session)  # the sweep looks across stores
        rows = await session.scalars(
            select(ComplianceRequest.tenant_id)
            .where(
                ComplianceRequest.topic == REDACT_CUSTOMER,
                ComplianceRequest.completed_at.is_(None),
            )
            .distinct()
        )
        return sorted(rows)


async def complete_redactions(sessions: async_sessionmaker[AsyncSession], tenant_id: int) -> int:
    """Carry out the store's open customers/redact requests, each in its own transaction;
    returns how many this call completed. A request another worker holds is skipped."""
    completed = 0
    while True:
        async with sessions() as session, session.begin():
            await use_tenant(session, tenant_id)
            request = await session.scalar(
                select(ComplianceRequest)
                .where(
                    of_store(ComplianceRequest.tenant_id, tenant_id),
                    ComplianceRequest.topic == REDACT_CUSTOMER,
                    ComplianceRequest.completed_at.is_(None),
                )
                .order_by(ComplianceRequest.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if request is None:
                return completed
            await complete_customer_redaction(session, request)
        completed += 1


async def complete_all_redactions(sessions: async_sessionmaker[AsyncSession]) -> int:
    """The sweep where jobs run in-process (SQLite): every store's open requests, inline."""
    return sum(
        [
            await complete_redactions(sessions, tenant_id)
            for tenant_id in await pending_redaction_stores(sessions)
        ]
    )
