"""The mandatory compliance topics and the export that answers a data request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import ColumnElement, Table, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.context import EventContext
from handlers.metafields import without_values
from handlers.normalize import optional_shopify_id, parse_shopify_id
from handlers.personal_data import mentions, scrub
from handlers.resources import RESOURCES, Resource
from models import (
    ApiToken,
    ApiTokenTenant,
    Base,
    ComplianceRequest,
    Customer,
    Metafield,
    Order,
    ShopRecord,
    Tenant,
    WebhookEvent,
    WebhookEventKey,
    utcnow,
)
from models.statuses import TenantStatus
from models.tenancy import of_store

SCAN_BATCH = 500
# Recorded by its handler and carried out by a job (backfill.redactions), which the
# receiver queues once the request is committed.
REDACT_CUSTOMER = "customers/redact"


def _customer_of(payload: dict[str, Any]) -> dict[str, Any]:
    customer = payload.get("customer")
    if not isinstance(customer, dict):
        raise ValueError("compliance payload has no customer object")
    return customer


def _order_ids(payload: dict[str, Any], key: str) -> list[int]:
    ids = payload.get(key) or []
    if not isinstance(ids, list):
        raise ValueError(f"{key} must be a list of order ids")
    return [parse_shopify_id(order_id, key) for order_id in ids]


async def record_data_request(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """Recorded here; answered with `shopify-receiver compliance export`."""
    customer = _customer_of(payload)
    session.add(
        ComplianceRequest(
            tenant_id=context.tenant_id,
            webhook_event_id=context.webhook_event_id,
            topic=context.topic,
            customer_shopify_id=parse_shopify_id(customer.get("id"), "customer.id"),
            payload=payload,
        )
    )


async def redact_customer(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """Record the redaction, committed with the inbox row; the scan and scrub of every stored
    payload run as a job (`complete_customer_redaction`), off Shopify's 5-second request.

    The body is checked here, so a malformed one fails on delivery rather than in the job.
    """
    customer = _customer_of(payload)
    customer_id = parse_shopify_id(customer.get("id"), "customer.id")
    _order_ids(payload, "orders_to_redact")
    session.add(
        ComplianceRequest(
            tenant_id=context.tenant_id,
            webhook_event_id=context.webhook_event_id,
            topic=context.topic,
            customer_shopify_id=customer_id,
            # Kept whole until the job runs: its email and phone find guest orders.
            payload=payload,
        )
    )


async def complete_customer_redaction(session: AsyncSession, request: ComplianceRequest) -> None:
    """Scrub the customer a recorded customers/redact names, and mark the request done."""
    payload = request.payload or {}
    customer = _customer_of(payload)
    customer_id = parse_shopify_id(customer.get("id"), "customer.id")
    order_ids = _order_ids(payload, "orders_to_redact")
    identifiers = {str(customer.get("email") or ""), str(customer.get("phone") or "")}
    stored = await session.scalar(
        select(Customer).where(
            of_store(Customer.tenant_id, request.tenant_id), Customer.shopify_id == customer_id
        )
    )
    if stored is not None:
        identifiers |= {stored.email or "", stored.phone or ""}
    identifiers.discard("")
    await redact_personal_data(session, request.tenant_id, customer_id, order_ids, identifiers)
    request.payload = scrub(payload, identifiers)
    request.completed_at = utcnow()


async def redact_personal_data(
    session: AsyncSession,
    tenant_id: int,
    customer_id: int,
    order_ids: list[int],
    identifiers: set[str],
) -> None:
    """Remove one customer's personal data from rows and from every stored payload and error.

    Orders are found by customer id, by `orders_to_redact`, and by the customer's email
    (case-insensitively) or phone: a guest checkout carries no customer id at all.
    """
    customers = await session.scalars(
        select(Customer).where(
            of_store(Customer.tenant_id, tenant_id), Customer.shopify_id == customer_id
        )
    )
    for row in customers:
        for column in RESOURCES["customers"].personal_fields:
            setattr(row, column, None)
        row.raw = without_values(scrub(row.raw, identifiers))
    orders = await session.scalars(
        select(Order).where(
            of_store(Order.tenant_id, tenant_id),
            _orders_of(customer_id, order_ids, identifiers),
        )
    )
    redacted_orders = set(order_ids)
    for order in orders:
        for column in RESOURCES["orders"].personal_fields:
            setattr(order, column, None)
        order.raw = without_values(scrub(order.raw, identifiers))
        redacted_orders.add(order.shopify_id)
    await _redact_children(session, RESOURCES["customers"], tenant_id, [customer_id], identifiers)
    await _redact_children(
        session, RESOURCES["orders"], tenant_id, sorted(redacted_orders), identifiers
    )
    for metafield in await _metafields_of(session, tenant_id, customer_id, sorted(redacted_orders)):
        # The namespace, key and type say what was kept, not about whom.
        metafield.value = None
        metafield.raw = {"id": metafield.shopify_id}
    requests = await session.scalars(
        select(ComplianceRequest).where(of_store(ComplianceRequest.tenant_id, tenant_id))
    )
    for request in requests:
        if request.customer_shopify_id == customer_id or mentions(
            request.payload, customer_id, order_ids, identifiers
        ):
            request.payload = scrub(request.payload, identifiers)
    async for event_id, payload, error in _tenant_payloads(session, tenant_id):
        if mentions(payload, customer_id, order_ids, identifiers):
            await session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(
                    payload=without_values(scrub(payload, identifiers)),
                    error=redacted_error(error),
                )
                .execution_options(synchronize_session=False)
            )
    if identifiers:
        # Errors stored before they were built from safe parts may quote an email or phone
        # even where the payload does not name the customer.
        named = await session.execute(
            select(WebhookEvent.id, WebhookEvent.error).where(
                of_store(WebhookEvent.tenant_id, tenant_id),
                or_(
                    *(
                        func.lower(WebhookEvent.error).contains(value.lower(), autoescape=True)
                        for value in identifiers
                    )
                ),
            )
        )
        for event_id, error in named.all():
            await session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(error=redacted_error(error))
                .execution_options(synchronize_session=False)
            )
    await session.flush()


async def _redact_children(
    session: AsyncSession,
    resource: Resource,
    tenant_id: int,
    owners: list[int],
    identifiers: set[str],
) -> None:
    """The children of these records: personal columns emptied, payloads scrubbed. A child
    that is personal data as a whole (an address) keeps only its id in `raw`."""
    for child in resource.child_sets:
        model = child.model
        if not issubclass(model, ShopRecord) or model is Metafield:
            # Inventory levels: stock counts, nothing about a person. Metafields: by owner
            # type and in every namespace, kept now or before (`_metafields_of`).
            continue
        owner = getattr(model, child.owner_key or child.parent_key)
        for start in range(0, len(owners), 1000):
            rows = await session.scalars(
                select(model).where(
                    of_store(model.tenant_id, tenant_id), owner.in_(owners[start : start + 1000])
                )
            )
            for row in rows:
                for column in child.personal_fields:
                    setattr(row, column, None)
                row.raw = (
                    {"id": row.shopify_id} if child.wholly_personal else scrub(row.raw, identifiers)
                )


# Where an order's JSON holds a phone number (REST and GraphQL spellings).
_ORDER_PHONE_PATHS = (
    ("phone",),
    ("customer", "phone"),
    ("billing_address", "phone"),
    ("shipping_address", "phone"),
    ("billingAddress", "phone"),
    ("shippingAddress", "phone"),
)


async def _metafields_of(
    session: AsyncSession, tenant_id: int, customer_id: int, order_ids: list[int]
) -> list[Metafield]:
    """A customer's metafields and their orders', whatever namespaces are configured now."""
    found: list[Metafield] = []
    for owner_type, owners in (("CUSTOMER", [customer_id]), ("ORDER", order_ids)):
        for start in range(0, len(owners), 1000):
            found.extend(
                await session.scalars(
                    select(Metafield)
                    .where(
                        of_store(Metafield.tenant_id, tenant_id),
                        Metafield.owner_type == owner_type,
                        Metafield.owner_shopify_id.in_(owners[start : start + 1000]),
                    )
                    .order_by(Metafield.shopify_id)
                )
            )
    return found


def _orders_of(
    customer_id: int, order_ids: list[int], identifiers: set[str]
) -> ColumnElement[bool]:
    emails = sorted({value.lower() for value in identifiers if "@" in value})
    phones = sorted(value for value in identifiers if "@" not in value)
    conditions: list[ColumnElement[bool]] = [Order.customer_shopify_id == customer_id]
    if order_ids:
        conditions.append(Order.shopify_id.in_(order_ids))
    if emails:
        conditions.append(func.lower(Order.email).in_(emails))
    if phones:
        conditions.extend(Order.raw[path].as_string().in_(phones) for path in _ORDER_PHONE_PATHS)
    return or_(*conditions)


def redacted_error(error: str | None) -> str | None:
    """An event's error without anything after its exception class: the class still says
    what went wrong, and nothing that could name the person is left."""
    if error is None:
        return None
    kind = error.split(":", 1)[0].split(" ", 1)[0][:100]
    return f"{kind} (details removed by customers/redact)"


async def _tenant_payloads(
    session: AsyncSession, tenant_id: int
) -> AsyncIterator[tuple[int, Any, str | None]]:
    """Every stored payload (and error) of the tenant, in batches, so memory stays flat on a
    big inbox."""
    after = 0
    while True:
        batch = (
            await session.execute(
                select(WebhookEvent.id, WebhookEvent.payload, WebhookEvent.error)
                .where(of_store(WebhookEvent.tenant_id, tenant_id), WebhookEvent.id > after)
                .order_by(WebhookEvent.id)
                .limit(SCAN_BATCH)
            )
        ).all()
        if not batch:
            return
        for event_id, payload, error in batch:
            yield event_id, payload, error
        after = batch[-1][0]


def tenant_tables() -> list[Table]:
    """Every table whose rows belong to one store (it has a `tenant_id` column), children
    before the tables they reference: deleting in this order never trips a foreign key."""
    return [table for table in reversed(Base.metadata.sorted_tables) if "tenant_id" in table.c]


async def redact_shop(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """Delete everything held for the shop, from every table with a `tenant_id` column.

    What stays is evidence, with no personal data in it: the tenant row (marked redacted, its
    credentials wiped), this shop/redact event and the compliance record written here.

    API tokens scoped to the store are revoked, also those scoped to other stores as well:
    the scope row must go (the store's data is gone), and a token left with no scope rows
    would see every store (receiver.auth). Working as this one store, the handler cannot see
    (and should not) a token's other scopes, so it cannot tell which tokens would be left
    with none; revoking never widens access, and an operator issues a new token for the
    remaining stores. A viewer's `user_tenants` row is simply deleted: a viewer with no rows
    sees no store.
    """
    tenant_id = context.tenant_id
    now = utcnow()
    scoped_tokens = select(ApiTokenTenant.api_token_id).where(
        of_store(ApiTokenTenant.tenant_id, tenant_id)
    )
    await session.execute(
        update(ApiToken)
        .where(ApiToken.id.in_(scoped_tokens), ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    for table in tenant_tables():
        statement = table.delete().where(of_store(table.c.tenant_id, tenant_id))
        if table.name == WebhookEvent.__tablename__:
            statement = statement.where(table.c.id != context.webhook_event_id)
        if table.name == WebhookEventKey.__tablename__:  # and the key that event holds
            statement = statement.where(table.c.webhook_event_id != context.webhook_event_id)
        await session.execute(statement.execution_options(synchronize_session=False))
    await session.execute(
        update(Tenant)
        .where(Tenant.id == tenant_id)
        .values(
            status=TenantStatus.REDACTED,
            access_token_encrypted=None,
            refresh_token_encrypted=None,
            webhook_secrets_encrypted=None,
            redacted_at=now,
            updated_at=now,
        )
    )
    session.add(
        ComplianceRequest(
            tenant_id=tenant_id,
            webhook_event_id=context.webhook_event_id,
            topic=context.topic,
            customer_shopify_id=optional_shopify_id(payload.get("customer_id"), "customer_id"),
            payload=payload,
            completed_at=now,
        )
    )


def _row_dict(row: Any) -> dict[str, Any]:
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


async def export_customer(
    session: AsyncSession, tenant_id: int, customer_id: int, *, complete_requests: bool = True
) -> dict[str, Any]:
    """Everything stored about one customer, for answering customers/data_request."""
    customer = await session.scalar(
        select(Customer).where(
            of_store(Customer.tenant_id, tenant_id), Customer.shopify_id == customer_id
        )
    )
    orders = await session.scalars(
        select(Order)
        .where(of_store(Order.tenant_id, tenant_id), Order.customer_shopify_id == customer_id)
        .order_by(Order.shopify_id)
    )
    order_rows = [_row_dict(order) for order in orders]
    order_ids = [order["shopify_id"] for order in order_rows]
    identifiers = {customer.email or "", customer.phone or ""} if customer else set()
    identifiers.discard("")
    requests = list(
        await session.scalars(
            select(ComplianceRequest)
            .where(
                of_store(ComplianceRequest.tenant_id, tenant_id),
                ComplianceRequest.customer_shopify_id == customer_id,
            )
            .order_by(ComplianceRequest.id)
        )
    )
    events = []
    async for event_id, payload, _error in _tenant_payloads(session, tenant_id):
        if mentions(payload, customer_id, order_ids, identifiers):
            event = await session.get(WebhookEvent, event_id)
            if event is not None:
                events.append(_row_dict(event))
    children: dict[str, list[dict[str, Any]]] = {}
    for resource, owners in (
        (RESOURCES["customers"], [customer_id]),
        (RESOURCES["orders"], order_ids),
    ):
        for child in resource.child_sets:
            model = child.model
            if not issubclass(model, ShopRecord) or not owners or model is Metafield:
                continue
            owner = getattr(model, child.owner_key or child.parent_key)
            found = await session.scalars(
                select(model)
                .where(of_store(model.tenant_id, tenant_id), owner.in_(owners))
                .order_by(model.shopify_id)
            )
            rows = children.setdefault(child.table, [])
            known = {row["shopify_id"] for row in rows}
            rows.extend(_row_dict(row) for row in found if row.shopify_id not in known)
    kept_metafields = await _metafields_of(session, tenant_id, customer_id, order_ids)
    if kept_metafields:
        children["metafields"] = [_row_dict(row) for row in kept_metafields]
    if complete_requests:
        now = utcnow()
        for request in requests:
            if request.topic == "customers/data_request" and request.completed_at is None:
                request.completed_at = now
    return {
        "customer": _row_dict(customer) if customer else None,
        "orders": order_rows,
        # Their addresses, line items, refunds, transactions, fulfillments, by table.
        "children": children,
        "compliance_requests": [_row_dict(request) for request in requests],
        "webhook_events": events,
    }
