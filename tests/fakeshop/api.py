"""The GraphQL endpoint's logic: authentication, validation against the real schema, cost and
throttling, execution over the store's records, and Shopify's response shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute_sync,
)
from graphql.execution.values import get_variable_values

from .children import (
    INVENTORY_ITEM_ID_BASE,
    VARIANT_ID_BASE,
    child_cursor,
    decode_child,
    find_child,
    numeric,
    paginate,
)
from .children import _cursor_id as child_cursor_id
from .cost import actual_cost, requested_cost
from .data import iso
from .executor import Executor, FieldError
from .resources import Position, ResourceView, step
from .schema import admin_schema, check_document
from .search import parse_search, parse_time
from .store import RESOURCE_NAMES, FakeStore
from .subscription_api import MUTATIONS as SUBSCRIPTION_MUTATIONS
from .subscription_api import QUERIES as SUBSCRIPTION_QUERIES
from .subscription_api import lookup as lookup_subscription

DOCS_RATE_LIMITS = "https://shopify.dev/api/usage/rate-limits"
UNAUTHORIZED = {
    "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
}
GID = re.compile(r"^gid://shopify/(?P<type>\w+)/(?P<id>\d+)(?:\?.*)?$")
TYPENAMES = {
    "Customer": "customers",
    "Product": "products",
    "Order": "orders",
    "Location": "locations",
}


@dataclass
class Answer:
    """An HTTP answer: status, JSON body, extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestContext:
    """What resolvers see as ``info.context``."""

    store: FakeStore
    base_url: str
    search: list[dict[str, Any]] = field(default_factory=list)
    api_version: str | None = None
    _views: dict[str, ResourceView] = field(default_factory=dict)
    nodes_returned: int = 0

    def view(self, resource: str) -> ResourceView:
        # One snapshot per request: a page never mixes before and after a concurrent change.
        if resource not in self._views:
            self._views[resource] = self.store.resource(resource).view()
        return self._views[resource]


def _path(info: Any) -> list[Any]:
    path = info.path
    return path.as_list() if hasattr(path, "as_list") else list(path)


# -- cursors --


def encode_cursor(numeric_id: int, updated: int | None = None) -> str:
    # Shopify's cursors are base64 JSON of the last id and sort value; opaque to clients.
    value = iso(updated) if updated is not None else str(numeric_id)
    payload = json.dumps({"last_id": numeric_id, "last_value": value}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def decode_cursor(
    cursor: str | None, view: ResourceView, by_updated: bool = False
) -> Position | None:
    """The cursor's position: an index, or (updatedAt, index) under sortKey UPDATED_AT (the
    sort value it carries, so a record updated since keeps its old place, as on Shopify)."""
    if cursor is None:
        return None
    try:
        decoded = json.loads(base64.b64decode(cursor, validate=True))
        numeric_id = int(decoded["last_id"])
        updated = int(parse_time(str(decoded["last_value"]))) if by_updated else None
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST") from error
    index = numeric_id - view.resource.base_id
    if not 0 <= index < view.total:
        raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST")
    return index if updated is None else (updated, index)


# -- resolvers --


def _connection(resource: str) -> Callable[..., dict[str, Any]]:
    def resolve(
        info: Any,
        first: int | None = None,
        last: int | None = None,
        after: str | None = None,
        before: str | None = None,
        query: str | None = None,
        reverse: bool = False,
        sortKey: str | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        context: RequestContext = info.context
        view = context.view(resource)
        if first is None and last is None:
            raise FieldError("you must provide one of first or last", "BAD_REQUEST")
        if first is not None and last is not None:
            raise FieldError("providing both first and last is not supported", "BAD_REQUEST")
        if sortKey not in (None, "ID", "CREATED_AT", "PROCESSED_AT", "UPDATED_AT"):
            # Those orders equal id order for generated records; others would need real sorting.
            raise FieldError(f"fakeshop does not simulate sortKey {sortKey}", "NOT_SIMULATED")
        # (updatedAt, id) order: generated records are in it already, changed ones are merged.
        by_updated = sortKey == "UPDATED_AT"
        search = parse_search(query, context.store.clock.now().timestamp())
        if search.warnings:
            context.search.append(
                {"path": _path(info), "query": query, "warnings": search.warnings}
            )
        after_index = decode_cursor(after, view, by_updated)
        before_index = decode_cursor(before, view, by_updated)

        def exists(position: Position | None, descending: bool) -> bool:
            # Is there a matching record at ``position`` or beyond it in this direction?
            if position is None:
                return False
            start = step(position, -1 if not descending else 1)
            return next(iter(view.iterate(search, start, descending, by_updated)), None) is not None

        def before_the_cursor(index: int, descending: bool) -> bool:
            place = view.position(index, by_updated)
            return place > before_index if descending else place < before_index  # type: ignore[operator]

        if first is not None:
            descending = bool(reverse)
            indexes, more = view.page(search, first, after_index, descending, by_updated)
            if before_index is not None:
                kept = [i for i in indexes if before_the_cursor(i, descending)]
                more = more and len(kept) == len(indexes)
                indexes = kept
            has_next, has_previous = more, exists(after_index, not descending)
        else:
            assert last is not None
            descending = not reverse
            indexes, more = view.page(search, last, before_index, descending, by_updated)
            indexes.reverse()
            has_previous, has_next = more, exists(before_index, not descending)
        base = view.resource.base_id
        nodes = [view.node(i) for i in indexes]
        cursors = [
            encode_cursor(base + i, view.timestamps(i)[1] if by_updated else None) for i in indexes
        ]
        context.nodes_returned += len(nodes)
        return {
            "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, nodes, strict=True)],
            "nodes": nodes,
            "pageInfo": {
                "hasNextPage": has_next,
                "hasPreviousPage": has_previous,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }

    return resolve


def _catalogue_connection(items: bool) -> Callable[..., dict[str, Any]]:
    """Root ``inventoryItems`` (``items``) or ``productVariants``: every product's variants
    (or their inventory items) in id order, which is product order then position."""

    def resolve(
        info: Any,
        first: int | None = None,
        last: int | None = None,
        after: str | None = None,
        before: str | None = None,
        query: str | None = None,
        reverse: bool = False,
        sortKey: str | None = None,
        **_ignored: Any,
    ) -> dict[str, Any]:
        context: RequestContext = info.context
        if last is not None or before is not None or reverse:
            raise FieldError("fakeshop pages these forwards only (first/after)", "NOT_SIMULATED")
        if first is None:
            raise FieldError("you must provide one of first or last", "BAD_REQUEST")
        if sortKey not in (None, "ID"):
            raise FieldError(f"fakeshop does not simulate sortKey {sortKey}", "NOT_SIMULATED")
        search = parse_search(query, context.store.clock.now().timestamp())
        if search.warnings:
            context.search.append(
                {"path": _path(info), "query": query, "warnings": search.warnings}
            )
        base = INVENTORY_ITEM_ID_BASE if items else VARIANT_ID_BASE
        position = child_cursor_id(after) - base if after is not None else None
        taken: list[Any] = []
        view = context.view("products")
        for variant in context.store.product_children.all_variants(view, position):
            node = variant["inventoryItem"] if items else variant
            created = int(parse_time(node["createdAt"]))
            updated = int(parse_time(node["updatedAt"]))
            if not search.matches(created, updated, numeric(node["id"])):
                continue
            taken.append(node)
            if len(taken) > first:
                break
        page = taken[:first]
        cursors = [child_cursor(node["id"]) for node in page]
        context.nodes_returned += len(page)
        return {
            "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, page, strict=True)],
            "nodes": page,
            "pageInfo": {
                "hasNextPage": len(taken) > first,
                "hasPreviousPage": after is not None,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }

    return resolve


def _count(resource: str) -> Callable[..., dict[str, Any]]:
    def resolve(
        info: Any, query: str | None = None, limit: int | None = 10000, **_ignored: Any
    ) -> dict[str, Any]:
        context: RequestContext = info.context
        search = parse_search(query, context.store.clock.now().timestamp())
        count = context.view(resource).count(search)
        # Shopify caps counts at ``limit`` (10,000 unless the client passes null).
        if limit is not None and count > limit:
            return {"count": limit, "precision": "AT_LEAST"}
        return {"count": count, "precision": "EXACT"}

    return resolve


def _lookup(context: RequestContext, global_id: str, expect: str | None = None) -> Any:
    match = GID.match(global_id or "")
    if match is None:
        raise FieldError(f"Invalid global id '{global_id}'", "argumentLiteralsIncompatible")
    typename, numeric_id = match["type"], int(match["id"])
    if expect is not None and typename != expect:
        return None
    if typename == "WebhookSubscription":
        return lookup_subscription(context.store, global_id)
    if typename == "BulkOperation":
        operation = context.store.bulk.get(numeric_id)
        return context.store.bulk.node(operation, context.base_url) if operation else None
    resource = TYPENAMES.get(typename)
    if resource is None:
        # A child (line item, variant, inventory item or level, refund, ...): its id names
        # its parent, which is generated and searched.
        located = decode_child(numeric_id, typename)
        if located is None:
            return None
        parent_resource, parent_index, _ = located
        parent = context.view(parent_resource).node(parent_index)
        return find_child(parent, typename, global_id) if parent is not None else None
    view = context.view(resource)
    index = view.index_of(numeric_id)
    return view.node(index) if index is not None else None


def _by_id(expect: str) -> Callable[..., Any]:
    return lambda info, id: _lookup(info.context, id, expect)


def _current_bulk(info: Any, type: str = "QUERY", **_ignored: Any) -> Any:
    context: RequestContext = info.context
    operation = context.store.bulk.current()
    return context.store.bulk.node(operation, context.base_url) if operation else None


def _bulk_operations(
    info: Any,
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
    query: str | None = None,
    reverse: bool = False,
    sortKey: str = "CREATED_AT",
    **_ignored: Any,
) -> dict[str, Any]:
    """``bulkOperations`` (2026-01+): this app's operations by creation; ``query:`` filters on
    ``status:`` (other terms are ignored). Each listed operation counts as a poll."""
    context: RequestContext = info.context
    if sortKey != "CREATED_AT":
        raise FieldError(f"fakeshop does not simulate sortKey {sortKey}", "NOT_SIMULATED")
    wanted = None
    for term in (query or "").split():
        name, _, value = term.partition(":")
        if name == "status" and value:
            wanted = value.strip("'\"").upper()
    bulk = context.store.bulk
    nodes = [bulk.node(operation, context.base_url) for operation in bulk.all()]
    nodes = [node for node in nodes if wanted is None or node["status"] == wanted]
    return paginate(nodes, first, last, after, before, reverse)


def _run_bulk(
    info: Any, query: str, groupObjects: bool | None = None, **_ignored: Any
) -> dict[str, Any]:
    context: RequestContext = info.context
    operation, errors = context.store.bulk.run(query, context.api_version, groupObjects)
    node = None
    if operation is not None:
        # The mutation's answer shows the operation as created: reading it is not a poll.
        node = context.store.bulk.node(operation, context.base_url, poll=False)
    return {"bulkOperation": node, "userErrors": errors}


def _cancel_bulk(info: Any, id: str) -> dict[str, Any]:
    context: RequestContext = info.context
    match = GID.match(id)
    operation = context.store.bulk.get(int(match["id"])) if match else None
    if operation is None:
        return {
            "bulkOperation": None,
            "userErrors": [{"field": ["id"], "message": "Bulk operation does not exist"}],
        }
    errors = context.store.bulk.cancel(operation)
    return {
        "bulkOperation": context.store.bulk.node(operation, context.base_url),
        "userErrors": errors,
    }


def _installation(info: Any) -> dict[str, Any]:
    # The app's granted scopes are the store's token scope (FakeStore(scope=...)); add
    # read_all_orders to it to claim orders older than 60 days (their hiding is not simulated).
    handles = [h.strip() for h in info.context.store.tokens.scope.split(",") if h.strip()]
    return {
        "id": "gid://shopify/AppInstallation/1",
        "accessScopes": [{"handle": h, "description": f"Scope {h}"} for h in handles],
    }


def _product_variants_count(
    info: Any, query: str | None = None, limit: int | None = 10000, **_ignored: Any
) -> dict[str, Any]:
    """QueryRoot.productVariantsCount: the variants of live products matching `query` (what
    the root `productVariants` lists), capped at `limit` (null: exact) like the other counts."""
    context = info.context
    search = parse_search(query, context.store.clock.now().timestamp())
    count = sum(
        1
        for created, updated, number in context.store.product_children.variant_stamps(
            context.view("products")
        )
        if search.matches(int(parse_time(created)), int(parse_time(updated)), number)
    )
    if limit is not None and count > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": count, "precision": "EXACT"}


QUERY_ROOT: dict[str, Any] = {
    **{name: _connection(name) for name in RESOURCE_NAMES},
    **{f"{name}Count": _count(name) for name in RESOURCE_NAMES},
    "customer": _by_id("Customer"),
    "product": _by_id("Product"),
    "order": _by_id("Order"),
    "location": _by_id("Location"),
    "inventoryItems": _catalogue_connection(items=True),
    "productVariants": _catalogue_connection(items=False),
    "productVariantsCount": _product_variants_count,
    "inventoryItem": _by_id("InventoryItem"),
    "inventoryLevel": _by_id("InventoryLevel"),
    "productVariant": _by_id("ProductVariant"),
    "refund": _by_id("Refund"),
    "bulkOperation": _by_id("BulkOperation"),
    "node": lambda info, id: _lookup(info.context, id),
    "nodes": lambda info, ids: [_lookup(info.context, i) for i in ids],
    "shop": lambda info: info.context.store.shop_node(),
    "currentBulkOperation": _current_bulk,
    "bulkOperations": _bulk_operations,
    "currentAppInstallation": _installation,
    **SUBSCRIPTION_QUERIES,
}
MUTATION_ROOT: dict[str, Any] = {
    "bulkOperationRunQuery": _run_bulk,
    "bulkOperationCancel": _cancel_bulk,
    **SUBSCRIPTION_MUTATIONS,
}


# -- the request --


def _cost_extension(store: FakeStore, requested: int, actual: int | None) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": actual,
            "throttleStatus": store.bucket.status(),
        }
    }


def _errors(store: FakeStore, errors: list[dict[str, Any]], requested: int = 0) -> Answer:
    store.stats.invalid += 1
    return Answer(200, {"errors": errors, "extensions": _cost_extension(store, requested, 0)})


def _select_operation(
    definitions: Any, name: str | None
) -> OperationDefinitionNode | dict[str, Any]:
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    if name:
        for operation in operations:
            if operation.name and operation.name.value == name:
                return operation
        return {
            "message": f'No operation named "{name}"',
            "extensions": {"code": "operationNotFound"},
        }
    if len(operations) != 1:
        return {
            "message": "An operation name is required",
            "extensions": {"code": "operationNameRequired"},
        }
    return operations[0]


def _uses_introspection(operation: OperationDefinitionNode) -> bool:
    return any(
        isinstance(s, FieldNode) and s.name.value in ("__schema", "__type")
        for s in operation.selection_set.selections
    )


def parse_body(raw: bytes, content_type: str) -> tuple[str, dict[str, Any], str | None] | None:
    """(query, variables, operationName) from a JSON or ``application/graphql`` body."""
    if content_type.startswith("application/graphql"):
        return raw.decode("utf-8", "replace"), {}, None
    try:
        payload = json.loads(raw or b"null")
    except ValueError:
        return None
    if not isinstance(payload, Mapping) or not isinstance(payload.get("query"), str):
        return None
    variables = payload.get("variables") or {}
    if not isinstance(variables, Mapping):
        return None
    name = payload.get("operationName")
    return payload["query"], dict(variables), name if isinstance(name, str) else None


def answer_graphql(
    store: FakeStore,
    query: str,
    variables: dict[str, Any],
    operation_name: str | None,
    base_url: str,
    force_throttle: bool = False,
    api_version: str | None = None,
) -> Answer:
    """Everything after authentication: validate, price, throttle, execute."""
    schema = admin_schema()
    checked = check_document(query)
    if checked.errors:
        return _errors(store, list(checked.errors))
    for name in checked.deprecated:
        store.stats.deprecated_fields[name] += 1
    assert checked.document is not None
    operation = _select_operation(checked.document.definitions, operation_name)
    if isinstance(operation, dict):
        return _errors(store, [operation])
    coerced = get_variable_values(schema, operation.variable_definitions or (), variables)
    if isinstance(coerced, list):
        return _errors(
            store,
            [
                {
                    "message": error.message,
                    "locations": [
                        {"line": loc.line, "column": loc.column} for loc in error.locations or []
                    ],
                    "extensions": {"code": "INVALID_VARIABLE"},
                }
                for error in coerced
            ],
        )
    fragments = {
        d.name.value: d
        for d in checked.document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    requested, problems = requested_cost(schema, operation, fragments, coerced)
    if problems:
        return _errors(store, problems, requested)
    if requested > store.max_query_cost:
        store.stats.max_cost_exceeded += 1
        message = (
            f"Query cost is {requested}, which exceeds the single query max cost limit "
            f"({store.max_query_cost}).\n\nSee https://shopify.dev/concepts/about-apis/rate-limits "
            "for more information on how the\ncost of a query is calculated.\n\nTo query larger "
            "amounts of data with fewer limits, bulk operations should be used instead.\nSee "
            "https://shopify.dev/tutorials/perform-bulk-operations-with-admin-api for usage "
            "details.\n"
        )
        return Answer(
            200,
            {
                "errors": [
                    {
                        "message": message,
                        "extensions": {
                            "code": "MAX_COST_EXCEEDED",
                            "cost": requested,
                            "maxCost": store.max_query_cost,
                            "documentation": DOCS_RATE_LIMITS,
                        },
                    }
                ],
                "extensions": _cost_extension(store, requested, None),
            },
        )
    if force_throttle or not store.bucket.take(requested):
        store.stats.throttled += 1
        return Answer(
            store.throttle_status,
            {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {"code": "THROTTLED", "documentation": DOCS_RATE_LIMITS},
                    }
                ],
                "extensions": _cost_extension(store, requested, None),
            },
        )
    context = RequestContext(store, base_url, api_version=api_version)
    data, errors = _execute(store, schema, operation, fragments, coerced, variables, context)
    actual = min(requested, actual_cost(schema, operation, fragments, coerced, data))
    store.bucket.refund(requested - actual)
    store.stats.answered += 1
    store.stats.points_requested += requested
    store.stats.points_used += actual
    store.stats.nodes_returned += context.nodes_returned
    body: dict[str, Any] = {}
    if errors:
        body["errors"] = errors
    body["data"] = data
    body["extensions"] = _cost_extension(store, requested, actual)
    if context.search:
        body["extensions"]["search"] = context.search
    return Answer(200, body)


def _execute(
    store: FakeStore,
    schema: Any,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    coerced: Any,
    raw_variables: dict[str, Any],
    context: RequestContext,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    is_mutation = operation.operation == OperationType.MUTATION
    root_value = MUTATION_ROOT if is_mutation else QUERY_ROOT
    if store.executor == "graphql-core" or _uses_introspection(operation):
        document = DocumentNode(definitions=(operation, *fragments.values()))
        result = execute_sync(
            schema,
            document,
            root_value=root_value,
            context_value=context,
            variable_values=raw_variables,
        )
        return result.data, [_format_error(e) for e in result.errors or []]
    root_type = schema.mutation_type if is_mutation else schema.query_type
    executor = Executor(schema, fragments, coerced, context)
    data = executor.execute_operation(operation, root_type, root_value)
    return data, executor.errors


def _format_error(error: GraphQLError) -> dict[str, Any]:
    formatted: dict[str, Any] = {"message": error.message}
    if error.locations:
        formatted["locations"] = [
            {"line": loc.line, "column": loc.column} for loc in error.locations
        ]
    if error.path:
        formatted["path"] = list(error.path)
    original = error.original_error
    if isinstance(original, FieldError) and original.extensions:
        formatted["extensions"] = original.extensions
    elif error.extensions:
        formatted["extensions"] = error.extensions
    return formatted
