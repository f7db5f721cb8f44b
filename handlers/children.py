"""Rows that belong to one parent record, written with it.

A parent's payload (a webhook's REST body or a backfill's GraphQL node) carries its children:
an order its line items, refunds and fulfillments, a product its variants, a customer its
addresses. They are written in the parent's transaction and only when the parent's order-safe
write applied, so an older payload never rewrites newer children. A child missing from a list
known to be complete is tombstoned (a removed variant, a deleted address); a list that may be
cut short (a connection with a next page) tombstones nothing, unless the payload names every
child apart from the records it gives (a product's `variant_gids` beside its cut `variants`):
then only children absent from those ids are tombstoned, and the parent is recorded in
`child_refetches` for the refetch job to read whole.

Some topics carry one child as their whole body (`refunds/create`, `fulfillments/update`):
`write_child_body` writes it under the parent its body names, tombstoning no sibling.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Table,
    and_,
    any_,
    bindparam,
    func,
    literal_column,
    null,
    or_,
    select,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.normalize import PayloadError, Record, parse_shopify_id
from handlers.records import RowModel, upsert_applied, upsert_records
from models import Base, ChildRefetch, ShopRecord, utcnow
from models.driver import fetch
from models.tenancy import of_store, store_row
from models.upsert import insert_on_conflict

log = logging.getLogger("shopify_receiver.handlers")

# Bind parameters per tombstone statement: far under SQLite's 32,766 and asyncpg's 32,767.
_MAX_IDS_PER_STATEMENT = 5000
# How many time terms a tombstoning statement has (padded up to the next): few shapes to compile.
_TERM_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 200)
# A list without a time (a body without updated_at) removes whatever it does not name.
_NO_TIME_LIMIT = datetime(9999, 12, 31, tzinfo=UTC)

ChildNormalizer = Callable[[Any, Mapping[str, Any], bool], Record]
"""(child object, its parent's payload, graphql?) -> the child's record."""


@dataclass(frozen=True)
class ChildList:
    """A parent's children as one payload gave them; `complete` when nothing was cut off.

    `existing`, when the payload says so apart from the records, is every child id the parent
    has: the records may be fewer (cut off), but no child outside these ids still exists."""

    records: list[Record]
    complete: bool
    existing: frozenset[int] | None = None
    # The parent's `updated_at` in the payload: a child created after it is not in the list
    # because the payload predates it (a refund whose refunds/create came first), not because
    # it is gone, so it is not tombstoned.
    as_of: datetime | None = None

    def as_of_time(self, as_of: datetime | None) -> ChildList:
        """This list as a payload of that time gave it (dataclasses.replace, at a tenth of
        its cost: it runs for every parent of a backfill batch)."""
        return ChildList(self.records, self.complete, self.existing, as_of)

    def given(self, key: str) -> set[Any]:
        return {record[key] for record in self.records}

    def missing(self, key: str) -> frozenset[int]:
        """Children that exist but whose records this payload did not carry."""
        if self.existing is None:
            return frozenset()
        return self.existing - self.given(key)


@dataclass(frozen=True)
class ChildSet:
    """One kind of child of a resource: its table, where parent payloads carry it, how it
    reads, and what of it is personal data."""

    model: RowModel
    # The column naming the parent (`order_shopify_id`), and the one naming the resource's
    # record when the parent is itself a child (a refund line item's order).
    parent_key: str
    rest_key: str
    # Empty: GraphQL does not carry this list on this parent (it is read elsewhere).
    node_key: str
    normalize: ChildNormalizer
    # The GraphQL selection of one child, and how the parent's field is shaped: a connection
    # (`nodes` + `pageInfo`) or a plain list; `first` is how many one parent query asks for.
    node_fields: str = ""
    connection: bool = False
    first: int = 0
    # The child's GraphQL type (`... on <typename>` when paging its own children, and what a
    # bulk result line's gid says it is), and the objects one child node costs (each object
    # 1, scalars 0, its own children not included).
    typename: str = ""
    node_cost: int = 1
    # A REST body that carries this many children may have been cut off by Shopify.
    rest_limit: int | None = None
    owner_key: str | None = None
    personal_fields: tuple[str, ...] = ()
    # The whole child describes a person (an address): customers/redact keeps only its id in
    # `raw`. Otherwise `raw` is scrubbed of personal keys and the row's other facts stay.
    wholly_personal: bool = False
    children: tuple[ChildSet, ...] = ()
    # The column telling one child from its siblings (a level's location).
    child_key: str = "shopify_id"
    # False when a parent's list is only some of the rows of this table under that parent
    # (a refund's transactions are some of its order's): such lists never tombstone.
    whole_lists: bool = True
    # REST: the parent's key listing every child's gid (`variant_gids`), even when
    # `rest_key`'s list was cut short.
    rest_ids_key: str | None = None
    # Rows that never change once made (transactions, refunds): written from any version of
    # the parent, an older one too (whose list then removes nothing).
    append_only: bool = False
    # Columns elsewhere naming one of these by id (table, column), which Shopify reads null
    # once it is deleted (a line item's variant): nulled when the child is tombstoned.
    referenced_as: tuple[tuple[str, str], ...] = ()
    # The QueryRoot connection that lists this kind of child across the store
    # (`productVariants`), and the child's field naming its parent there (`product`): reconcile
    # compares such children on their own, by counts and updated_at windows. Empty: none.
    root_field: str = ""
    root_parent: str = ""
    # Topics whose body is one child, the body's key naming its parent (`order_id`), and the
    # keys such a body must have to be one (dispatch's body checks).
    topics: tuple[str, ...] = ()
    rest_parent_key: str = ""
    body_keys: tuple[str, ...] = ()
    # When `node_key` is an alias: the GraphQL field it names, and arguments beside `first`
    # (`metafields(namespace: "x")`, one set per namespace).
    field_name: str = ""
    arguments: str = ""
    # (payload key, value) pairs an item must have to be one of this set (REST and GraphQL
    # spell them alike): items of a shared list that differ belong to another set.
    selector: tuple[tuple[str, Any], ...] = ()
    # Columns every row of this set has; its tombstones touch only rows with these values,
    # so sets sharing a table and parent column (metafields) never tombstone each other.
    fixed: tuple[tuple[str, Any], ...] = ()

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    def accepts(self, item: Any) -> bool:
        """Whether a child object of the payload belongs to this set (see `selector`)."""
        return not self.selector or (
            isinstance(item, Mapping)
            and all(item.get(key) == value for key, value in self.selector)
        )

    def item_fields(self, *, bulk: bool = False) -> str:
        """One child's selection with its own children's. A bulk query may not hold a
        connection inside a plain list (Shopify refuses it), so a list's connections are
        left out there: those grandchildren come from page queries and webhooks."""
        nested = "".join(
            child.selection(bulk=bulk)
            for child in self.queried_children
            if not (bulk and child.connection and not self.connection)
        )
        return f"{self.node_fields}{nested}"

    def selection(
        self, *, bulk: bool = False, first: int | None = None, after: str | None = None
    ) -> str:
        """This child's field inside its parent's selection. A page query asks for `first`
        (a connection with the cursor to page the rest); a bulk query asks for everything (a
        connection as edges, whose nodes come back as their own lines)."""
        fields = self.item_fields(bulk=bulk)
        head = f"{self.node_key}: {self.field_name}" if self.field_name else self.node_key
        extra = f", {self.arguments}" if self.arguments else ""
        if bulk:
            head += f"({self.arguments})" if self.arguments else ""
            if self.connection:
                return f"\n      {head} {{ edges {{ node {{{fields} }} }} }}"
            return f"\n      {head} {{{fields} }}"
        count = first or self.first
        if self.connection:
            cursor = f", after: {after}" if after else ""
            return (
                f"\n      {head}(first: {count}{cursor}{extra}) {{ nodes {{{fields} }}"
                " pageInfo { hasNextPage endCursor } }"
            )
        return f"\n      {head}(first: {count}{extra}) {{{fields} }}"

    @property
    def queried_children(self) -> tuple[ChildSet, ...]:
        """Its children that GraphQL carries on it (a refund's transactions it does not)."""
        return tuple(child for child in self.children if child.node_key)

    @property
    def item_cost(self) -> int:
        """Requested points of one child with everything it selects."""
        return self.node_cost + sum(child.cost() for child in self.queried_children)

    def cost(self, first: int | None = None) -> int:
        """Requested points of this field in one parent: a connection costs 2 and its
        pageInfo 1 beside `first` items. Shopify does not say how it prices a plain list with
        `first`; counting it as `first` items is the safe side (a page sized on it fits)."""
        count = first or self.first
        return (3 if self.connection else 0) + count * self.item_cost

    def listed(self, payload: Mapping[str, Any], *, graphql: bool) -> tuple[list[Any], bool] | None:
        """The child objects of this set in a parent's payload, and whether the list is whole
        (`read` without normalising them), or None when the payload does not carry them."""
        key = self.node_key if graphql else self.rest_key
        if not key or key not in payload:
            return None
        value = payload[key]
        complete = self.whole_lists
        if value is None:
            items: list[Any] = []
        elif graphql and (self.connection or isinstance(value, Mapping)):
            # A plain list completed by the backfill comes back shaped as a connection.
            if not isinstance(value, Mapping):
                raise PayloadError(f"{key}: expected a connection")
            items = _connection_nodes(value, key)
            page = value.get("pageInfo")
            # Without pageInfo nobody can say the list is whole.
            complete = isinstance(page, Mapping) and page.get("hasNextPage") is False
        elif isinstance(value, list):
            items = value
            if graphql and self.first and len(items) >= self.first:
                complete = False
            if not graphql and self.rest_limit and len(items) >= self.rest_limit:
                complete = False
        else:
            raise PayloadError(f"{key}: expected a list, got {type(value).__name__}")
        return [item for item in items if self.accepts(item)], complete

    def read(
        self, payload: Mapping[str, Any], parent_id: int, *, graphql: bool
    ) -> ChildList | None:
        """The children in a parent's payload, or None when the payload does not carry them
        (absent is not null: nothing is written or tombstoned then)."""
        found = self.listed(payload, graphql=graphql)
        if found is None:
            return None
        items, complete = found
        records = []
        for item in items:
            # A normaliser's record is its own (made for this call): completed in place.
            record = self.normalize(item, payload, graphql)
            record[self.parent_key] = parent_id
            record.update(self.fixed)
            records.append(record)
        existing = None
        if not graphql and self.rest_ids_key and self.rest_ids_key in payload:
            existing = _listed_ids(payload[self.rest_ids_key], self.rest_ids_key)
            if complete and not {record[self.child_key] for record in records} >= existing:
                complete = False
        return ChildList(records, complete, existing)


def _listed_ids(value: Any, key: str) -> frozenset[int]:
    """Ids from a list of gids, or of objects carrying one (`[{"admin_graphql_api_id": ..}]`)."""
    if not isinstance(value, list):
        raise PayloadError(f"{key}: expected a list, got {type(value).__name__}")
    ids = set()
    for entry in value:
        gid = (
            entry.get("admin_graphql_api_id", entry.get("id"))
            if isinstance(entry, Mapping)
            else entry
        )
        ids.add(parse_shopify_id(gid, f"{key}[].admin_graphql_api_id"))
    return frozenset(ids)


async def _request_refetch(
    session: AsyncSession,
    tenant_id: int,
    child: ChildSet,
    missing: Mapping[int, frozenset[int]],
) -> None:
    """Record, in the writer's transaction, the parents whose payload cut these children off:
    they exist but were not given, so they are neither written nor tombstoned here, and the
    refetch job (backfill.refetch) reads those parents whole."""
    log.info(
        "children.truncated tenant=%s table=%s parents=%s missing=%s",
        tenant_id,
        child.table,
        sorted(missing),
        sum(len(ids) for ids in missing.values()),
        extra={"tenant_id": tenant_id, "table": child.table, "parents": sorted(missing)},
    )
    now = utcnow()
    statement = insert_on_conflict(session, ChildRefetch)
    statement = statement.on_conflict_do_update(
        index_elements=["tenant_id", "child_table", "parent_shopify_id"],
        set_={"requested_at": statement.excluded.requested_at},
    )
    await session.execute(
        statement,
        [
            {
                "tenant_id": tenant_id,
                "child_table": child.table,
                "parent_shopify_id": parent,
                "requested_at": now,
            }
            for parent in sorted(missing)
        ],
    )


def _connection_nodes(connection: Mapping[str, Any], key: str) -> list[Any]:
    if "nodes" in connection:
        nodes = connection["nodes"]
    else:
        nodes = [
            edge.get("node") for edge in connection.get("edges") or [] if isinstance(edge, Mapping)
        ]
    if not isinstance(nodes, list):
        raise PayloadError(f"{key}.nodes: expected a list")
    return nodes


async def write_children(
    session: AsyncSession,
    child: ChildSet,
    tenant_id: int,
    lists: Mapping[int, ChildList],
    *,
    source: str,
    extra: Mapping[int, Record] | None = None,
    tombstones: Tombstones | None = None,
) -> int:
    """Upsert the children of these parents and tombstone, for each complete list, the
    parent's stored children it no longer names (on PostgreSQL, added to `tombstones` when
    given, for the caller to write). `extra[parent]` adds columns to each of a parent's
    children (a refund line item's order). Returns the children written."""
    records: list[Record] = []
    for parent_id, listed in lists.items():
        added = extra.get(parent_id) if extra else None
        if added:
            records.extend(record | added for record in listed.records)
        else:
            records.extend(listed.records)
    written = await upsert_records(session, child.model, tenant_id, records, source=source)
    bounded = {
        parent: listed
        for parent, listed in lists.items()
        if listed.complete or listed.existing is not None
    }
    await _tombstone_missing(
        session, child, tenant_id, bounded, source=source, tombstones=tombstones
    )
    missing = {
        parent: listed.missing(child.child_key)
        for parent, listed in lists.items()
        if listed.missing(child.child_key)
    }
    if missing:
        await _request_refetch(session, tenant_id, child, missing)
    for grandchild in child.children:
        nested: dict[int, ChildList] = {}
        owners: dict[int, Record] = {}
        for record in records:
            found = grandchild.read(record["raw"], record["shopify_id"], graphql=_is_node(record))
            if found is not None:
                nested[record["shopify_id"]] = found.as_of_time(record.get("shopify_updated_at"))
                if grandchild.owner_key and child.parent_key in record:
                    owners[record["shopify_id"]] = {grandchild.owner_key: record[child.parent_key]}
        if nested:
            written += await write_children(
                session,
                grandchild,
                tenant_id,
                nested,
                source=source,
                extra=owners,
                tombstones=tombstones,
            )
    return written


def _is_node(record: Record) -> bool:
    return str(record["raw"].get("id", "")).startswith("gid://")


async def _tombstone_missing(
    session: AsyncSession,
    child: ChildSet,
    tenant_id: int,
    lists: Mapping[int, ChildList],
    *,
    source: str,
    tombstones: Tombstones | None = None,
) -> None:
    if not lists:
        return
    held = tombstones if tombstones is not None else Tombstones()
    if child.child_key == "shopify_id" and session.get_bind().dialect.name == "postgresql":
        held.add(child, tenant_id, lists, source=source)
    else:
        # Held like the others, so that every backend leaves the same rows.
        held.defer(partial(_tombstone_by_terms, child, tenant_id, dict(lists), source))
    if tombstones is None:
        await held.write(session)


async def _tombstone_by_terms(
    child: ChildSet,
    tenant_id: int,
    lists: Mapping[int, ChildList],
    source: str,
    session: AsyncSession,
) -> None:
    """`_tombstone_missing` by one statement per batch of parents, a term per list time
    (SQLite, and children keyed by other than their own id)."""
    table = cast(Table, child.model.__table__)
    parent_column = table.c[child.parent_key]
    now = utcnow()
    # Ids are unique per store and a child has one parent, so "not among any of these
    # parents' listed children" is "not among its own parent's". A key that is not an id (a
    # level's location, shared by every item stocked there) is compared parent by parent.
    unique = child.child_key == "shopify_id"
    # A batch's parents each add a term to one OR (by the time of their list): SQLite's
    # expression tree stops at a depth of 1,000, so a statement holds at most 200 parents.
    batches = (
        [
            batch[start : start + 200]
            for batch in _batches(lists)
            for start in range(0, len(batch), 200)
        ]
        if unique
        else [[parent] for parent in lists]
    )
    created = table.c.shopify_created_at
    for batch in batches:
        kept = sorted({key for parent in batch for key in _kept(lists[parent], child.child_key)})
        by_time: dict[datetime, list[int]] = {}
        for parent in batch:
            by_time.setdefault(lists[parent].as_of or _NO_TIME_LIMIT, []).append(parent)
        # One term per distinct time, padded to a few fixed counts: the statement's shape is
        # then one of a handful, so SQLAlchemy compiles each once. A term count per batch (up
        # to 200) made a new shape, hence a cached compilation of 200 clauses, almost every
        # batch: a bulk backfill's memory grew with the store (1.40x from 100k to 1M orders).
        terms = list(by_time.items())
        width = next(size for size in _TERM_COUNTS if size >= len(terms))
        terms += [(_NO_TIME_LIMIT, [])] * (width - len(terms))
        scopes: list[ColumnElement[bool]] = [
            and_(parent_column.in_(parents), or_(created.is_(None), created <= as_of))
            for as_of, parents in terms
        ]
        statement = (
            update(table)
            .where(
                of_store(table.c.tenant_id, tenant_id),
                parent_column.in_(batch),
                or_(*scopes),
                table.c.deleted_at.is_(None),
                table.c[child.child_key].not_in(kept),
                *(table.c[column] == value for column, value in child.fixed),
            )
            .values(deleted_at=now, synced_at=now, source=source)
            .execution_options(synchronize_session=False)
        )
        await session.execute(statement)
        if child.referenced_as:
            gone = select(table.c.shopify_id).where(
                of_store(table.c.tenant_id, tenant_id),
                parent_column.in_(batch),
                table.c.deleted_at == now,
            )
            await forget_references(session, child.referenced_as, tenant_id, gone)


class Tombstones:
    """The tombstones of one batch's child lists, held until its writes are done. On
    PostgreSQL, those of children keyed by their own id are then sent together: one
    statement of data-modifying WITHs for every child table (each round trip costs a webhook
    batch about a millisecond under load); the others follow one by one.

    Tombstoning after every write of the batch marks the same children as tombstoning after
    each table's (a table's tombstone keeps every child its lists name, and no later write
    of the batch adds to that table). What changes is a name: a line item written later in
    the batch that names a variant a product update of the batch dropped reads null, as
    Shopify's own answers do from then on. Two tombstones that touch one table (a table and
    the one whose names of it they null, or two batches of one table) go in separate
    statements: PostgreSQL applies only one of two updates of a row within one statement."""

    def __init__(self) -> None:
        self._pending: list[tuple[ChildSet, dict[str, Any]]] = []
        self._deferred: list[Callable[[AsyncSession], Awaitable[None]]] = []

    def defer(self, write: Callable[[AsyncSession], Awaitable[None]]) -> None:
        """A tombstone written on its own, after the combined ones."""
        self._deferred.append(write)

    def add(
        self, child: ChildSet, tenant_id: int, lists: Mapping[int, ChildList], *, source: str
    ) -> None:
        now = utcnow()
        for batch in _batches(lists):
            kept = sorted(
                {key for parent in batch for key in _kept(lists[parent], child.child_key)}
            )
            parameters = {
                "tenant": tenant_id,
                "parents": batch,
                "times": [lists[parent].as_of or _NO_TIME_LIMIT for parent in batch],
                "kept": kept,
                "at": now,
                "by": source,
            }
            self._pending.append((child, parameters))

    async def write(self, session: AsyncSession) -> None:
        pending, self._pending = self._pending, []
        group: list[tuple[ChildSet, dict[str, Any]]] = []
        touched: set[str] = set()
        for child, parameters in pending:
            tables = _touched_tables(child)
            if touched & tables:
                await _write_tombstones(session, group)
                group, touched = [], set()
            group.append((child, parameters))
            touched |= tables
        if group:
            await _write_tombstones(session, group)
        deferred, self._deferred = self._deferred, []
        for write in deferred:
            await write(session)


def _touched_tables(child: ChildSet) -> set[str]:
    return {child.table, *(table_name for table_name, _ in child.referenced_as)}


async def _write_tombstones(
    session: AsyncSession, group: Sequence[tuple[ChildSet, dict[str, Any]]]
) -> None:
    statement = _tombstones_statement([child for child, _ in group])
    parameters = {
        f"{name}_{index}": value
        for index, (_, given) in enumerate(group)
        for name, value in given.items()
    }
    await fetch(session, statement, parameters)


_TOMBSTONE_STATEMENTS: dict[tuple[tuple[str, tuple[tuple[str, Any], ...]], ...], Any] = {}
# A shape is a combination of child sets one batch met: a handful per resource, yet their
# number is not bounded by the registry alone, so the cache empties itself as models.driver's.
_MAX_TOMBSTONE_STATEMENTS = 500


def _tombstones_statement(children: Sequence[ChildSet]) -> Any:
    """PostgreSQL: the tombstones of these child sets (by table and fixed columns), each for
    any number of parents, their list times and kept ids given as arrays (`unnest`), built
    once per shape. Building the OR of per-time terms (padded to 200) for every batch cost a
    bulk backfill more CPU than writing its rows."""
    shape = tuple((child.table, child.fixed) for child in children)
    statement = _TOMBSTONE_STATEMENTS.get(shape)
    if statement is None:
        ctes = [
            cte for index, child in enumerate(children) for cte in _tombstone_ctes(child, index)
        ]
        statement = select(func.count()).select_from(ctes[-1]).add_cte(*ctes[:-1])
        if len(_TOMBSTONE_STATEMENTS) >= _MAX_TOMBSTONE_STATEMENTS:
            _TOMBSTONE_STATEMENTS.clear()
        _TOMBSTONE_STATEMENTS[shape] = statement
    return statement


def _tombstone_ctes(child: ChildSet, index: int) -> list[Any]:
    """One child set's tombstone as data-modifying WITHs, its parameters suffixed `_index`:
    the UPDATE, and (for a child other rows name) the UPDATEs nulling those names."""

    def parameter(name: str, type_: Any = None) -> Any:
        return bindparam(f"{name}_{index}", type_=type_)

    table = cast(Table, child.model.__table__)
    listed = (
        func.unnest(
            parameter("parents", ARRAY(BigInteger())),
            parameter("times", ARRAY(DateTime(timezone=True))),
        )
        .table_valued(
            sql_column("parent", BigInteger()), sql_column("as_of", DateTime(timezone=True))
        )
        .render_derived(name=f"listed_{index}")
    )
    tenant = parameter("tenant")
    store = store_row(tenant)
    # Each listed parent's live children, found by the (tenant, parent) index one parent at a
    # time: the OFFSET keeps the subquery apart, so PostgreSQL runs it per parent. Joined as
    # one set, the planner scanned every child of the store for each batch: 130-280 ms a batch
    # of 1,000 orders near the end of a 50,000-order backfill, growing with the store.
    of_parent = table.alias(f"of_parent_{index}")
    found = (
        select(of_parent.c.id, of_parent.c[child.child_key], of_parent.c.shopify_created_at)
        .where(
            of_parent.c.tenant_id == store.c.id,
            of_parent.c[child.parent_key] == listed.c.parent,
            of_parent.c.deleted_at.is_(None),
            *(of_parent.c[column] == value for column, value in child.fixed),
        )
        .offset(literal_column("0"))
        .lateral(f"found_{index}")
    )
    created = found.c.shopify_created_at
    doomed = (
        select(found.c.id)
        .select_from(listed.join(store, literal_column("true")).join(found, literal_column("true")))
        .where(
            or_(created.is_(None), created <= listed.c.as_of),
            # NOT IN a subquery, not `<> ALL(array)`: PostgreSQL hashes the subquery's ids,
            # where a prepared statement's generic plan compares each candidate with every
            # kept id (about 100 ms for 5,000 by 5,000, against 5 ms).
            found.c[child.child_key].not_in(
                select(func.unnest(parameter("kept", ARRAY(BigInteger()))))
            ),
        )
    )
    gone = (
        update(table)
        .where(
            # An array computed first, then the rows by their primary key: nothing to read
            # when nothing is doomed, the usual case. No condition on the store here (the ids
            # are of its rows): with one, a planner that believed the store small read its
            # every row by that condition alone rather than look the ids up.
            table.c.id == any_(func.array(doomed.scalar_subquery())),
            table.c.deleted_at.is_(None),
        )
        .values(deleted_at=parameter("at"), synced_at=parameter("at"), source=parameter("by"))
        .returning(table.c.shopify_id)
        .cte(f"gone_{index}")
    )
    # The columns naming a child it tombstones are nulled by the same statement: one round
    # trip, where a second UPDATE cost a webhook batch about a tenth of its CPU.
    forgets = [
        _forgetting(table_name, column_name, tenant, select(gone.c.shopify_id))
        .returning(literal_column("1"))
        .cte(f"forget_{index}_{n}")
        for n, (table_name, column_name) in enumerate(child.referenced_as)
    ]
    return [gone, *forgets]


async def forget_references(
    session: AsyncSession,
    references: Sequence[tuple[str, str]],
    tenant_id: int,
    ids: Any,
) -> None:
    """Null the columns that name a deleted record (`ids`: a select of its ids), as
    Shopify's own answers do from then on, though it sends no update for them."""
    for table_name, column_name in references:
        await session.execute(
            _forgetting(table_name, column_name, tenant_id, ids).execution_options(
                synchronize_session=False
            )
        )


def _forgetting(table_name: str, column_name: str, tenant: Any, ids: Any) -> Any:
    """UPDATE nulling `table_name.column_name` where it names one of `ids` (a list or a
    select), in store `tenant` (a value or a bound parameter)."""
    table = _table(table_name)
    return (
        update(table)
        .where(of_store(table.c.tenant_id, tenant), table.c[column_name].in_(ids))
        .values({column_name: null()})
    )


def _table(name: str) -> Table:
    return Base.metadata.tables[name]


def _kept(listed: ChildList, key: str) -> set[Any]:
    """The children of a parent that must stay: all given and, for a cut list, all named."""
    return listed.given(key) | (listed.existing or set())


def _batches(lists: Mapping[int, ChildList]) -> Iterable[list[int]]:
    batch: list[int] = []
    size = 0
    for parent, listed in lists.items():
        count = len(listed.records) + len(listed.existing or ()) + 3
        if batch and size + count > _MAX_IDS_PER_STATEMENT:
            yield batch
            batch, size = [], 0
        batch.append(parent)
        size += count
    if batch:
        yield batch


@dataclass(frozen=True)
class ReadRecords:
    """Parent payloads read into records, with each parent's children lists as its payload
    gives them: everything `write_with_children` computes before touching the database, so a
    caller may prepare one batch while the previous one is written (the bulk backfill)."""

    # By id, the newest record of each parent given, with its payload.
    chosen: dict[int, tuple[Record, Mapping[str, Any]]]
    # Per child set (by position), per parent: its list, None when the payload has none, or
    # the PayloadError reading it raised (raised when, and only if, the list is written).
    lists: tuple[dict[int, ChildList | PayloadError | None], ...]


def read_with_children(
    children: Sequence[ChildSet],
    normalize: Callable[[Any], Record],
    payloads: Iterable[Mapping[str, Any]],
    *,
    graphql: bool,
) -> ReadRecords:
    """Normalise parent payloads and read their children, without the database."""
    chosen: dict[int, tuple[Record, Mapping[str, Any]]] = {}
    for payload in payloads:
        record = normalize(payload)
        current = chosen.get(record["shopify_id"])
        if current is None or _not_older(record, current[0]):
            chosen[record["shopify_id"]] = (record, payload)
    lists: list[dict[int, ChildList | PayloadError | None]] = []
    for child in children:
        found: dict[int, ChildList | PayloadError | None] = {}
        for parent_id in sorted(chosen):
            try:
                found[parent_id] = child.read(chosen[parent_id][1], parent_id, graphql=graphql)
            except PayloadError as exc:
                found[parent_id] = exc
        lists.append(found)
    return ReadRecords(chosen, tuple(lists))


async def write_with_children(
    session: AsyncSession,
    model: type[ShopRecord],
    children: Sequence[ChildSet],
    normalize: Callable[[Any], Record],
    tenant_id: int,
    payloads: Iterable[Mapping[str, Any]],
    *,
    graphql: bool,
    source: str,
    tombstones: Tombstones | None = None,
) -> int:
    """Upsert parent records and, for the ones that applied, their children. Returns how many
    parents were submitted (as `upsert_records` does). `tombstones`: as `write_read_records`
    takes it."""
    if not children:
        chosen: dict[int, Record] = {}
        for payload in payloads:
            record = normalize(payload)
            current = chosen.get(record["shopify_id"])
            if current is None or _not_older(record, current):
                chosen[record["shopify_id"]] = record
        return await upsert_records(session, model, tenant_id, chosen.values(), source=source)
    read = read_with_children(children, normalize, payloads, graphql=graphql)
    return await write_read_records(
        session, model, children, tenant_id, read, source=source, tombstones=tombstones
    )


async def write_read_records(
    session: AsyncSession,
    model: type[ShopRecord],
    children: Sequence[ChildSet],
    tenant_id: int,
    read: ReadRecords,
    *,
    source: str,
    tombstones: Tombstones | None = None,
) -> int:
    """`write_with_children` for records `read_with_children` read. With `tombstones`, the
    children's tombstones are added there for the caller to write; else written here."""
    chosen = read.chosen
    records = [record for record, _ in chosen.values()]
    if not children:
        return await upsert_records(session, model, tenant_id, records, source=source)
    applied = await upsert_applied(session, model, tenant_id, records, source=source)
    refused = sorted(set(chosen) - applied)
    deleted: set[int] = set()
    if refused and any(child.append_only for child in children):
        deleted = await deleted_among(session, model, tenant_id, refused)
    own = tombstones if tombstones is not None else Tombstones()
    for child, read_lists in zip(children, read.lists, strict=True):
        lists = lists_to_write(
            child,
            set(chosen) - deleted,
            applied,
            read_lists.__getitem__,
            lambda parent_id: chosen[parent_id][0].get("shopify_updated_at"),
        )
        if lists:
            await write_children(session, child, tenant_id, lists, source=source, tombstones=own)
    if tombstones is None:
        await own.write(session)
    return len(records)


def lists_to_write(
    child: ChildSet,
    living: Iterable[int],
    applied: Collection[int],
    found: Callable[[int], ChildList | PayloadError | None],
    as_of: Callable[[int], datetime | None],
) -> dict[int, ChildList]:
    """Which parents' lists of `child` a write takes, by parent, as of each parent's time:
    those of the parents whose own write applied. Children that are facts once made (a
    transaction, a refund) are kept from any version of the parent not deleted (`living`),
    even one older than the stored row, which may not carry them at all (REST order bodies
    list no transactions); such an older list removes nothing. A list that could not be
    read (`found` gives its PayloadError) fails the write."""
    lists: dict[int, ChildList] = {}
    for parent_id in sorted(living if child.append_only else applied):
        listed = found(parent_id)
        if isinstance(listed, PayloadError):
            raise listed
        if listed is not None:
            if parent_id not in applied:
                listed = ChildList(listed.records, complete=False, existing=None)
            lists[parent_id] = listed.as_of_time(as_of(parent_id))
    return lists


async def deleted_among(
    session: AsyncSession, model: type[ShopRecord], tenant_id: int, ids: Sequence[int]
) -> set[int]:
    """Which of these records are deleted: their children stay deleted, facts or not, so an
    append-only child list of a refused parent is written only for the parents not among
    these."""
    return set(
        await session.scalars(
            select(model.shopify_id).where(
                of_store(model.tenant_id, tenant_id),
                model.shopify_id.in_(ids),
                model.deleted_at.is_not(None),
            )
        )
    )


async def tombstone_children(
    session: AsyncSession,
    child_sets: Sequence[ChildSet],
    tenant_id: int,
    owner_id: int,
    *,
    deleted_at: datetime,
    source: str,
) -> None:
    """A deleted record's children go with it (a deleted product's variants, an order's line
    items and refunds, an inventory item's levels): Shopify deletes them together and sends
    no notice for each."""
    for child in child_sets:
        table = cast(Table, child.model.__table__)
        owner = table.c[child.owner_key or child.parent_key]
        if child.referenced_as:
            live = select(table.c.shopify_id).where(
                of_store(table.c.tenant_id, tenant_id),
                owner == owner_id,
                table.c.deleted_at.is_(None),
            )
            await forget_references(session, child.referenced_as, tenant_id, live)
        await session.execute(
            update(table)
            .where(
                of_store(table.c.tenant_id, tenant_id),
                owner == owner_id,
                table.c.deleted_at.is_(None),
            )
            .values(deleted_at=deleted_at, synced_at=utcnow(), source=source)
            .execution_options(synchronize_session=False)
        )


async def write_child_body(
    session: AsyncSession,
    child: ChildSet,
    tenant_id: int,
    payload: Mapping[str, Any],
    *,
    source: str,
) -> int:
    """Write the one child a topic's body is (`refunds/create`: a refund, with its line items
    and transactions) under the parent the body names. One child is not its parent's whole
    list, so no sibling is tombstoned; its own lists (a refund's line items) are whole."""
    parent_id = parse_shopify_id(
        payload.get(child.rest_parent_key), f"{child.typename}.{child.rest_parent_key}"
    )
    record = child.normalize(payload, {}, False) | {child.parent_key: parent_id}
    return await write_children(
        session, child, tenant_id, {parent_id: ChildList([record], complete=False)}, source=source
    )


def _not_older(candidate: Record, current: Record) -> bool:
    new, old = candidate.get("shopify_updated_at"), current.get("shopify_updated_at")
    return old is None or (new is not None and new >= old)
