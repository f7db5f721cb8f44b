"""Bulk operations: ``bulkOperationRunQuery`` starts an export, polling moves it through
CREATED -> RUNNING -> COMPLETED, and the finished file is JSONL generated on download, one
record at a time, from a snapshot taken when the operation started (constant memory for any
store size).

With ``prepare_files`` (benchmarks), the file is written while the operation runs, as Shopify
does, and the download serves it as a static file: the client's ingest then does not share
the machine with the rendering, which Shopify does on its own servers. The file is written by
a child process at the lowest CPU priority, so that rendering one resource's export (a core
for tens of seconds) takes only what the client leaves while it ingests another's: in a thread
it held the simulator's interpreter, which serves the downloads and the Admin API, and took a
core from the client.
"""

from __future__ import annotations

import json
import mmap
import os
import secrets
import shutil
import signal
import struct
import tempfile
import threading
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLObjectType,
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

from .children import children_of
from .cost import is_connection
from .data import Node, gid, iso
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
# bulkOperationRunQuery (2026-10 docs): "supports up to five connections with a maximum
# nesting depth of two levels".
MAX_CONNECTIONS = 5
MAX_DEPTH = 2
# Ungrouped output holds children back for this many parents.
UNGROUPED_PARENTS = 3
# Roots a bulk query may start from besides the store's resources: the catalogue's
# variants and inventory items (the way to export inventory levels).
CATALOGUE_ROOTS = {"inventoryItems": True, "productVariants": False}


@dataclass(frozen=True)
class NestedConnection:
    """A connection inside the exported node: its items become lines with ``__parentId``."""

    field_name: str
    typename: str
    node_fields: list[FieldNode]
    # The field's arguments (`metafields(namespace: "x")` selects some of the list).
    arguments: dict[str, Any] = field(default_factory=dict)


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
    roots: Callable[[], Iterator[Node]] = field(default=lambda: iter(()))
    nested: list[NestedConnection] = field(default_factory=list)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    status: str = "CREATED"
    polls: int = 0
    error_code: str | None = None
    fail_with: str | None = None
    group_objects: bool = True
    completed_at: str | None = None
    # Prepared files only: where the file is written, whether it is finished, the child
    # process writing it (while it runs) and how many records it holds so far, in memory
    # both processes map.
    file: Path | None = None
    ready: threading.Event | None = None
    renderer: int | None = None
    rendered: mmap.mmap = field(default_factory=lambda: mmap.mmap(-1, 8))

    @property
    def gid(self) -> str:
        return gid("BulkOperation", self.numeric_id)

    @property
    def object_count(self) -> int:
        if self.status in ACTIVE and self.ready is not None and not self.ready.is_set():
            return int(struct.unpack_from("q", self.rendered)[0])
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
        concurrency: int | None = 1,
        prepare_files: bool = False,
    ) -> None:
        self.store = store
        self.polls_to_complete = polls_to_complete
        self.seconds_to_complete = seconds_to_complete
        self.concurrency = concurrency
        self._lock = threading.RLock()
        self._operations: dict[int, BulkOperation] = {}
        self._next = 1
        self._fail_next: str | None = None
        self.prepare_files = prepare_files
        self._files: Path | None = None

    # -- starting --

    def fail_next(self, error_code: str = "INTERNAL_SERVER_ERROR") -> None:
        """Make the next operation end FAILED with ``error_code`` (and half its data)."""
        self._fail_next = error_code

    def _user_error(self, message: str, code: str = "INVALID") -> list[dict[str, Any]]:
        return [{"field": ["query"], "message": message, "code": code}]

    def limit_for(self, api_version: str | None) -> int:
        """Bulk queries allowed at once: the store's ``bulk_concurrency``, or with None what
        the API version allows (shopify.dev bulk guide: five from 2026-01, one before)."""
        if self.concurrency is not None:
            return self.concurrency
        return 5 if (api_version or "9999-99") >= "2026-01" else 1

    def run(
        self, query: str, api_version: str | None = None, group_objects: bool | None = None
    ) -> tuple[BulkOperation | None, list[dict[str, Any]]]:
        """Start an export of ``query``; (operation, userErrors) as the mutation returns them."""
        with self._lock:
            active = [op for op in self._operations.values() if op.status in ACTIVE]
            limit = self.limit_for(api_version)
            if len(active) >= limit:
                if limit == 1:
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
                        "message": f"Bulk operations limit reached ({limit}).",
                        "code": "LIMIT_REACHED",
                    }
                ]
            parsed = self._parse(query)
            if not isinstance(parsed, list):
                # groupObjects defaults to false from 2026-01 (release notes); before, output
                # was always grouped.
                older = (api_version or "9999-99") < "2026-01"
                parsed.group_objects = older or bool(group_objects)
            if isinstance(parsed, list):
                return None, parsed
            operation = parsed
            self._operations[operation.numeric_id] = operation
            self.store.stats.bulk_operations += 1
            if self.prepare_files:
                self._start_preparing(operation)
            return operation, []

    def _parse(self, query: str) -> BulkOperation | list[dict[str, Any]]:
        checked = check_document(query)
        if checked.errors:
            return self._user_error(f"Invalid bulk query: {checked.errors[0]['message']}")
        assert checked.document is not None
        operations = [
            d for d in checked.document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        if len(operations) != 1:
            return self._user_error("Bulk queries must contain exactly one query operation.")
        if operations[0].operation != OperationType.QUERY:
            return self._user_error(
                "Invalid operation type. Only `query` operations are supported."
            )
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
        query_type = schema.query_type
        assert query_type is not None
        shape = self._shape_errors(root, query_type)
        if shape:
            return shape
        resource_name = root.name.value
        catalogue = resource_name in CATALOGUE_ROOTS
        if resource_name not in self.store.counts and not catalogue:
            return self._user_error(f"fakeshop: bulk export of {resource_name!r} is not simulated")
        arguments = get_argument_values(query_type.fields[resource_name], root, None)
        connection_type = get_named_type(query_type.fields[resource_name].type)
        node_fields = self._node_fields(root)
        if not node_fields:
            return self._user_error("Bulk queries must select edges { node { ... } } or nodes.")
        node_type = get_named_type(connection_type.fields["nodes"].type)  # type: ignore[union-attr]
        assert isinstance(node_type, GraphQLObjectType)
        node_fields, nested = self._split(node_fields, node_type)
        resource = self.store.resource("products" if catalogue else resource_name)
        view = resource.view()
        clock = self.store.clock
        search = parse_search(arguments.get("query"), clock.now().timestamp())
        if catalogue:
            roots_of = self._catalogue_roots(view, search, CATALOGUE_ROOTS[resource_name])
            total = sum(1 for _ in roots_of())
        else:
            roots_of = self._resource_roots(view, search)
            total = view.count(search)
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
            total=total,
            fail_with=self._fail_next,
            roots=roots_of,
            nested=nested,
        )
        # Export one record now, so a field the simulator lacks fails the mutation instead of
        # producing a file of errors later.
        first = next(roots_of(), None)
        if first is not None:
            executor = self._executor(operation)
            list(self._render(operation, executor, iter([first])))
            if executor.errors:
                return self._user_error(executor.errors[0]["message"])
        self._next += 1
        self._fail_next = None
        return operation

    @staticmethod
    def _resource_roots(view: ResourceView, search: Search) -> Callable[[], Iterator[Node]]:
        def roots() -> Iterator[Node]:
            for index in view.iterate(search):
                node = view.node(index)
                if node is not None:
                    yield node

        return roots

    def _catalogue_roots(
        self, view: ResourceView, search: Search, items: bool
    ) -> Callable[[], Iterator[Node]]:
        from .search import parse_time

        catalogue = self.store.product_children

        def roots() -> Iterator[Node]:
            for variant in catalogue.all_variants(view):
                node = variant["inventoryItem"] if items else variant
                created = int(parse_time(node["createdAt"]))
                updated = int(parse_time(node["updatedAt"]))
                number = int(node["id"].rsplit("/", 1)[-1])
                if search.matches(created, updated, number):
                    yield node

        return roots

    # -- the shape Shopify accepts --

    def _shape_errors(self, root: FieldNode, query_type: GraphQLObjectType) -> list[dict[str, Any]]:
        """Shopify's checks of a bulk query, with its messages, in its order (as recorded
        from Shopify by other simulators' parity tests, notes/shopify-children.md): connections
        select ``edges { node }`` (not ``nodes``), no top-level ``node``, at most five
        connections nested at most two deep, a nested connection's parent node selects
        ``id``, no connection inside a list field, at least one connection."""
        nodes_fields: list[str] = []
        without_id: list[str] = []
        depths: list[int] = []
        within_list = False

        def visit_connection(field: FieldNode, named: GraphQLObjectType, depth: int) -> None:
            depths.append(depth)
            name = field.name.value
            if any(s.name.value == "nodes" for s in self._fields_of(field)):
                nodes_fields.append(name)
            inner = get_named_type(named.fields["nodes"].type)
            assert isinstance(inner, GraphQLObjectType)
            nodes = self._node_fields(field)
            selected = [s for node in nodes for s in self._fields_of(node)]
            has_id = any(s.name.value == "id" and s.alias is None for s in selected)
            for node in nodes:
                nested = visit_fields(node, inner, depth, False)
                if nested and not has_id and name not in without_id:
                    without_id.append(name)

        def visit_fields(
            owner: FieldNode, parent: GraphQLObjectType, depth: int, in_list: bool
        ) -> bool:
            """Whether a connection is nested under ``owner``."""
            nonlocal within_list
            found = False
            for selection in self._fields_of(owner):
                definition = parent.fields.get(selection.name.value)
                if definition is None:
                    continue
                named = get_named_type(definition.type)
                if is_leaf_type(named) or not isinstance(named, GraphQLObjectType):
                    continue
                if is_connection(named):
                    found = True
                    if in_list:
                        within_list = True
                    visit_connection(selection, named, depth + 1)
                else:
                    listed = is_list_type(get_nullable_type(definition.type))
                    found = visit_fields(selection, named, depth, in_list or listed) or found
            return found

        top_level_node = root.name.value in ("node", "nodes")
        definition = query_type.fields.get(root.name.value)
        if definition is not None:
            named = get_named_type(definition.type)
            if isinstance(named, GraphQLObjectType) and is_connection(named):
                visit_connection(root, named, 1)
            elif isinstance(named, GraphQLObjectType):
                visit_fields(root, named, 0, is_list_type(get_nullable_type(definition.type)))
        messages: list[str] = []
        if nodes_fields:
            messages.append(
                "All connection fields in a bulk query must select their contents using "
                f"'edges' > 'node', e.g: '{nodes_fields[0]} {{ edges {{ node {{'. Selecting via "
                "'nodes' is not supported. Invalid connection fields: "
                + ", ".join(f"'{name}'" for name in nodes_fields)
                + "."
            )
        if top_level_node:
            messages.append("Bulk queries cannot contain a top level `node` field.")
        if max(depths, default=0) > MAX_DEPTH:
            messages.append(
                "Bulk queries cannot contain connections with a nesting depth greater than "
                f"{MAX_DEPTH}."
            )
        if len(depths) > MAX_CONNECTIONS:
            messages.append(f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections.")
        if without_id:
            messages.append(
                "The parent 'node' field for a nested connection must select the 'id' field "
                "without an alias and must be of 'ID' return type. Connection fields without "
                f"'id': {', '.join(without_id)}."
            )
        if within_list:
            messages.append(
                "Queries that contain a connection field within a list field are not currently "
                "supported."
            )
        if not depths and (not messages or (top_level_node and len(messages) == 1)):
            messages.append("Bulk queries must contain at least one connection.")
        return [error for message in messages for error in self._user_error(message)]

    @staticmethod
    def _fields_of(node: FieldNode) -> list[FieldNode]:
        selected: list[FieldNode] = []
        for selection in node.selection_set.selections if node.selection_set else ():
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    selected.append(selection)
            elif isinstance(selection, InlineFragmentNode) and selection.selection_set:
                selected.extend(
                    s for s in selection.selection_set.selections if isinstance(s, FieldNode)
                )
        return selected

    def _split(
        self, node_fields: list[FieldNode], node_type: GraphQLObjectType
    ) -> tuple[list[FieldNode], list[NestedConnection]]:
        """The node's selection without its connections, and those connections (their items
        are exported as lines of their own, as Shopify does)."""
        nested: list[NestedConnection] = []
        stripped: list[FieldNode] = []
        for node in node_fields:
            kept = []
            for selection in node.selection_set.selections if node.selection_set else ():
                if isinstance(selection, FieldNode):
                    definition = node_type.fields.get(selection.name.value)
                    named = get_named_type(definition.type) if definition else None
                    if named is not None and is_connection(named):
                        inner = get_named_type(named.fields["nodes"].type)  # type: ignore[union-attr]
                        nested.append(
                            NestedConnection(
                                selection.name.value,
                                inner.name,
                                self._node_fields(selection),
                                get_argument_values(definition, selection, None),  # type: ignore[arg-type]
                            )
                        )
                        continue
                kept.append(selection)
            stripped.append(
                FieldNode(
                    alias=node.alias,
                    name=node.name,
                    arguments=node.arguments,
                    directives=node.directives,
                    selection_set=SelectionSetNode(selections=tuple(kept)),
                    loc=node.loc,
                )
            )
        return stripped, nested

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

    # -- progress --

    def get(self, numeric_id: int) -> BulkOperation | None:
        with self._lock:
            return self._operations.get(numeric_id)

    def all(self) -> list[BulkOperation]:
        """Every operation, oldest first."""
        with self._lock:
            return [self._operations[k] for k in sorted(self._operations)]

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
            if operation.ready is not None and not operation.ready.is_set():
                done = False  # Shopify completes an operation once its file is written
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
            if operation.renderer is not None:
                os.kill(operation.renderer, signal.SIGKILL)
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
        self, operation: BulkOperation, executor: Executor, roots: Iterator[Node]
    ) -> Iterator[list[str]]:
        """The lines of each root record: its own, then one per item of each nested
        connection with ``__parentId``, after their parent (Shopify's JSONL)."""
        schema = admin_schema()
        node_type = schema.get_type(operation.typename)
        assert isinstance(node_type, GraphQLObjectType)
        dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        for node in roots:
            lines = [dumps(executor.complete(node_type, operation.node_fields, node))]
            for nested in operation.nested:
                child_type = schema.get_type(nested.typename)
                assert isinstance(child_type, GraphQLObjectType)
                for child in children_of(node, nested.field_name, nested.arguments):
                    line = executor.complete(child_type, nested.node_fields, child)
                    line["__parentId"] = node["id"]
                    lines.append(dumps(line))
            yield lines

    def _start_preparing(self, operation: BulkOperation) -> None:
        if self._files is None:
            self._files = Path(tempfile.mkdtemp(prefix="fakeshop-bulk-"))
            # Files of a large store take gigabytes: gone with the simulator.
            weakref.finalize(self, shutil.rmtree, self._files, ignore_errors=True)
        operation.file = self._files / f"{operation.numeric_id}.jsonl"
        operation.ready = threading.Event()
        threading.Thread(
            target=self._prepare, args=(operation,), name="bulk-file", daemon=True
        ).start()

    def _prepare(self, operation: BulkOperation) -> None:
        """Write the operation's file (half the records if it is to fail) in a child process
        at the lowest CPU priority, then mark it ready; FAILED if the child did not finish."""
        assert operation.file is not None
        assert operation.ready is not None
        whole = False
        try:
            with self._lock:
                if operation.status == "CANCELED":
                    return
                # The child only renders the operation's snapshot and writes the file: it takes
                # none of the locks another thread may have held at the fork. (Python 3.12
                # warns of forking a threaded process.)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    child = os.fork()
                if child == 0:
                    self._render_in_child(operation)
                operation.renderer = child
            # Waited for without reaping it: until `renderer` is cleared below, a cancel's
            # kill meets this child (a zombie at worst), never a process that took its pid.
            os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
        except OSError:
            traceback.print_exc()  # no child to write it
        finally:
            with self._lock:
                if operation.renderer is not None:
                    _, status = os.waitpid(operation.renderer, 0)
                    whole = os.waitstatus_to_exitcode(status) == 0
                operation.renderer = None
                if not whole and operation.status != "CANCELED":
                    # As Shopify ends an export it could not write: FAILED, with what was written.
                    operation.fail_with = "INTERNAL_SERVER_ERROR"
            operation.ready.set()

    def _render_in_child(self, operation: BulkOperation) -> NoReturn:
        """The forked child's whole life: write the file, exit 0 if it is whole."""
        assert operation.file is not None
        code = 1
        parent = os.getppid()
        try:
            os.nice(19)
            limit = operation.total // 2 if operation.fail_with else operation.total

            def count(records: int) -> None:
                struct.pack_into("q", operation.rendered, 0, records)
                # A simulator that died (a benchmark stops it with SIGKILL) leaves no renderer
                # behind to take the next run's CPU.
                if records % 256 == 0 and os.getppid() != parent:
                    os._exit(1)

            # Buffered by the file, so what was rendered before a failure is in it.
            with open(operation.file, "wb", buffering=CHUNK_BYTES) as out:
                for line in self.lines(operation, limit, count):
                    out.write(line.encode() + b"\n")
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    def lines(
        self,
        operation: BulkOperation,
        limit: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[str]:
        """Every JSONL line of a finished operation (half the records if it failed).

        Grouped (``groupObjects: true``), a record's children follow it directly. Ungrouped
        (the default from 2026-01), they still come after their parent but not next to it:
        they are held back for a few parents, so a client that assumes adjacency fails here
        rather than against Shopify. ``progress`` hears the number of records rendered."""
        limit = operation.object_count if limit is None else limit
        executor = self._executor(operation)
        held: list[str] = []
        for count, lines in enumerate(self._render(operation, executor, operation.roots())):
            if count >= limit:
                break
            if progress is not None:
                progress(count + 1)
            if operation.group_objects:
                yield from lines
                continue
            yield lines[0]
            held.extend(lines[1:])
            if count % UNGROUPED_PARENTS == UNGROUPED_PARENTS - 1 or len(held) > 1000:
                yield from held
                held = []
        yield from held

    def chunks(self, operation: BulkOperation) -> Iterator[bytes]:
        if operation.file is not None:
            with open(operation.file, "rb") as prepared:
                while chunk := prepared.read(CHUNK_BYTES):
                    yield chunk
            return
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
