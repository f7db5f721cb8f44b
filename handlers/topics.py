"""Handlers for the resource and lifecycle topics."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.children import (
    ChildSet,
    forget_references,
    tombstone_children,
    write_child_body,
    write_with_children,
)
from handlers.context import EventContext, Handler
from handlers.normalize import normalize_purchasing_summary, parse_shopify_id, parse_timestamp
from handlers.normalize_children import normalize_inventory_level
from handlers.records import apply_purchasing_summary, tombstone, tombstone_row, upsert_records
from handlers.resources import Resource
from models import InventoryItem, InventoryLevel, Order, ProductVariant, SyncJob, Tenant, utcnow
from models.statuses import SyncStatus, TenantStatus
from models.tenancy import of_store
from models.upsert import insert_on_conflict


def upsert_handler(resource: Resource) -> Handler:
    """The handler of a topic whose body is the whole record (REST-shaped), with the children
    it carries (an order's line items, a product's variants)."""

    async def handle(session: AsyncSession, context: EventContext, payload: dict[str, Any]) -> None:
        await write_with_children(
            session,
            resource.model,
            resource.children,
            resource.normalize_rest,
            context.tenant_id,
            [payload],
            graphql=False,
            source="webhook",
        )

    handle.__name__ = f"upsert_{resource.name}"
    return handle


def delete_handler(resource: Resource) -> Handler:
    """The handler of a deletion notice: a tombstone, final (see `tombstone`), for the record
    and its children."""
    model = resource.model

    async def handle(session: AsyncSession, context: EventContext, payload: dict[str, Any]) -> None:
        shopify_id = parse_shopify_id(payload.get("id"), f"{resource.name}.id")
        await tombstone(
            session,
            model,
            context.tenant_id,
            shopify_id,
            # Our receipt time, not X-Shopify-Triggered-At: headers are not signed.
            deleted_at=context.received_at,
            source="webhook",
        )
        await tombstone_children(
            session,
            resource.child_sets,
            context.tenant_id,
            shopify_id,
            deleted_at=context.received_at,
            source="webhook",
        )
        await forget_references(session, resource.referenced_as, context.tenant_id, [shopify_id])

    handle.__name__ = f"delete_{resource.name}"
    return handle


def child_handler(child: ChildSet) -> Handler:
    """The handler of a topic whose body is one child (`refunds/create`: a refund)."""

    async def handle(session: AsyncSession, context: EventContext, payload: dict[str, Any]) -> None:
        await write_child_body(session, child, context.tenant_id, payload, source="webhook")

    handle.__name__ = f"write_{child.table}"
    return handle


async def upsert_inventory_level(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """inventory_levels/connect and /update: the level as of its `updated_at`, which also
    revives a level disconnected before that time. Shopify builds the body when it sends it,
    so two quick changes may both carry the final `available`: harmless, as each is a state."""
    record = normalize_inventory_level(payload)
    item_deleted = await session.scalar(
        select(InventoryItem.id).where(
            of_store(InventoryItem.tenant_id, context.tenant_id),
            InventoryItem.shopify_id == record["inventory_item_shopify_id"],
            InventoryItem.deleted_at.is_not(None),
        )
    )
    if item_deleted is not None:
        return  # a deleted item's levels went with it (its delete may overtake this)
    await upsert_records(session, InventoryLevel, context.tenant_id, [record], source="webhook")
    await recount_variant_stock(session, context.tenant_id, record["inventory_item_shopify_id"])


async def disconnect_inventory_level(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """inventory_levels/disconnect: the item is no longer stocked at the location.

    The tombstone is dated by the body's `updated_at` when it has one; else (the body carries
    only the two ids; headers are not signed) it removes the level as we hold it: a connect
    or update newer than that state revives the level, an older one (a late or replayed
    delivery) does not."""
    record = normalize_inventory_level(payload)
    await tombstone_row(
        session,
        InventoryLevel,
        context.tenant_id,
        {
            "inventory_item_shopify_id": record["inventory_item_shopify_id"],
            "location_shopify_id": record["location_shopify_id"],
        },
        deleted_at=record["shopify_updated_at"] or context.received_at,
        raw=record["raw"],
        source="webhook",
        untimed=record["shopify_updated_at"] is None,
    )
    await recount_variant_stock(session, context.tenant_id, record["inventory_item_shopify_id"])


async def recount_variant_stock(session: AsyncSession, tenant_id: int, item_id: int) -> None:
    """A variant's `inventory_quantity` is what its item has available at every location it
    is stocked at. Shopify reports a stock change on inventory_levels/* alone (the product's
    updated_at does not move, no products/update comes), so the variant row follows the
    levels we hold; a later products/* body or backfill page sets it from Shopify again.
    Both read by the item (an index each), the store compared as `of_store` says."""
    levels = InventoryLevel.__table__
    stocked = (
        select(func.coalesce(func.sum(levels.c.available), 0))
        .where(
            of_store(levels.c.tenant_id, tenant_id),
            levels.c.inventory_item_shopify_id == item_id,
            levels.c.deleted_at.is_(None),
        )
        .scalar_subquery()
    )
    await session.execute(
        update(ProductVariant)
        .where(
            of_store(ProductVariant.tenant_id, tenant_id),
            ProductVariant.inventory_item_shopify_id == item_id,
            ProductVariant.deleted_at.is_(None),
        )
        .values(inventory_quantity=stocked)
        .execution_options(synchronize_session=False)
    )


async def record_purchasing_summary(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """Lifetime spend and order count, which customer webhooks stopped carrying in 2025-01."""
    await apply_purchasing_summary(
        session, context.tenant_id, normalize_purchasing_summary(payload), source="webhook"
    )


async def record_order_edit(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """orders/edited carries the edit, not the order: record when the order was last edited.

    The new totals arrive with the orders/updated that Shopify sends for the same edit. The
    row is created if the edit arrives first, so the later create/update fills it in.
    """
    edit = payload.get("order_edit", payload)
    if not isinstance(edit, dict):
        raise ValueError("orders/edited: order_edit must be an object")
    order_id = parse_shopify_id(edit.get("order_id"), "order_edit.order_id")
    edited_at = parse_timestamp(
        edit.get("committed_at") or edit.get("created_at"), "order_edit.committed_at"
    )
    table = Order.__table__
    statement = insert_on_conflict(session, table).values(
        tenant_id=context.tenant_id,
        shopify_id=order_id,
        edited_at=edited_at,
        source="webhook",
        synced_at=utcnow(),
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.shopify_id],
        set_={"edited_at": excluded.edited_at},
        where=(table.c.edited_at.is_(None)) | (excluded.edited_at > table.c.edited_at),
    )
    await session.execute(statement)


async def mark_uninstalled(
    session: AsyncSession, context: EventContext, payload: dict[str, Any]
) -> None:
    """The store removed the app: stop using its token and its syncs; its data stays until
    shop/redact. A running job notices at its next checkpoint and stops."""
    now = utcnow()
    await session.execute(
        update(SyncJob)
        .where(
            of_store(SyncJob.tenant_id, context.tenant_id),
            SyncJob.status.in_((SyncStatus.QUEUED, SyncStatus.RUNNING)),
        )
        .values(status=SyncStatus.CANCELLED, error="store uninstalled the app", finished_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Tenant)
        .where(Tenant.id == context.tenant_id)
        .values(
            status=TenantStatus.UNINSTALLED,
            access_token_encrypted=None,
            refresh_token_encrypted=None,
            access_token_expires_at=None,
            refresh_token_expires_at=None,
            uninstalled_at=context.received_at,
            updated_at=utcnow(),
        )
    )
