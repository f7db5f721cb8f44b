"""Shopify's calculated query cost.

Requested cost is static: each object field costs 1, scalars and enums 0, a connection costs
2 plus ``first``/``last`` times the cost of one item (its node object and everything selected
under it), plus 1 for ``pageInfo``; nested connections multiply. A plain list with ``first:``
costs ``first`` times one item (the conservative reading; Shopify does not document it).
Interfaces and unions cost the most expensive of their fragments. A mutation costs 10. Actual
cost replaces ``first`` by the number of items a connection really returned and drops objects
that came back null.

The same walk checks page sizes (at most 250), which Shopify rejects before executing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
)
from graphql.execution.values import get_argument_values

MUTATION_COST = 10
CONNECTION_COST = 2
MAX_PAGE_SIZE = 250


def is_connection(named: GraphQLNamedType) -> bool:
    fields = getattr(named, "fields", None)
    return bool(named.name.endswith("Connection") and fields and "pageInfo" in fields)


@dataclass
class CostWalk:
    schema: GraphQLSchema
    fragments: dict[str, FragmentDefinitionNode]
    variables: Any
    problems: list[dict[str, Any]] = field(default_factory=list)
    items_depth: int = 0

    def _size(self, parent: GraphQLObjectType, node: FieldNode, path: list[str]) -> int:
        definition = parent.fields[node.name.value]
        try:
            arguments = get_argument_values(definition, node, self.variables)
        except Exception:  # coercion problems are reported by execution, not here
            return 0
        for name in ("first", "last"):
            size = arguments.get(name)
            if size is None:
                continue
            if not 0 <= size <= MAX_PAGE_SIZE:
                loc = node.loc.source.get_location(node.loc.start) if node.loc else None
                self.problems.append(
                    {
                        "message": (
                            f"Argument '{name}' on Field '{node.name.value}' has an invalid "
                            f"value ({size}). Expected a page size from 0 to {MAX_PAGE_SIZE}."
                        ),
                        "locations": [{"line": loc.line, "column": loc.column}] if loc else [],
                        "path": [*path, node.name.value],
                        "extensions": {
                            "code": "argumentLiteralsIncompatible",
                            "typeName": "Field",
                            "argumentName": name,
                        },
                    }
                )
            return max(0, size)
        return 0

    def selection(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType,
        data: Any = None,
        actual: bool = False,
        path: list[str] | None = None,
    ) -> int:
        """Cost of ``selection_set`` on ``parent``; with ``actual``, ``data`` is the result."""
        if selection_set is None:
            return 0
        path = path or []
        total = 0
        # Type-conditioned fragments on an abstract type are alternatives: the dearest counts.
        alternatives: dict[str, int] = {}
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, data, actual, path)
                continue
            if isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target_name = condition.name.value if condition else parent.name
                sub_set = selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is None:
                    continue
                target_name = fragment.type_condition.name.value
                sub_set = fragment.selection_set
            else:
                continue
            target = self.schema.get_type(target_name) or parent
            cost = self.selection(sub_set, target, data, actual, path)
            if target_name == parent.name:
                total += cost
            else:
                alternatives[target_name] = alternatives.get(target_name, 0) + cost
        return total + max(alternatives.values(), default=0)

    def field(
        self,
        node: FieldNode,
        parent: GraphQLNamedType,
        data: Any,
        actual: bool,
        path: list[str],
    ) -> int:
        name = node.name.value
        fields = getattr(parent, "fields", None)
        if name.startswith("__") or not fields or name not in fields:
            return 0
        named = get_named_type(fields[name].type)
        if is_leaf_type(named):
            return 0
        key = node.alias.value if node.alias else name
        value = data.get(key) if actual and isinstance(data, Mapping) else None
        if actual and value is None:
            if self.items_depth:
                # Inside a connection's items objects are priced as requested (the simulator's
                # long-standing rule); only nested connections count what came back.
                return self.field(node, parent, None, False, path)
            return 0  # a null object (or an error) was not paid for
        if is_connection(named):
            return self.connection(node, parent, named, value, actual, [*path, key])  # type: ignore[arg-type]
        if actual and isinstance(value, list):
            return sum(
                1 + self.selection(node.selection_set, named, item, actual, [*path, key])
                for item in value
                if item is not None
            )
        item = 1 + self.selection(node.selection_set, named, value, actual, [*path, key])
        if not actual and is_list_type(get_nullable_type(fields[name].type)):
            # A plain list sized by ``first:`` (Order.refunds, Order.fulfillments,
            # Fulfillment.trackingInfo): Shopify does not document its price; pricing it like
            # a connection's nodes is the conservative reading (a query that fits here fits
            # there).
            size = self._size(parent, node, path)  # type: ignore[arg-type]
            if size:
                return size * item
        return item

    def connection(
        self,
        node: FieldNode,
        parent: GraphQLObjectType,
        named: GraphQLObjectType,
        value: Any,
        actual: bool,
        path: list[str],
    ) -> int:
        requested_size = self._size(parent, node, path[:-1])
        cost = CONNECTION_COST
        selection_set = node.selection_set
        if selection_set is None:
            return cost
        for selection in selection_set.selections:
            if not isinstance(selection, FieldNode):
                continue
            name = selection.name.value
            key = selection.alias.value if selection.alias else name
            if name == "pageInfo":
                cost += 1
                continue
            if name not in ("edges", "nodes"):
                cost += self.field(selection, named, value, actual, path)
                continue
            item_type = get_named_type(named.fields[name].type)
            own = 1 if name == "nodes" else 0  # an edge's node is priced inside the edge
            if actual:
                # What really came back, item by item, so nested connections count the
                # nodes they returned.
                items = value.get(key) if isinstance(value, Mapping) else None
                self.items_depth += 1
                try:
                    cost += sum(
                        own
                        + self.selection(
                            selection.selection_set, item_type, item, True, [*path, key]
                        )
                        for item in (items if isinstance(items, list) else [])
                        if item is not None
                    )
                finally:
                    self.items_depth -= 1
                continue
            item = own + self.selection(
                selection.selection_set, item_type, None, False, [*path, key]
            )
            cost += requested_size * item
        return cost


def requested_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: Any,
) -> tuple[int, list[dict[str, Any]]]:
    """(requested cost, page-size problems) of ``operation``."""
    walk = CostWalk(schema, fragments, variables)
    if operation.operation == OperationType.MUTATION:
        root = schema.mutation_type
        assert root is not None
        walk.selection(operation.selection_set, root)  # only for the page-size checks
        return MUTATION_COST, walk.problems
    root = schema.query_type
    assert root is not None
    return walk.selection(operation.selection_set, root), walk.problems


def actual_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: Any,
    data: Mapping[str, Any] | None,
) -> int:
    if operation.operation == OperationType.MUTATION:
        return MUTATION_COST
    if data is None:
        return 0
    root = schema.query_type
    assert root is not None
    return CostWalk(schema, fragments, variables).selection(
        operation.selection_set, root, data, actual=True
    )
