"""Project a store record onto a selection, the way the API would answer it.

``select(store.order_node(5), ORDER_FIELDS)`` is exactly the node a query selecting
``ORDER_FIELDS`` returns for that order, so tests can compare field by field.
"""

from __future__ import annotations

import functools
from typing import Any

from graphql import FragmentDefinitionNode, GraphQLObjectType, parse

from .executor import Executor
from .schema import admin_schema


@functools.lru_cache(maxsize=64)
def _fragment(typename: str, fields: str) -> FragmentDefinitionNode:
    document = parse(f"fragment Selected on {typename} {{ {fields} }}")
    fragment = document.definitions[0]
    assert isinstance(fragment, FragmentDefinitionNode)
    return fragment


def select(node: dict[str, Any], fields: str, typename: str | None = None) -> dict[str, Any]:
    schema = admin_schema()
    name = typename or node["__typename"]
    runtime = schema.get_type(name)
    assert isinstance(runtime, GraphQLObjectType)
    fragment = _fragment(name, fields)
    executor = Executor(schema, {}, None)
    result = executor.execute_fields(
        runtime, node, executor.collect(runtime, [fragment.selection_set])
    )
    if executor.errors:
        raise ValueError(executor.errors[0]["message"])
    return result
