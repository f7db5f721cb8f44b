"""Idempotent, order-safe writes of normalised records, shared by webhooks and the backfill.

A table names its own identity (`conflict_key`: `shopify_id` for Shopify's records, the
(item, location) pair for inventory levels) and whether its tombstones are final; the writes
here read both from the model, so every keyed table gets the same guarded upsert."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    Text,
    and_,
    bindparam,
    case,
    column,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy import table as table_clause
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from handlers.normalize import Record
from models import Customer, InventoryLevel, ShopRecord, utcnow
from models.driver import (
    ROWS_PARAMETER,
    Check,
    bind_processor,
    driver_of,
    fetch_on,
    json_checks,
    json_field,
    rows_json,
    session_connection,
)
from models.tenancy import of_store
from models.types import Money, money_text
from models.upsert import insert_on_conflict

RowModel = type[ShopRecord] | type[InventoryLevel]
"""A table of one store's Shopify data: a record keyed by its id, or an inventory level."""

# Columns an upsert never overwrites: the row's identity and its tombstone.
_KEEP_ON_UPDATE = frozenset({"id", "tenant_id", "shopify_id", "deleted_at"})


def record_key(model: RowModel, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A record's identity within its store: its values of the model's conflict key."""
    return tuple([record[name] for name in _key_names(model)])


def _kept_on_update(model: RowModel) -> frozenset[str]:
    return _KEEP_ON_UPDATE | set(model.conflict_key)


def _newest_per_key(model: RowModel, records: Iterable[Record]) -> list[Record]:
    """One record per key (the newest), in key order: a single INSERT may not touch the same
    row twice, and writers that lock rows in one order cannot deadlock each other."""
    newest: dict[tuple[Any, ...], Record] = {}
    for record in records:
        key = record_key(model, record)
        current = newest.get(key)
        if current is None or _not_older(record, current):
            newest[key] = record
    return [newest[key] for key in sorted(newest)]


def _not_older(candidate: Record, current: Record) -> bool:
    new, old = candidate.get("shopify_updated_at"), current.get("shopify_updated_at")
    return old is None or (new is not None and new >= old)


async def upsert_records(
    session: AsyncSession,
    model: RowModel,
    tenant_id: int,
    records: Iterable[Record],
    *,
    source: str,
) -> int:
    """Insert or update rows in one executemany; returns how many records were submitted.

    A row changes only when the incoming `updated_at` is not older than the stored one and the
    row is not a final tombstone, so late, duplicated and replayed deliveries cannot roll data
    back (a revivable tombstone yields only to a record newer than the tombstone).
    The check runs inside the INSERT ... ON CONFLICT, so two concurrent writers of the same row
    cannot both read "older" and then overwrite each other. One prepared statement run for
    every row is about four times faster than one statement with a VALUES row per record.
    """
    return len(await _upsert(session, model, tenant_id, records, source=source, returning=False))


async def upsert_applied(
    session: AsyncSession,
    model: type[ShopRecord],
    tenant_id: int,
    records: Iterable[Record],
    *,
    source: str,
) -> set[int]:
    """`upsert_records`, answering which ids it wrote: a record refused as older than the
    stored row, or for a tombstone, is not among them (their children must not be written)."""
    written = await _upsert(session, model, tenant_id, records, source=source, returning=True)
    return {key[0] for key in written}


async def _upsert(
    session: AsyncSession,
    model: RowModel,
    tenant_id: int,
    records: Iterable[Record],
    *,
    source: str,
    returning: bool,
) -> list[tuple[Any, ...]]:
    now = utcnow()
    newest = _newest_per_key(model, records)
    if not newest:
        return []
    # Core, on the session's connection: the ORM's execute path costs more CPU than the write.
    connection = await session_connection(session)
    written: list[tuple[Any, ...]] = []
    common = {"tenant_id": tenant_id, "source": source, "synced_at": now}
    if connection.dialect.name == "postgresql":
        # The store, source and write time are bound once in the merge, not sent per row.
        copy = uses_copy(connection.dialect.name, len(newest))
        bound = {_common_name(name): value for name, value in common.items()}
        for names, group in _by_columns(newest, _COMMON_COLUMNS).items():
            if copy:
                written.extend(await _copy_merge(connection, model, names, group, returning, bound))
                continue
            merge = _json_merge(connection.dialect, model, names, returning)
            parameters = {**bound, ROWS_PARAMETER: rows_json(group, merge.checks)}
            merged = await fetch_on(connection, merge.statement, parameters)
            written.extend(tuple(row) for row in merged)
        return written if returning else [record_key(model, record) for record in newest]
    rows = [{**record, **common} for record in newest]
    groups = _by_columns(rows)
    table = cast(Table, model.__table__)
    key_columns = [table.c[name] for name in _key_names(model)]
    if not returning:
        for names, group in groups.items():
            await connection.execute(
                _upsert_statement(session, model, names, skip_same=True), group
            )
        return [record_key(model, row) for row in rows]
    # RETURNING lists only the rows the INSERT ... ON CONFLICT DO UPDATE WHERE wrote.
    for names, group in groups.items():
        statement = _upsert_statement(session, model, names, skip_same=False).returning(
            *key_columns
        )
        # RETURNING makes the batch one multi-row INSERT: keep its bind parameters under
        # SQLite's limit (32,766) whatever the row's width.
        step = max(1, _MAX_PARAMETERS // len(names))
        for start in range(0, len(group), step):
            result = await connection.execute(statement, group[start : start + step])
            written.extend(tuple(row) for row in result.all())
    return written


def _by_columns(
    rows: Iterable[Mapping[str, Any]], leaving: frozenset[str] = frozenset()
) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
    """Rows grouped by their column set (sorted; `leaving` out), in their order within each.
    Records lack the columns their payload lacked (absent is not null), and one statement
    takes one column set. A backfill page comes from one query, so it is one set."""
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        # Rows of one normaliser list their columns in one order: sorting each row's
        # names again cost more than the rest of this loop.
        given = tuple(row)
        names = _SORTED_NAMES.get((given, leaving))
        if names is None:
            names = tuple(sorted(name for name in given if name not in leaving))
            if len(_SORTED_NAMES) < 10_000:
                _SORTED_NAMES[(given, leaving)] = names
        groups.setdefault(names, []).append(row)
    return groups


# Batches of at least this many rows go to PostgreSQL by COPY into a staging table and one
# merge; smaller ones (a webhook batch's records and their children) go as one guarded
# INSERT ... SELECT FROM jsonb_array_elements(rows), which costs one round trip where COPY and
# merge cost three.
COPY_MIN_ROWS = 50


def uses_copy(dialect: str, rows: int) -> bool:
    """The one place that decides how a batch is written: COPY and a merge on PostgreSQL for
    large batches (the backfill), one statement of JSON rows for smaller ones (`_json_merge`),
    and on SQLite the executemany upsert."""
    return dialect == "postgresql" and rows >= COPY_MIN_ROWS


# The columns `_upsert` gives every row of a call the same value: a JSON merge binds each
# once, not once per row.
_COMMON_COLUMNS = frozenset({"tenant_id", "source", "synced_at"})
_COMMON = tuple(sorted(_COMMON_COLUMNS))  # in the order the merges list them


def _common_name(column_name: str) -> str:
    return f"all_{column_name}"


def _bound_common(table: Table) -> dict[str, Any]:
    """The merges' parameters for `_COMMON_COLUMNS`, typed as their columns."""
    return {name: bindparam(_common_name(name), type_=table.c[name].type) for name in _COMMON}


def guarded_merge(
    model: RowModel,
    names: tuple[str, ...],
    incoming: Any,
    *,
    tenant_id: int,
    source: str,
    synced_at: datetime,
    skip_same: bool,
) -> tuple[Any, dict[str, Any]]:
    """The order-safe merge every batch write ends in (`_merge_from`), from a source the
    caller builds (a SELECT with a column per name in `names`), and its parameters: the store,
    source and write time, bound once. For backfill.bulk_sql, which reads the
    columns out of raw JSON lines with SQL."""
    table = cast(Table, model.__table__)
    statement = _merge_from(
        model, names + _COMMON, incoming, _bound_common(table), skip_same=skip_same
    )
    return statement, merge_parameters(tenant_id=tenant_id, source=source, synced_at=synced_at)


def merge_parameters(*, tenant_id: int, source: str, synced_at: datetime) -> dict[str, Any]:
    """A `guarded_merge` statement's parameters: the store, source and write time."""
    common = {"tenant_id": tenant_id, "source": source, "synced_at": synced_at}
    return {_common_name(name): value for name, value in common.items()}


@dataclass(frozen=True)
class _JsonMerge:
    statement: Any
    checks: tuple[tuple[str, Check], ...]  # models.driver.json_checks


_JSON_MERGES: dict[tuple[str, tuple[str, ...], bool], _JsonMerge] = {}


def _json_merge(
    dialect: Dialect, model: RowModel, names: tuple[str, ...], returning: bool
) -> _JsonMerge:
    """PostgreSQL: the guarded upsert of any number of rows of one column set, sent as one
    JSON array (`INSERT ... SELECT ... FROM jsonb_array_elements(...) ORDER BY key ON
    CONFLICT ...`, models.driver.rows_json). Its text does not depend on the row count, so it
    is compiled and prepared once per connection, where a multi-row VALUES is a new statement
    for every count and an executemany binds every row on its own. `names`: the columns the
    rows carry; `_COMMON_COLUMNS` are bound once for all of them (`_common_name`)."""
    key = (str(model.__tablename__), names, returning)
    merge = _JSON_MERGES.get(key)
    if merge is None:
        table = cast(Table, model.__table__)
        read = {name: table.c[name].type for name in names}
        rows = sql_cast(bindparam(ROWS_PARAMETER, type_=Text()), postgresql.JSONB)
        given = (
            func.jsonb_array_elements(rows)
            .table_valued(column("value", postgresql.JSONB))
            .render_derived(name="given")
        )
        incoming = (
            select(
                *(
                    literal_column(json_field(dialect, type_, name), type_).label(name)
                    for name, type_ in read.items()
                )
            )
            .select_from(given)
            .subquery("incoming")
        )
        statement = _merge_from(
            model, names + _COMMON, incoming, _bound_common(table), skip_same=not returning
        )
        if returning:
            statement = statement.returning(*(table.c[name] for name in _key_names(model)))
        merge = _JsonMerge(statement, json_checks(dialect, read))
        _JSON_MERGES[key] = merge
    return merge


@dataclass(frozen=True)
class _Staging:
    """A target table's staging table for one column set, and the statements that use it."""

    name: str
    create: str
    # INSERT INTO target SELECT ... FROM staging ORDER BY key ON CONFLICT DO UPDATE ...
    # WHERE <guard>, with and without RETURNING.
    merge: Any
    merge_returning: Any
    # One converter per column (None: the value goes as is), as SQLAlchemy binds it.
    processors: tuple[Callable[[Any], Any] | None, ...]


_STAGINGS: dict[tuple[str, tuple[str, ...]], _Staging] = {}
# Part of every staging table's name: a change in how columns are staged (amounts as text)
# must not meet a pooled connection's staging table of the old layout.
_STAGING_LAYOUT = ";money-as-text"


def _staging(dialect: Dialect, model: RowModel, names: tuple[str, ...]) -> _Staging:
    """`names`: the columns COPYed; `_COMMON_COLUMNS` are bound once in the merge."""
    key = (str(model.__tablename__), names)
    staging = _STAGINGS.get(key)
    if staging is not None:
        return staging
    table = cast(Table, model.__table__)
    # Named after the target's columns and the staging layout: a pooled connection that kept
    # an older staging table (from before a migration added a column) gets a new one rather
    # than a COPY error.
    layout = ",".join(table.c.keys()) + _STAGING_LAYOUT
    digest = hashlib.sha256(layout.encode()).hexdigest()[:10]
    name = f"stage_{table.name}_{digest}"
    # Amounts are staged as text and cast back in the merge: the driver's binary encoding of
    # a Decimal costs about 1.5 us a value, fifteen times that of its text, and a bulk batch
    # carries one to six a row; PostgreSQL reads either form of the same amount alike.
    money = [c.name for c in table.c if isinstance(c.type, Money)]
    as_text_ddl = (
        f'ALTER TABLE pg_temp."{name}" '
        + ", ".join(f'ALTER COLUMN "{n}" TYPE text' for n in money)
        + ";"
        if money
        else ""
    )
    # Every column, none of the target's constraints or defaults (CREATE TABLE ... LIKE would
    # copy NOT NULL onto `id`, which the merge leaves to the sequence). Temporary, so COPY
    # needs no grant beyond the database's TEMPORARY; its rows go at commit. Several column
    # sets may pass through it in one transaction, so a table that still holds rows is
    # emptied before the COPY: checked here, in the one round trip every COPY already makes,
    # where the merge used to move its rows out (DELETE ... RETURNING, then materialised),
    # which cost 8-10 % of the merge (line items, orders).
    # Each column compressed as the target's is (lz4 for jsonb, migration 0017): CREATE TABLE
    # AS takes the server's default, pglz, whose compression of the COPY was a tenth of
    # PostgreSQL's CPU in a bulk backfill, and the merge moves compressed values as they are,
    # so the target's rows would keep pglz.
    create = f"""DO $$
DECLARE
  target record;
BEGIN
  IF to_regclass('pg_temp.{name}') IS NULL THEN
    CREATE TEMPORARY TABLE "{name}" ON COMMIT DELETE ROWS AS
      SELECT * FROM "{table.name}" WITH NO DATA;
    FOR target IN
      SELECT attname, attcompression FROM pg_attribute
      WHERE attrelid = '"{table.name}"'::regclass AND attnum > 0 AND NOT attisdropped
        AND attcompression IN ('l', 'p')
    LOOP
      EXECUTE 'ALTER TABLE pg_temp."{name}" ALTER COLUMN ' || quote_ident(target.attname)
        || ' SET COMPRESSION '
        || CASE target.attcompression WHEN 'l' THEN 'lz4' ELSE 'pglz' END;
    END LOOP;
    {as_text_ddl}
  ELSIF EXISTS (SELECT FROM pg_temp."{name}") THEN
    DELETE FROM pg_temp."{name}";
  END IF;
END $$"""
    as_text = frozenset(n for n in names if n in money)
    stage = table_clause(
        name,
        *(column(n, Text() if n in as_text else table.c[n].type) for n in names),
        schema="pg_temp",
    )
    columns = names + _COMMON
    common = _bound_common(table)
    merge = _merge_from(model, columns, stage, common, skip_same=True, cast_back=as_text)
    key_columns = [table.c[n] for n in _key_names(model)]
    merge_returning = _merge_from(model, columns, stage, common, cast_back=as_text).returning(
        *key_columns
    )
    processors = tuple(
        money_text if n in as_text else bind_processor(dialect, table.c[n].type) for n in names
    )
    staging = _Staging(name, create, merge, merge_returning, processors)
    _STAGINGS[key] = staging
    return staging


async def _copy_merge(
    connection: AsyncConnection,
    model: RowModel,
    names: tuple[str, ...],
    rows: Sequence[Mapping[str, Any]],
    returning: bool,
    bound: Mapping[str, Any],
) -> list[tuple[Any, ...]]:
    """One column set's rows: COPY into the staging table, then one guarded merge into the
    target, all in the caller's transaction (its tenant scope binds the merge's RLS checks).
    `bound`: the `_COMMON_COLUMNS` every row takes the same value of (its store, source and
    write time) by their `_common_name`, bound once in the merge rather than COPYed."""
    staging = _staging(connection.dialect, model, names)
    # Through SQLAlchemy first: it begins the driver's transaction if nothing did yet, so the
    # COPY below runs inside it.
    await connection.exec_driver_sql(staging.create)
    driver = await driver_of(connection)
    # In a thread: serialising a bulk batch's values (each `raw` to JSON text) held the event
    # loop, and with it the other writer's statements, for milliseconds at a time.
    records = await asyncio.to_thread(_copy_records, staging, names, rows)
    await driver.copy_records_to_table(
        staging.name, records=records, columns=list(names), schema_name="pg_temp"
    )
    merged = await fetch_on(
        connection, staging.merge_returning if returning else staging.merge, bound
    )
    return [tuple(row) for row in merged]


def _copy_records(
    staging: _Staging, names: tuple[str, ...], rows: Sequence[Mapping[str, Any]]
) -> list[list[Any]]:
    """The rows as COPY takes them: `names`' values in order, each through its column's bind
    processor (JSON text for `jsonb`, money as exact text)."""
    records = [[row[n] for n in names] for row in rows]
    for index, process in enumerate(staging.processors):
        if process is not None:
            for record in records:
                value = record[index]
                if value is not None:
                    record[index] = process(value)
    return records


_MAX_PARAMETERS = 30_000
_SORTED_NAMES: dict[tuple[tuple[str, ...], frozenset[str]], tuple[str, ...]] = {}


_UPSERTS: dict[tuple[str, str, tuple[str, ...], bool], Any] = {}


def _upsert_statement(
    session: AsyncSession, model: RowModel, names: tuple[str, ...], *, skip_same: bool
) -> Any:
    """The guarded upsert for these columns, built once: building it (its `excluded` alias
    above all) costs more CPU than a single webhook's write."""
    key = (session.get_bind().dialect.name, str(model.__tablename__), names, skip_same)
    statement = _UPSERTS.get(key)
    if statement is None:
        table = cast(Table, model.__table__)
        statement = _guarded(insert_on_conflict(session, table), model, names, skip_same=skip_same)
        _UPSERTS[key] = statement
    return statement


def _key_names(model: RowModel) -> tuple[str, ...]:
    """The columns that identify a row within its store (the conflict key but the tenant)."""
    names = _KEY_NAMES.get(model)
    if names is None:
        names = _KEY_NAMES[model] = tuple(n for n in model.conflict_key if n != "tenant_id")
    return names


_KEY_NAMES: dict[RowModel, tuple[str, ...]] = {}


def _merge_from(
    model: RowModel,
    names: tuple[str, ...],
    incoming: Any,
    bound: Mapping[str, Any] | None = None,
    *,
    skip_same: bool = False,
    cast_back: frozenset[str] = frozenset(),
) -> Any:
    """The guarded upsert of `names` from `incoming` (the staging table, or the rows read
    from JSON), taken in key order so concurrent writers lock rows in one order.
    `bound`: columns whose one value for every row is a parameter, not in `incoming`.
    `cast_back`: columns `incoming` holds as text, cast to the target's type."""
    table = cast(Table, model.__table__)
    given = bound or {}

    def value(name: str) -> Any:
        if name in given:
            return given[name]
        if name in cast_back:
            return sql_cast(incoming.c[name], table.c[name].type)
        return incoming.c[name]

    source = select(*(value(n) for n in names)).order_by(
        *(incoming.c[n] for n in _key_names(model))
    )
    insert = postgresql.insert(table).from_select(list(names), source)
    return _guarded(insert, model, names, skip_same=skip_same)


def _guarded(insert: Any, model: RowModel, names: tuple[str, ...], *, skip_same: bool) -> Any:
    """`insert` (of values, or from the staging table) as the order-safe upsert: on conflict
    the row takes these columns only when the incoming `updated_at` is not older than the
    stored one and the row is not a final tombstone (a revivable one yields to a newer record).

    `skip_same`: a row that would keep every value it has (but when and by whom it was
    written) is left as it is. An order update repeats its line items, most often unchanged;
    rewriting each costs PostgreSQL a new row version, its index entries and WAL. Only for
    writes that do not answer which rows they wrote (children, levels, reconcile's repairs):
    a parent's answer decides whether its children are written, so a parent is always
    written. Every column is compared, `shopify_updated_at` too, so a skipped row is
    exactly the row the write would have left (its order guard included)."""
    table = cast(Table, model.__table__)
    excluded = insert.excluded
    kept = _kept_on_update(model)
    values = {name: excluded[name] for name in names if name not in kept}
    not_older = or_(
        table.c.shopify_updated_at.is_(None),
        excluded.shopify_updated_at >= table.c.shopify_updated_at,
    )
    if model.revivable:
        # Strictly newer than the tombstone: a record from the moment it was removed, or
        # before, is the state the removal ended.
        values["deleted_at"] = None
        alive = or_(table.c.deleted_at.is_(None), excluded.shopify_updated_at > table.c.deleted_at)
    else:
        alive = table.c.deleted_at.is_(None)
    applies = and_(alive, not_older)
    if skip_same:
        changes = [
            table.c[name].is_distinct_from(value)
            for name, value in values.items()
            if name not in _WRITE_STAMPS
        ]
        applies = and_(applies, or_(*changes))
    return insert.on_conflict_do_update(
        index_elements=[table.c[name] for name in model.conflict_key],
        set_=values,
        where=applies,
    )


# What an upsert sets on every row it writes, whatever the record says: a row differing from
# the record only in these is the record already (`skip_same`).
_WRITE_STAMPS = frozenset({"synced_at", "source"})


async def tombstone(
    session: AsyncSession,
    model: type[ShopRecord],
    tenant_id: int,
    shopify_id: int,
    *,
    deleted_at: datetime,
    source: str,
) -> None:
    """Mark a record deleted, creating the row if the delete arrived before the create.

    Tombstones are final: Shopify never reuses an id or restores a deleted order, product or
    customer, so any later-arriving update for this id is an old one and is refused.
    """
    await tombstone_row(
        session,
        model,
        tenant_id,
        {"shopify_id": shopify_id},
        deleted_at=deleted_at,
        raw={"id": shopify_id},
        source=source,
    )


async def tombstone_row(
    session: AsyncSession,
    model: RowModel,
    tenant_id: int,
    key: Mapping[str, int],
    *,
    deleted_at: datetime,
    raw: dict[str, Any],
    source: str,
    untimed: bool = False,
) -> None:
    """Mark the row with this key deleted at `deleted_at`, creating it if need be.

    A final tombstone is set once. A revivable one (a disconnected inventory level) is the
    removal's time on Shopify's clock: it applies only when not older than the stored row's
    `shopify_updated_at`, and a later record newer than it revives the row (`upsert_records`).
    An `untimed` removal (its body carries no time; `deleted_at` is our receipt) removes
    the row as we hold it: it is dated no earlier than the stored `shopify_updated_at`, so
    only a record newer than the state it removed revives the row, whatever our clock says.
    """
    table = cast(Table, model.__table__)
    statement = insert_on_conflict(session, table).values(
        tenant_id=tenant_id,
        **key,
        deleted_at=deleted_at,
        raw=raw,
        source=source,
        synced_at=utcnow(),
    )
    excluded = statement.excluded
    changes: dict[str, Any] = {
        "deleted_at": excluded.deleted_at,
        "synced_at": excluded.synced_at,
    }
    where: ColumnElement[bool]
    if model.revivable and untimed:
        changes |= {
            "raw": excluded.raw,
            "source": excluded.source,
            "deleted_at": case(
                (
                    table.c.shopify_updated_at > excluded.deleted_at,
                    table.c.shopify_updated_at,
                ),
                else_=excluded.deleted_at,
            ),
        }
        where = table.c.deleted_at.is_(None)
    elif model.revivable:
        changes |= {"raw": excluded.raw, "source": excluded.source}
        where = and_(
            or_(table.c.deleted_at.is_(None), excluded.deleted_at > table.c.deleted_at),
            or_(
                table.c.shopify_updated_at.is_(None),
                excluded.deleted_at >= table.c.shopify_updated_at,
            ),
        )
    else:
        where = table.c.deleted_at.is_(None)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c[name] for name in model.conflict_key],
            set_=changes,
            where=where,
        )
    )


async def replace_record(
    session: AsyncSession,
    model: RowModel,
    tenant_id: int,
    record: Record,
    *,
    seen_updated_at: datetime | None,
    seen_deleted_at: datetime | None,
    source: str,
) -> bool:
    """Overwrite a row with Shopify's current version even though it looks newer or deleted.

    Only for repairs (reconcile), when Shopify itself answered that the row is wrong: a
    `shopify_updated_at` Shopify never had (corrupted, or in the future) would otherwise refuse
    every later write, and a tombstone for a record Shopify still has would hide it forever.
    It is a compare-and-set on what the caller read (`seen_*`): if a webhook changed the row
    since, nothing is written and False is returned, so a fresher write is never undone.
    """
    table = cast(Table, model.__table__)
    values = {name: value for name, value in record.items() if name not in _KEEP_ON_UPDATE}
    values |= {"deleted_at": None, "source": source, "synced_at": utcnow()}
    statement = (
        update(table)
        .where(
            of_store(table.c.tenant_id, tenant_id),
            *(
                table.c[name] == value
                for name, value in zip(
                    _key_names(model),
                    record_key(model, record),
                    strict=True,
                )
            ),
            _holds(table.c.shopify_updated_at, seen_updated_at),
            _holds(table.c.deleted_at, seen_deleted_at),
        )
        .values(**values)
    )
    result = await session.execute(statement)
    return (getattr(result, "rowcount", 0) or 0) == 1


def _holds(column: ColumnElement[datetime], value: datetime | None) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


async def apply_purchasing_summary(
    session: AsyncSession, tenant_id: int, summary: Record, *, source: str
) -> None:
    """Write a customer's spend and order count from customers/purchasing_summary.

    Summaries are ordered among themselves by when they occurred (`purchasing_summary_at`),
    not by the customer's `updated_at`, which they do not carry: an older summary never
    overwrites a newer one, and one without a time only fills a row that has none. The row is
    created if the summary arrives before the customer; a tombstone stays final. Only the
    columns the summary carries are written.
    """
    table = Customer.__table__
    values = {**summary, "tenant_id": tenant_id, "source": source, "synced_at": utcnow()}
    statement = insert_on_conflict(session, table).values(values)
    excluded = statement.excluded
    updated = [name for name in values if name not in _KEEP_ON_UPDATE]
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.shopify_id],
        set_={name: excluded[name] for name in updated},
        where=and_(
            table.c.deleted_at.is_(None),
            or_(
                table.c.purchasing_summary_at.is_(None),
                excluded.purchasing_summary_at >= table.c.purchasing_summary_at,
            ),
        ),
    )
    await session.execute(statement)
