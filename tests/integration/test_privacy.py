"""Personal data does not outlive redaction: not in stored errors, log lines or guest orders."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select

from models import Order, WebhookEvent, utcnow
from receiver.samples import sample_payload
from tests.factories import SHOP, create_tenant
from tests.integration.test_compliance import (
    PERSONAL_STRINGS,
    dump_tenant,
    post,
    run_queued_jobs,
)
from tests.integration.test_logs import Lines

EMAIL = "russell.winfield@example.com"
PHONE = "+16135551111"
IP = "203.0.113.42"


def guest_order(order_id: int, **fields: object) -> dict:
    """The sample order placed without a customer account: no customer id anywhere."""
    return sample_payload("orders/create") | {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "customer": None,
        **fields,
    }


# PostgreSQL only: SQLite does not enforce column widths, so this write does not fail there.
@pytest.mark.parametrize("backend_session", ["postgresql"], indirect=True)
async def test_database_error_stores_and_logs_no_values_and_redact_leaves_none(
    backend, served, http
):
    tenant_id = await create_tenant(backend.sessions)
    assert await post(http, served, "customers/create") == "processed"
    # financial_status is VARCHAR(32): PostgreSQL refuses the row, and the statement's
    # parameters held the buyer's email, IP and the whole raw payload.
    bad = sample_payload("orders/create") | {"financial_status": "x" * 40}
    lines = Lines()
    logger = logging.getLogger("shopify_receiver")
    logger.addHandler(lines)
    try:
        assert await post(http, served, "orders/create", bad) == "failed"
    finally:
        logger.removeHandler(lines)
    async with backend.sessions() as session:
        error = await session.scalar(
            select(WebhookEvent.error).where(WebhookEvent.status == "failed")
        )
    assert error is not None
    assert "22001" in error  # string_data_right_truncation: what went wrong is still said
    logged = json.dumps(lines.lines)
    assert "webhook.failed" in logged
    for text in (error, logged):
        assert EMAIL not in text
        assert IP not in text
        assert "Russell" not in text

    assert await post(http, served, "customers/redact") == "processed"
    await run_queued_jobs(backend, served)
    after = await dump_tenant(backend, tenant_id)
    assert [value for value in PERSONAL_STRINGS if value in after] == []


async def test_redact_scrubs_an_error_that_names_the_customer(backend, served, http):
    """An error stored before errors were built from safe parts, on an event whose payload
    does not name the customer, still loses the email."""
    tenant_id = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        session.add(
            WebhookEvent(
                tenant_id=tenant_id,
                shop_domain=SHOP,
                topic="orders/create",
                dedupe_key="old-failure",
                received_at=utcnow(),
                status="failed",
                error=f"DataError: invalid input for query argument $3: '{EMAIL.upper()}'",
                payload={"id": 5},
            )
        )
    assert await post(http, served, "customers/redact") == "processed"
    await run_queued_jobs(backend, served)
    async with backend.sessions() as session:
        error = await session.scalar(
            select(WebhookEvent.error).where(WebhookEvent.dedupe_key == "old-failure")
        )
    assert error is not None
    assert EMAIL not in error.lower()
    assert error.startswith("DataError")


async def test_redact_finds_guest_orders_by_email_and_by_phone(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    by_email = guest_order(901, email=EMAIL.upper(), contact_email=EMAIL.upper())
    by_phone = guest_order(902, email="someone.else@example.net", contact_email=None, phone=PHONE)
    unrelated = guest_order(
        903,
        email="ada@example.org",
        contact_email="ada@example.org",
        phone=None,
        billing_address={"phone": "+442071234567", "first_name": "Ada"},
        shipping_address=None,
    )
    for payload in (by_email, by_phone, unrelated):
        assert await post(http, served, "orders/create", payload) == "processed"
    redact = sample_payload("customers/redact", SHOP) | {"orders_to_redact": []}

    assert await post(http, served, "customers/redact", redact) == "processed"
    await run_queued_jobs(backend, served)

    async with backend.sessions() as session:
        orders = {
            order.shopify_id: order
            for order in await session.scalars(select(Order).where(Order.tenant_id == tenant_id))
        }
    assert orders[901].email is None
    assert orders[902].email is None
    for order_id in (901, 902):
        raw = json.dumps(orders[order_id].raw).lower()
        assert EMAIL not in raw
        assert PHONE not in raw
        assert IP not in raw
    assert orders[903].email == "ada@example.org"
    after = await dump_tenant(backend, tenant_id)
    assert EMAIL not in after.lower()
    assert PHONE not in after
    assert "ada@example.org" in after
