"""What a database should hold of a simulated store's children, and the check that it does:
shared by the backfill and handoff tests, which both end with "every child table equals the
store, row by row"."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.children import ChildSet
from handlers.resources import RESOURCES, Resource
from tests.fakeshop import FakeStore
from tests.fakeshop.children import children_of, value_of
from tests.fakeshop.select import select as select_fields

LEVEL_UNTOLD = frozenset({"shopify_created_at", "on_hand", "committed", "incoming"})


def store_nodes(store: FakeStore, resource: Resource) -> Iterator[dict[str, Any]]:
    """The store's live records of a resource (inventory items: its variants' items)."""
    if resource.name == "inventory_items":
        for product in store_nodes(store, RESOURCES["products"]):
            for variant in children_of(product, "variants"):
                yield value_of(variant, "inventoryItem")
        return
    source = store.resource(resource.name)
    for index in range(source.total):
        node = source.node(index)
        if node is not None:
            yield node


def expected_children(
    child: ChildSet, parent: dict[str, Any], parent_typename: str, parent_id: int
) -> Iterator[tuple[ChildSet, dict[str, Any]]]:
    """The rows one parent's children should be, with their own children's."""
    # The parent's own selection resolves what a child's reading needs from it (a customer's
    # default address).
    shown_parent = (
        select_fields(parent, "id defaultAddress { id }", parent_typename)
        if parent_typename == "Customer"
        else parent
    )
    for item in children_of(parent, child.node_key):
        shown = select_fields(item, child.node_fields, child.typename)
        record = child.normalize(shown, shown_parent, True) | {child.parent_key: parent_id}
        yield child, record
        for grandchild in child.queried_children:
            for kind, nested in expected_children(
                grandchild, item, child.typename, record["shopify_id"]
            ):
                if grandchild.owner_key:
                    nested.setdefault(grandchild.owner_key, parent_id)
                yield kind, nested


async def assert_children_equal_store(
    session: AsyncSession,
    store: FakeStore,
    tenant_id: int,
    resources: Iterable[Resource] = RESOURCES.values(),
) -> dict[str, int]:
    """Every live row of every child table is one of the store's children, equal column by
    column (raw aside), and every child of the store has its live row (of `resources`, each
    parent too). Returns the most children any one parent has, per table (so a caller can
    tell overflow was exercised)."""
    most: dict[str, int] = {}
    for resource in resources:
        live_parents = await session.scalar(
            select(func.count())
            .select_from(resource.model)
            .where(resource.model.tenant_id == tenant_id, resource.model.deleted_at.is_(None))
        )
        nodes = list(store_nodes(store, resource))
        assert live_parents == len(nodes), resource.name
        expected: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = {
            child.table: {} for child in resource.child_sets
        }
        for node in nodes:
            parent_id = int(str(node["id"]).rsplit("/", 1)[1])
            for child in resource.queried_children:
                for kind, record in expected_children(child, node, resource.typename, parent_id):
                    key = (record[kind.parent_key], record[kind.child_key])
                    expected[kind.table][key] = record
        for child in resource.child_sets:
            if not child.node_key:
                continue  # read from REST bodies only (a refund's transactions)
            model = child.model
            rows = {
                (getattr(row, child.parent_key), getattr(row, child.child_key)): row
                for row in await session.scalars(
                    select(model).where(model.tenant_id == tenant_id, model.deleted_at.is_(None))
                )
            }
            wanted = expected[child.table]
            assert sorted(rows) == sorted(wanted), (
                child.table,
                sorted(set(rows) - set(wanted))[:5],
                sorted(set(wanted) - set(rows))[:5],
            )
            for key, record in wanted.items():
                row = rows[key]
                for column, value in record.items():
                    # A level only a webhook brought lacks what REST level bodies never carry
                    # (its creation time and every quantity but `available`).
                    untold = child.table == "inventory_levels" and column in LEVEL_UNTOLD
                    if column != "raw" and not (untold and getattr(row, column) is None):
                        assert getattr(row, column) == value, (
                            child.table,
                            key,
                            column,
                            getattr(row, column),
                            value,
                        )
            per_parent: dict[Any, int] = {}
            for parent, _ in rows:
                per_parent[parent] = per_parent.get(parent, 0) + 1
            most[child.table] = max(per_parent.values(), default=0)
    return most
