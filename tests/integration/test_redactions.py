"""customers/redact off the request path: the webhook records the request, a job scrubs, and
a request whose job was lost is carried out by the sweep."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, text

from backfill.maintenance import Maintenance, MaintenanceLoop
from backfill.runner import BackfillEnvironment
from models import ComplianceRequest, create_engine, create_session_factory
from models.encryption import SecretBox
from receiver.samples import sample_payload
from tests.conftest import TEST_ENCRYPTION_KEY, as_app_role
from tests.factories import SHOP, create_tenant
from tests.integration.test_compliance import (
    CUSTOMER_ID,
    PERSONAL_STRINGS,
    dump_tenant,
    post,
    run_queued_jobs,
    seed_store,
)


async def open_requests(backend) -> list[ComplianceRequest]:
    async with backend.sessions() as session:
        return list(
            await session.scalars(
                select(ComplianceRequest).where(
                    ComplianceRequest.topic == "customers/redact",
                    ComplianceRequest.completed_at.is_(None),
                )
            )
        )


@pytest.mark.parametrize("backend_session", ["postgresql"], indirect=True)
async def test_the_webhook_records_the_redaction_and_a_worker_job_carries_it_out(
    backend, served, http
):
    """PostgreSQL: the web process only queues, so what the request did is visible alone."""
    tenant_id = await create_tenant(backend.sessions)
    await seed_store(http, served)

    assert await post(http, served, "customers/redact") == "processed"
    [request] = await open_requests(backend)
    assert request.customer_shopify_id == CUSTOMER_ID
    async with backend.engine.connect() as connection:
        queued = await connection.scalar(
            text("SELECT count(*) FROM procrastinate_jobs WHERE task_name LIKE '%redactions'")
        )
    assert queued == 1

    await run_queued_jobs(backend, served)
    assert await open_requests(backend) == []
    after = await dump_tenant(backend, tenant_id)
    assert [value for value in PERSONAL_STRINGS if value in after] == []


async def test_a_redaction_whose_job_was_lost_is_carried_out_by_the_sweep(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    await seed_store(http, served)
    await run_queued_jobs(backend, served)
    # The process died after committing the request, before its job ran (or was queued).
    async with backend.sessions() as session, session.begin():
        session.add(
            ComplianceRequest(
                tenant_id=tenant_id,
                topic="customers/redact",
                customer_shopify_id=CUSTOMER_ID,
                payload=sample_payload("customers/redact", SHOP),
            )
        )
    before = await dump_tenant(backend, tenant_id)
    assert all(value in before for value in PERSONAL_STRINGS)

    engine = create_engine(as_app_role(backend.url))
    try:
        async with httpx.AsyncClient() as client:
            env = BackfillEnvironment(
                sessions=create_session_factory(engine),
                http=client,
                box=SecretBox([TEST_ENCRYPTION_KEY]),
                admin_base_url="http://127.0.0.1:9/{shop}",
                api_version="2026-10",
            )
            if backend.name == "sqlite":
                maintenance = Maintenance(None, timedelta(days=1), timedelta(days=1))
                await MaintenanceLoop(env, maintenance).tick()
    finally:
        await engine.dispose()
    if backend.name == "postgresql":
        # A worker's start (and its minute sweep) queues a job for each open request.
        await run_queued_jobs(backend, served)

    assert await open_requests(backend) == []
    after = await dump_tenant(backend, tenant_id)
    assert [value for value in PERSONAL_STRINGS if value in after] == []
