"""Bulk operations: ``bulkOperationRunQuery`` starts an export, polling moves it through
CREATED -> RUNNING -> COMPLETED, and the finished file is JSONL generated on download, one
record at a time, from a snapshot taken when the operation started (constant memory for any
store size).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLObjectType,
    OperationDefinitionNode,
    OperationType,
    get_named_type,
    is_leaf_type,
)
from graphql.execution.values import get_argument_values

from .cost import is_connection
from .data import gid, iso
from .executor import Executor
from .resources import ResourceView
from .schema import admin_schema, check_document
from .search import Search, parse_search

if TYPE_CHECKING:
    from .store import FakeStore

BULK_ID_BASE = 4_100_000_000_000
ACTIVE = ("CREATED", "RUNNING")
# JSONL is sent in chunks of about this many bytes: big enough to keep per-chunk overhead
# negligible, small enough that memory stays flat.
CHUNK_BYTES = 256 * 1024


@dataclass
class BulkOperation:
    numeric_id: int
    query: str
    resource: str
    typename: str
    search: Search
    fragments: dict[str, FragmentDefinitionNode]
    node_fields: list[FieldNode]
    view: ResourceView
    created_at: str
    started: float
    total: int
    key: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    status: str = "CREATED"
    polls: int = 0
    error_code: str | None = None
    fail_with: str | None = None
    completed_at: str | None = None

    @property
    def gid(self) -> str:
        return gid("BulkOperation", self.numeric_id)

    @property
    def object_count(self) -> int:
        if self.status == "COMPLETED":
            return self.total
        if self.status == "FAILED":
            return self.total // 2
        if self.status == "RUNNING":
            return self.total // 2
        return 0


class BulkManager:
    def __init__(
        self,
        store: FakeStore,
        *,
        polls_to_complete: int = 2,
        seconds_to_complete: float | None = None,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self.polls_to_complete = polls_to_complete
        self.seconds_to_complete = seconds_to_complete
        self.concurrency = concurrency
        self._lock = threading.RLock()
        self._operations: dict[int, BulkOperation] = {}
        self._next = 1
        self._fail_next: str | None = None

    # -- starting --

    def fail_next(self, error_code: str = "INTERNAL_SERVER_ERROR") -> None:
        """Make the next operation end FAILED with ``error_code`` (and half its data)."""
        self._fail_next = error_code

    def _user_error(self, message: str, code: str = "INVALID") -> list[dict[str, Any]]:
        return [{"field": ["query"], "message": message, "code": code}]

    def run(self, query: str) -> tuple[BulkOperation | None, list[dict[str, Any]]]:
        """Start an export of ``query``; (operation, userErrors) as the mutation returns them."""
        with self._lock:
            active = [op for op in self._operations.values() if op.status in ACTIVE]
            if len(active) >= self.concurrency:
                if self.concurrency == 1:
                    message = (
                        "A bulk query operation for this app and shop is already in progress: "
                        f"{active[0].gid}."
                    )
                    return None, [
                        {"field": None, "message": message, "code": "OPERATION_IN_PROGRESS"}
                    ]
                return None, [
                    {
                        "field": None,
                        "message": f"Bulk operations limit reached ({self.concurrency}).",
                        "code": "LIMIT_REACHED",
                    }
                ]
            parsed = self._parse(query)
            if isinstance(parsed, list):
                return None, parsed
            operation = parsed
            self._operations[operation.numeric_id] = operation
            self.store.stats.bulk_operations += 1
            return operation, []

    def _parse(self, query: str) -> BulkOperation | list[dict[str, Any]]:
        checked = check_document(query)
        if checked.errors:
            return self._user_error(f"Invalid bulk query: {checked.errors[0]['message']}")
        assert checked.document is not None
        operations = [
            d for d in checked.document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        if len(operations) != 1 or operations[0].operation != OperationType.QUERY:
            return self._user_error("Bulk queries must contain exactly one query operation.")
        fragments = {
            d.name.value: d
            for d in checked.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        schema = admin_schema()
        roots = [
            s
            for s in operations[0].selection_set.selections
            if isinstance(s, FieldNode) and s.name.value != "__typename"
        ]
        if len(roots) != 1:
            return self._user_error("Bulk queries must have exactly one top-level field.")
        root = roots[0]
        resource_name = root.name.value
        if resource_name not in self.store.counts:  # the simulated resources
            return self._user_error(f"fakeshop: bulk export of {resource_name!r} is not simulated")
        query_type = schema.query_type
        assert query_type is not None
        arguments = get_argument_values(query_type.fields[resource_name], root, None)
        connection_type = get_named_type(query_type.fields[resource_name].type)
        node_fields = self._node_fields(root)
        if not node_fields:
            return self._user_error("Bulk queries must select edges { node { ... } } or nodes.")
        node_type = get_named_type(connection_type.fields["nodes"].type)  # type: ignore[union-attr]
        if self._has_connection(node_fields, node_type):  # type: ignore[arg-type]
            return self._user_error(
                "fakeshop: nested connections in bulk queries are not simulated"
            )
        resource = self.store.resource(resource_name)
        view = resource.view()
        clock = self.store.clock
        search = parse_search(arguments.get("query"), clock.now().timestamp())
        operation = BulkOperation(
            numeric_id=BULK_ID_BASE + self._next,
            query=query,
            resource=resource_name,
            typename=node_type.name,
            search=search,
            fragments=fragments,
            node_fields=node_fields,
            view=view,
            created_at=iso(int(clock.now().timestamp())),
            started=clock.monotonic(),
            total=view.count(search),
            fail_with=self._fail_next,
        )
        # Export one record now, so a field the simulator lacks fails the mutation instead of
        # producing a file of errors later.
        first = next(iter(view.iterate(search)), None)
        if first is not None:
            executor = self._executor(operation)
            list(self._render(operation, executor, [first]))
            if executor.errors:
                return self._user_error(executor.errors[0]["message"])
        self._next += 1
        self._fail_next = None
        return operation

    @staticmethod
    def _node_fields(root: FieldNode) -> list[FieldNode]:
        found: list[FieldNode] = []
        for selection in root.selection_set.selections if root.selection_set else ():
            if not isinstance(selection, FieldNode):
                continue
            if selection.name.value == "nodes":
                found.append(selection)
            elif selection.name.value == "edges" and selection.selection_set:
                found.extend(
                    s
                    for s in selection.selection_set.selections
                    if isinstance(s, FieldNode) and s.name.value == "node"
                )
        return found

    def _has_connection(self, nodes: list[FieldNode], parent: GraphQLObjectType) -> bool:
        for node in nodes:
            for selection in node.selection_set.selections if node.selection_set else ():
                if not isinstance(selection, FieldNode) or selection.name.value.startswith("__"):
                    continue
                definition = parent.fields.get(selection.name.value)
                if definition is None:
                    continue
                named = get_named_type(definition.type)
                if is_leaf_type(named):
                    continue
                if is_connection(named):
                    return True
                if isinstance(named, GraphQLObjectType) and self._has_connection(
                    [selection], named
                ):
                    return True
        return False

    # -- progress --

    def get(self, numeric_id: int) -> BulkOperation | None:
        with self._lock:
            return self._operations.get(numeric_id)

    def current(self) -> BulkOperation | None:
        with self._lock:
            return self._operations[max(self._operations)] if self._operations else None

    def poll(self, operation: BulkOperation) -> None:
        """A client looked at ``operation``: move it along."""
        with self._lock:
            if operation.status not in ACTIVE:
                return
            operation.polls += 1
            elapsed = self.store.clock.monotonic() - operation.started
            done = operation.polls >= self.polls_to_complete or (
                self.seconds_to_complete is not None and elapsed >= self.seconds_to_complete
            )
            if not done:
                operation.status = "RUNNING"
                return
            operation.completed_at = iso(int(self.store.clock.now().timestamp()))
            if operation.fail_with:
                operation.status = "FAILED"
                operation.error_code = operation.fail_with
            else:
                operation.status = "COMPLETED"

    def cancel(self, operation: BulkOperation) -> list[dict[str, Any]]:
        with self._lock:
            if operation.status not in ACTIVE:
                return [
                    {
                        "field": None,
                        "message": (
                            "A bulk operation cannot be canceled when it is "
                            f"{operation.status.lower()}"
                        ),
                    }
                ]
            operation.status = "CANCELED"
            operation.completed_at = iso(int(self.store.clock.now().timestamp()))
            return []

    def node(self, operation: BulkOperation, base_url: str, poll: bool = True) -> dict[str, Any]:
        """The BulkOperation object as the API shows it; looking at it counts as a poll."""
        if poll:
            self.poll(operation)
        url = partial = None
        count = operation.object_count
        download = (
            f"{base_url}/_fakeshop/bulk/{self.store.shop_domain}/{operation.numeric_id}/"
            f"{operation.key}.jsonl"
        )
        # Shopify gives no url for an export that found nothing.
        if operation.status == "COMPLETED" and count:
            url = download
        if operation.status == "FAILED" and count:
            partial = download
        return {
            "__typename": "BulkOperation",
            "id": operation.gid,
            "status": operation.status,
            "errorCode": operation.error_code,
            "type": "QUERY",
            "query": operation.query,
            "createdAt": operation.created_at,
            "completedAt": operation.completed_at,
            # UnsignedInt64 is a string on the wire.
            "objectCount": str(count),
            "rootObjectCount": str(count),
            "fileSize": None,
            "url": url,
            "partialDataUrl": partial,
        }

    # -- the file --

    def _executor(self, operation: BulkOperation) -> Executor:
        return Executor(admin_schema(), operation.fragments, None)

    def _render(
        self, operation: BulkOperation, executor: Executor, indexes: Iterator[int] | list[int]
    ) -> Iterator[str]:
        node_type = admin_schema().get_type(operation.typename)
        assert isinstance(node_type, GraphQLObjectType)
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for index in indexes:
            node = operation.view.node(index)
            if node is None:
                continue
            yield dumps(executor.complete(node_type, operation.node_fields, node))

    def lines(self, operation: BulkOperation) -> Iterator[str]:
        """Every JSONL line of a finished operation (half of them if it failed)."""
        limit = operation.object_count
        indexes = operation.view.iterate(operation.search)
        executor = self._executor(operation)
        for count, line in enumerate(self._render(operation, executor, indexes)):
            if count >= limit:
                return
            yield line

    def chunks(self, operation: BulkOperation) -> Iterator[bytes]:
        buffer: list[str] = []
        size = 0
        for line in self.lines(operation):
            buffer.append(line)
            size += len(line) + 1
            if size >= CHUNK_BYTES:
                yield ("\n".join(buffer) + "\n").encode()
                buffer, size = [], 0
        if buffer:
            yield ("\n".join(buffer) + "\n").encode()
