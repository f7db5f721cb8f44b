"""Children in backfill results: the rest of a child list a page query cut off, and the
child lines of a bulk result put back under their parent.

A page query asks for the first few children of each record (Shopify prices every child it
might return, and one query may cost at most 1,000 points). A record with more is completed
here, by asking for that record's remaining children by its id, page after page, before the
page is written: the writer then sees whole lists and may tombstone what they no longer name.

A bulk result has each child of a connection on its own line after its parent, naming the
parent in `__parentId` (lists are inlined in the parent's line). Asked with `groupObjects`,
a parent's children follow it before the next parent, so one parent at a time is held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfill.client import AdminClient
from handlers.children import ChildSet

SINGLE_QUERY_LIMIT = 1000
MAX_PAGE = 250
# The node lookup (1) and the connection with its pageInfo (3).
_OVERFLOW_OVERHEAD = 4


def _overflow_first(child: ChildSet) -> int:
    return max(1, min(MAX_PAGE, (SINGLE_QUERY_LIMIT - _OVERFLOW_OVERHEAD) // child.item_cost))


def overflow_query(parent_typename: str, child: ChildSet) -> tuple[str, int]:
    """The document that reads one record's children past a cursor, and its cost."""
    first = _overflow_first(child)
    document = (
        "query Children($id: ID!, $after: String) {\n"
        f"  node(id: $id) {{ ... on {parent_typename} {{"
        f"{child.selection(first=first, after='$after')}"
        " } }\n}\n"
    )
    return document, 1 + child.cost(first)


def _items(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.get("nodes") or [])
    return list(value) if isinstance(value, list) else []


async def complete_children(
    client: AdminClient,
    parent_typename: str,
    children: Sequence[ChildSet],
    nodes: Sequence[dict[str, Any]],
) -> int:
    """Fill in, in place, every child list of these nodes that the page cut short, and their
    own children's. Returns the queries it took (0 for a page of records with few children)."""
    queries = 0
    for node in nodes:
        for child in children:
            if not child.node_key or child.node_key not in node:
                continue
            queries += await _complete_one(client, parent_typename, child, node)
            if child.children:
                queries += await complete_children(
                    client, child.typename, child.children, _items(node[child.node_key])
                )
    return queries


async def _complete_one(
    client: AdminClient, parent_typename: str, child: ChildSet, node: dict[str, Any]
) -> int:
    value = node[child.node_key]
    queries = 0
    if child.connection:
        if not isinstance(value, dict):
            return 0
        page = value.get("pageInfo") or {}
        document, cost = overflow_query(parent_typename, child)
        # No cursor yet with a next page: read from the start (what a bulk result lacked).
        while page.get("hasNextPage") and (page.get("endCursor") or not value.get("nodes")):
            data = await client.execute(
                document, {"id": node["id"], "after": page.get("endCursor")}, cost=cost
            )
            more = ((data.get("node") or {}).get(child.node_key)) or {}
            value.setdefault("nodes", []).extend(more.get("nodes") or [])
            page = more.get("pageInfo") or {"hasNextPage": False}
            value["pageInfo"] = page
            queries += 1
        return queries
    # A plain list has no cursor: a full one is asked again with room for more.
    if isinstance(value, list) and child.first and len(value) >= child.first:
        first = _overflow_first(child)
        document = (
            "query Children($id: ID!) {\n"
            f"  node(id: $id) {{ ... on {parent_typename} {{{child.selection(first=first)} }} }}\n"
            "}\n"
        )
        data = await client.execute(document, {"id": node["id"]}, cost=1 + child.cost(first))
        fetched = (data.get("node") or {}).get(child.node_key)
        if isinstance(fetched, list):
            # Shaped as a connection, so the writer knows whether this one is whole: still
            # full at `first`, it tombstones nothing.
            node[child.node_key] = {
                "nodes": fetched,
                "pageInfo": {"hasNextPage": len(fetched) >= first},
            }
        queries += 1
    return queries


async def fill_bulk_gaps(
    client: AdminClient, children: Sequence[ChildSet], nodes: Sequence[dict[str, Any]]
) -> int:
    """A bulk query may not hold a connection inside a plain list (an order's refunds' line
    items), so a bulk result lacks them: read them here for the records that have such
    children (few orders have refunds), so bulk and page backfills write the same rows.

    The items lacking a connection are read together, as many per `nodes(ids:)` query as the
    single-query limit allows, each asking for as many children as a page query does; only an
    item with more pages is then read on its own. One query per item, each sized for the most
    children one could have, cost about 970 requested points apiece and made a bulk backfill
    of a store with refunds wait on the rate limit for minutes."""
    queries = 0
    for child in children:
        if not child.node_key or child.connection:
            continue
        for grandchild in child.queried_children:
            if not grandchild.connection:
                continue
            lacking = [
                item
                for node in nodes
                for item in _items(node.get(child.node_key))
                if isinstance(item, dict) and item.get("id") and grandchild.node_key not in item
            ]
            queries += await _read_connections(client, child.typename, grandchild, lacking)
    return queries


async def _read_connections(
    client: AdminClient, typename: str, child: ChildSet, items: list[dict[str, Any]]
) -> int:
    """Set `child`'s connection on each of `items` (records of `typename`), read in batches:
    first as many children each as a page query asks for; the items with more are read again,
    still in batches, with room for `_WIDER` times as many; only an item with more still is
    then read on its own, page by page. In the simulator's store about one refund in nine has
    more line items than the first read asks for: reading each of those on its own took two
    of every three of a bulk backfill's Admin API requests."""
    queries = 0
    pending = items
    for first in dict.fromkeys((child.first, min(child.first * _WIDER, _overflow_first(child)))):
        if not pending:
            break
        queries += await _read_batches(client, typename, child, pending, first)
        pending = [item for item in pending if _has_more(item.get(child.node_key))]
    for item in pending:
        queries += await _complete_one(client, typename, child, item)
    return queries


# How many times a page query's `first` the second batched read of a connection asks for.
_WIDER = 4
# `nodes(ids:)` queries of one batch sent at once. Each waits on Shopify's answer (a round
# trip of tens to hundreds of milliseconds), and the reads of a bulk batch are on the path
# from its download to its write; the bucket, not this, bounds them on a small plan.
READS_IN_FLIGHT = 4


def _has_more(value: Any) -> bool:
    return isinstance(value, dict) and bool((value.get("pageInfo") or {}).get("hasNextPage"))


async def _read_batches(
    client: AdminClient, typename: str, child: ChildSet, items: list[dict[str, Any]], first: int
) -> int:
    """Set `child`'s connection on each of `items` from its start, `first` children each, as
    many items per `nodes(ids:)` query as the single-query limit allows, up to
    `READS_IN_FLIGHT` queries at once as the rate limit's bucket has room for them (the
    client holds each query's points until it answers). An item whose node is gone keeps
    what it had (absent when it had nothing)."""
    per_item = 1 + child.cost(first)
    size = max(1, min(MAX_PAGE, (SINGLE_QUERY_LIMIT - 1) // per_item))
    document = (
        "query ChildrenOf($ids: [ID!]!) {\n"
        f"  nodes(ids: $ids) {{ ... on {typename} {{ id{child.selection(first=first)} }} }}\n"
        "}\n"
    )
    slots = asyncio.Semaphore(READS_IN_FLIGHT)

    async def read(chunk: list[dict[str, Any]]) -> None:
        async with slots:
            data = await client.execute(
                document, {"ids": [item["id"] for item in chunk]}, cost=1 + per_item * len(chunk)
            )
        found = {
            node["id"]: node.get(child.node_key)
            for node in data.get("nodes") or []
            if isinstance(node, dict) and node.get("id")
        }
        for item in chunk:
            value = found.get(item["id"])
            if isinstance(value, dict):
                item[child.node_key] = value

    reads = [
        asyncio.create_task(read(items[start : start + size]))
        for start in range(0, len(items), size)
    ]
    try:
        await asyncio.gather(*reads)
    finally:
        # The first failure is raised; the reads still waiting are not left running.
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    return len(reads)


@dataclass
class BulkGroup:
    """One parent line of a bulk result with the child lines that followed it."""

    node: dict[str, Any]
    # gid -> the object holding that gid's children (the parent and every child seen).
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_line: int = 0
    # The parent's own line: the group is lines first_line..last_line of the result.
    first_line: int = 0


class BulkGrouper:
    """Feeds bulk result lines in order; yields each parent with its children once the next
    parent starts (and the last one at `finish`). Children are put where a page query would
    have them: a connection's nodes under `{"nodes": [...], "pageInfo": {"hasNextPage":
    false}}`, so the writer reads one shape; a connection no line filled is an empty, complete
    list (a bulk result leaves nothing out)."""

    def __init__(self, children: Sequence[ChildSet]) -> None:
        self.children = tuple(children)
        # Several sets may share a type (a metafield per namespace): their `selector` tells
        # a line's set.
        self._by_typename: dict[str, list[ChildSet]] = {}
        pending = list(children)
        while pending:
            child = pending.pop()
            if child.node_key:
                self._by_typename.setdefault(child.typename, []).append(child)
            pending.extend(child.children)
        # A type only one set takes, and takes whole, needs no `accepts` per line.
        self._only: dict[str, ChildSet] = {
            typename: sets[0]
            for typename, sets in self._by_typename.items()
            if len(sets) == 1 and not sets[0].selector
        }
        self._current: BulkGroup | None = None

    def feed(self, line: dict[str, Any], line_number: int) -> Iterator[BulkGroup]:
        parent_id = line.pop("__parentId", None)
        if parent_id is None:
            if self._current is not None:
                yield self._current
            self._current = self._start(line, line_number)
            return
        group = self._current
        if group is None or parent_id not in group.by_id:
            raise ValueError(
                f"bulk line {line_number} names parent {parent_id} that did not come before it"
                " (was the operation run without groupObjects?)"
            )
        typename = _typename(line.get("id"))
        child = self._only.get(typename) or next(
            (child for child in self._by_typename.get(typename, ()) if child.accepts(line)), None
        )
        if child is None:
            raise ValueError(f"bulk line {line_number}: unexpected child type {typename!r}")
        holder = group.by_id[parent_id]
        if child.node_key not in holder:  # (setdefault would build an empty slot per line)
            holder[child.node_key] = _empty(child)
        _items_of(holder[child.node_key]).append(line)
        self._index(group, line, child.children)
        group.last_line = line_number

    def finish(self) -> Iterator[BulkGroup]:
        if self._current is not None:
            yield self._current
        self._current = None

    def _start(self, line: dict[str, Any], line_number: int) -> BulkGroup:
        group = BulkGroup(node=line, last_line=line_number, first_line=line_number)
        self._index(group, line, self.children)
        return group

    def _index(
        self,
        group: BulkGroup,
        obj: dict[str, Any],
        children: Sequence[ChildSet],
        *,
        in_list: bool = False,
    ) -> None:
        """Register `obj` (and the children inlined in it) as a parent later lines may name.
        A connection the query selected and no line filled is empty; one inside a plain list
        was not selected (bulk cannot) and stays absent, for `fill_bulk_gaps` to read."""
        if isinstance(obj.get("id"), str):
            group.by_id[obj["id"]] = obj
        for child in children:
            if not child.node_key:
                continue
            if child.connection:
                if not in_list:
                    obj.setdefault(child.node_key, _empty(child))
            else:
                for item in obj.get(child.node_key) or []:
                    if isinstance(item, dict):
                        self._index(group, item, child.children, in_list=True)


def _empty(child: ChildSet) -> Any:
    return {"nodes": [], "pageInfo": {"hasNextPage": False}} if child.connection else []


def _items_of(slot: Any) -> list[Any]:
    if isinstance(slot, dict):
        nodes: list[Any] = slot.setdefault("nodes", [])
        return nodes
    if isinstance(slot, list):
        return slot
    raise ValueError("bulk child slot is neither a connection nor a list")


def _typename(gid: Any) -> str:
    if isinstance(gid, str) and gid.startswith("gid://shopify/"):
        return gid.removeprefix("gid://shopify/").split("/", 1)[0]
    return ""
