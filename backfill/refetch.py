"""Reading whole the records whose webhook cut a child list short.

Shopify's products/* bodies carry only the first variants of a product with many and list
every variant's gid in `variant_gids`. The webhook writes what it was given, tombstones only
the variants gone from `variant_gids`, and records the product in `child_refetches` in the same
transaction. This job reads those records from the Admin API with every child (the backfill's
page selection, cut lists completed by id, as a page of the backfill is), writes them as a
backfill checkpoint does (order-safe: a newer webhook's version stays), and deletes the
requests it answered. It runs from the periodic maintenance tick, on both backends; a request
made after the job's read stays for the next tick.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.client import QueryTooCostly
from backfill.nested import MAX_PAGE, SINGLE_QUERY_LIMIT, complete_children
from backfill.queries import RESOURCES, Resource
from backfill.runner import BackfillEnvironment, admin_client_for
from handlers.children import write_with_children
from handlers.errors import error_text
from models import ChildRefetch, Tenant, utcnow
from models.statuses import TenantStatus
from models.tenancy import of_store, tenant_transaction, use_all_tenants
from models.upsert import affected_rows

log = logging.getLogger("shopify_receiver.backfill.refetch")

# Requests answered per store and tick: a store with thousands of cut products catches up
# over several ticks instead of holding a worker for one long run.
BATCH = 500


def resource_of_child_table(table: str) -> Resource | None:
    """The resource whose records carry children of this table (product_variants: products)."""
    for resource in RESOURCES.values():
        if any(child.table == table for child in resource.own_children):
            return resource
    return None


def nodes_query(resource: Resource) -> str:
    return (
        "query RefetchNodes($ids: [ID!]!) {\n"
        "  nodes(ids: $ids) {\n"
        f"    ... on {resource.typename} {{{resource.page_fields}    }}\n"
        "  }\n"
        "}\n"
    )


async def pending_refetch_stores(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    """Active stores with a cut child list waiting to be read whole."""
    async with sessions() as session, session.begin():
        await use_all_tenants(session)
        rows = await session.scalars(
            select(ChildRefetch.tenant_id)
            .join(Tenant, Tenant.id == ChildRefetch.tenant_id)
            .where(Tenant.status == TenantStatus.ACTIVE)
            .distinct()
        )
        return sorted(rows)


async def complete_refetches(env: BackfillEnvironment, tenant_id: int) -> int:
    """Read whole, and write, up to BATCH records of one store waiting in `child_refetches`;
    returns how many requests were answered. Shopify's errors are raised (the requests stay)."""
    async with tenant_transaction(env.sessions, tenant_id) as session:
        tenant = await session.get(Tenant, tenant_id)
        requests = list(
            await session.scalars(
                select(ChildRefetch)
                .where(of_store(ChildRefetch.tenant_id, tenant_id))
                .order_by(ChildRefetch.requested_at)
                .limit(BATCH)
            )
        )
    if tenant is None or tenant.status != TenantStatus.ACTIVE or not requests:
        return 0
    by_resource: dict[str, list[ChildRefetch]] = defaultdict(list)
    for request in requests:
        resource = resource_of_child_table(request.child_table)
        if resource is None:
            # A table no resource declares any more (an older release's request): nothing
            # can answer it.
            await _forget(env, tenant_id, [request], utcnow())
            continue
        by_resource[resource.name].append(request)
    client = admin_client_for(env, tenant)
    answered = 0
    for name, waiting in by_resource.items():
        resource = RESOURCES[name]
        size = min(MAX_PAGE, max(1, (SINGLE_QUERY_LIMIT - 3) // resource.page_node_cost))
        position = 0
        while position < len(waiting):
            chunk = waiting[position : position + size]
            read_at = utcnow()
            ids = sorted({request.parent_shopify_id for request in chunk})
            try:
                data = await client.execute(
                    nodes_query(resource),
                    {"ids": [f"gid://shopify/{resource.typename}/{i}" for i in ids]},
                    cost=3 + len(ids) * resource.page_node_cost,
                )
            except QueryTooCostly:
                if size == 1:
                    raise
                size = max(1, size // 2)
                continue
            position += len(chunk)
            # A null node was deleted meanwhile: its delete webhook (or reconcile) tombstones
            # it; there is nothing left to read.
            nodes = [
                node
                for node in data.get("nodes") or []
                if isinstance(node, dict) and node.get("id")
            ]
            await complete_children(client, resource.typename, resource.children, nodes)
            async with tenant_transaction(env.sessions, tenant_id) as session:
                if nodes:
                    await write_with_children(
                        session,
                        resource.model,
                        resource.children,
                        resource.normalize_node,
                        tenant_id,
                        nodes,
                        graphql=True,
                        source="backfill",
                    )
                answered += await _delete_answered(session, tenant_id, chunk, read_at)
            log.info("refetch.done tenant=%s resource=%s records=%s", tenant_id, name, len(nodes))
    return answered


async def _delete_answered(
    session: AsyncSession, tenant_id: int, requests: list[ChildRefetch], read_at: datetime
) -> int:
    result = await session.execute(
        delete(ChildRefetch)
        .where(
            of_store(ChildRefetch.tenant_id, tenant_id),
            ChildRefetch.id.in_([request.id for request in requests]),
            # Cut again after our read: the next tick reads it again.
            ChildRefetch.requested_at <= read_at,
        )
        .execution_options(synchronize_session=False)
    )
    return affected_rows(result)


async def _forget(
    env: BackfillEnvironment, tenant_id: int, requests: list[ChildRefetch], now: datetime
) -> None:
    async with tenant_transaction(env.sessions, tenant_id) as session:
        await _delete_answered(session, tenant_id, requests, now)


async def complete_all_refetches(env: BackfillEnvironment) -> int:
    """The periodic tick: every store's waiting requests, one store after another; a store
    whose Shopify calls fail is logged and left for the next tick."""
    answered = 0
    for tenant_id in await pending_refetch_stores(env.sessions):
        try:
            answered += await complete_refetches(env, tenant_id)
        except Exception as exc:  # one store's failure must not starve the others
            log.warning("refetch.failed tenant=%s error=%s", tenant_id, error_text(exc))
    return answered
