"""The inbox's one writer: an event stored with its dedupe key, duplicates counted, old
events pruned, and (PostgreSQL) the month partitions of `webhook_events` made and dropped.

An event is two rows written together: its key in `webhook_event_keys` (unique per shop,
topic and dedupe key) and the event in `webhook_events` (partitioned by month on PostgreSQL,
migration 0016, so it cannot hold that unique key itself). The key is inserted first with
ON CONFLICT DO NOTHING: of two concurrent copies of one event exactly one inserts it and
goes on; the other waits on the key until that transaction ends, then finds the key (a
duplicate) or, after a rollback, inserts it itself. A rolled-back copy leaves no key behind,
as both rows are in its transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Table,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from models import ComplianceRequest, WebhookEvent, WebhookEventKey, utcnow
from models.driver import (
    ROWS_PARAMETER,
    Check,
    JsonText,
    fetch,
    json_checks,
    json_field,
    rows_json,
    session_connection,
)
from models.upsert import affected_rows, insert_on_conflict

# The columns a stored event is given (`store_event`'s values); the id comes with the key.
EVENT_COLUMNS = (
    "tenant_id",
    "shop_domain",
    "topic",
    "event_id",
    "webhook_id",
    "dedupe_key",
    "api_version",
    "triggered_at",
    "received_at",
    "processed_at",
    "status",
    "error",
    "attempts",
    "payload",
)
_KEY_COLUMNS = ("shop_domain", "topic", "dedupe_key")
# Where the event's id comes from on PostgreSQL: the sequence behind webhook_events.id.
ID_SEQUENCE = "webhook_events_id_seq"
# The names of month partitions (migration 0016's functions make and drop them).
PARTITION_PREFIX = "webhook_events_p"

_STATEMENTS: dict[tuple[str, str], Any] = {}


def _events() -> Table:
    return WebhookEvent.__table__  # type: ignore[return-value]


def _keys() -> Table:
    return WebhookEventKey.__table__  # type: ignore[return-value]


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _cached(session: AsyncSession, name: str, build: Any) -> Any:
    """A statement built once per dialect: building one costs about as much CPU as running
    it."""
    slot = (_dialect(session), name)
    statement = _STATEMENTS.get(slot)
    if statement is None:
        statement = _STATEMENTS[slot] = build(session)
    return statement


def _param(table: Table, name: str) -> Any:
    return bindparam(name, type_=table.c[name].type)


def _key_insert(session: AsyncSession, event_id: Any) -> Any:
    """INSERT the key ON CONFLICT DO NOTHING RETURNING the event's id."""
    keys = _keys()
    return (
        insert_on_conflict(session, keys)
        .values(
            {name: _param(keys, name) for name in (*_KEY_COLUMNS, "tenant_id", "received_at")}
            | {"webhook_event_id": event_id}
        )
        .on_conflict_do_nothing(index_elements=list(_KEY_COLUMNS))
        .returning(keys.c.webhook_event_id)
    )


def _store_postgresql(session: AsyncSession) -> Any:
    """One round trip: the key (its event id drawn from the sequence) and, only when the key
    was new, the event with that id."""
    events = _events()
    key = _key_insert(session, literal_column(f"nextval('{ID_SEQUENCE}')")).cte("new_key")
    values = [_param(events, name) for name in EVENT_COLUMNS]
    return (
        insert(events)
        .from_select(
            ["id", *EVENT_COLUMNS],
            select(key.c.webhook_event_id, *values),
            include_defaults=False,  # the table's own (duplicate_count's 0)
        )
        .returning(events.c.id)
    )


def _store_sqlite_key(session: AsyncSession) -> Any:
    # SQLite gives an INTEGER PRIMARY KEY the largest id plus one; the key takes it first,
    # under the database's single write lock (which the INSERT itself takes).
    next_id = select(func.coalesce(func.max(_events().c.id), 0) + 1).scalar_subquery()
    return _key_insert(session, next_id)


def _store_sqlite_event(session: AsyncSession) -> Any:
    events = _events()
    return (
        insert(events)
        .values(
            {"id": bindparam("id", type_=events.c.id.type)}
            | {name: _param(events, name) for name in EVENT_COLUMNS}
        )
        .returning(events.c.id)
    )


async def store_event(session: AsyncSession, values: Mapping[str, Any]) -> int | None:
    """Store an event (`values` holds every EVENT_COLUMNS) with its dedupe key; its id, or
    None when the key was stored before: a duplicate, which must not be applied again.

    Of two concurrent copies of one event exactly one gets an id back; the other waits for
    that transaction's commit (then returns None) or rollback (then stores its own)."""
    connection = await session_connection(session)  # Core: the ORM's execute path costs more
    if _dialect(session) == "postgresql":
        result = await connection.execute(_cached(session, "store", _store_postgresql), values)
        event_id: int | None = result.scalar_one_or_none()
        return event_id
    key = await connection.execute(_cached(session, "store_key", _store_sqlite_key), values)
    new_id: int | None = key.scalar_one_or_none()
    if new_id is None:
        return None
    statement = _cached(session, "store_event", _store_sqlite_event)
    await connection.execute(statement, {**values, "id": new_id})
    return new_id


def _store_many_postgresql(session: AsyncSession) -> Any:
    """One round trip for many events: the rows as one JSON array (models.driver.rows_json),
    read in order; the first copy of each key (in the order given); the keys inserted in key
    order (two batches lock them in one order) with ids drawn from the sequence; and, for the
    keys that were new, the events with those ids."""
    dialect = session.get_bind().dialect
    events = _events()
    columns = ", ".join(EVENT_COLUMNS)
    fields = ",\n    ".join(
        f"{json_field(dialect, events.c[name].type, name)} AS {name}" for name in EVENT_COLUMNS
    )
    keys = ", ".join(_KEY_COLUMNS)
    chosen = ", ".join(f"first.{name}" for name in EVENT_COLUMNS)
    statement = text(
        f"""
WITH incoming AS (
  SELECT
    {fields},
    given.position
  FROM jsonb_array_elements(CAST(:{ROWS_PARAMETER} AS jsonb))
    WITH ORDINALITY AS given(value, position)
), first AS (
  SELECT DISTINCT ON ({keys}) * FROM incoming ORDER BY {keys}, position
), new_keys AS (
  INSERT INTO webhook_event_keys ({keys}, tenant_id, received_at, webhook_event_id)
  SELECT {keys}, tenant_id, received_at, nextval('{ID_SEQUENCE}') FROM first ORDER BY {keys}
  ON CONFLICT ({keys}) DO NOTHING
  RETURNING {keys}, webhook_event_id
)
INSERT INTO webhook_events (id, {columns})
SELECT new_keys.webhook_event_id, {chosen}
FROM new_keys JOIN first USING ({keys})
RETURNING id, {keys}
"""
    )
    return statement.bindparams(bindparam(ROWS_PARAMETER, type_=Text()))


def _event_checks(session: AsyncSession) -> tuple[tuple[str, Check], ...]:
    events = _events()
    types = {name: events.c[name].type for name in EVENT_COLUMNS}
    return json_checks(session.get_bind().dialect, types)


async def store_events(
    session: AsyncSession,
    rows: Sequence[Mapping[str, Any]],
    bodies: Sequence[bytes | None] | None = None,
) -> list[int | None]:
    """Store many events (each of `rows` holds every EVENT_COLUMNS) with their keys, as
    `store_event` stores one: each row's id, None for a duplicate (stored before, or an
    earlier copy among `rows`), with the same rules for concurrent copies. `bodies`: per
    row, the JSON text its payload was read from, when that text can be stored as it came
    (PostgreSQL then stores it without writing the payload again), else None."""
    if _dialect(session) != "postgresql":
        # SQLite writes one at a time anyway (one write lock); in key order, as below.
        ids: dict[int, int | None] = {}
        for index in sorted(range(len(rows)), key=lambda i: _key_of(rows[i])):
            ids[index] = await store_event(session, rows[index])
        return [ids[index] for index in range(len(rows))]
    sent: Sequence[Mapping[str, Any]] = rows
    if bodies is not None:
        sent = [
            row if body is None else {**row, "payload": JsonText(body)}
            for row, body in zip(rows, bodies, strict=True)
        ]
    result = await fetch(
        session,
        _cached(session, "store_many", _store_many_postgresql),
        {ROWS_PARAMETER: rows_json(sent, _cached(session, "event_checks", _event_checks))},
    )
    stored = {(shop, topic, key): event_id for event_id, shop, topic, key in result}
    # The first copy of a key gets the id; later copies are duplicates.
    return [stored.pop(_key_of(row), None) for row in rows]


def _key_of(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return row["shop_domain"], row["topic"], row["dedupe_key"]


def _count_duplicate(session: AsyncSession) -> Any:
    keys, events = _keys(), _events()

    def of_key(column: Any) -> Any:
        return (
            select(column)
            .where(
                *(
                    keys.c[name] == bindparam(f"key_{name}", type_=keys.c[name].type)
                    for name in _KEY_COLUMNS
                )
            )
            .scalar_subquery()
        )

    # Two scalar subqueries, not a join: their values, known when the UPDATE starts, prune
    # webhook_events to the one partition that holds the event.
    return (
        update(events)
        .where(
            events.c.id == of_key(keys.c.webhook_event_id),
            events.c.received_at == of_key(keys.c.received_at),
        )
        .values(
            duplicate_count=events.c.duplicate_count + 1,
            last_duplicate_at=bindparam("now", type_=events.c.last_duplicate_at.type),
        )
    )


async def count_duplicates(session: AsyncSession, keys: Sequence[tuple[str, str, str]]) -> None:
    """One more redelivery of each stored event (shop, topic, dedupe key; a key once per
    redelivery), in one round trip (the driver pipelines an executemany): no data changes,
    but the count is what tells a store's owner Shopify retried (the dashboard's dedupe hits
    per topic)."""
    if not keys:
        return
    connection = await session_connection(session)
    now = utcnow()
    await connection.execute(
        _cached(session, "duplicate", _count_duplicate),
        [
            {"key_shop_domain": shop, "key_topic": topic, "key_dedupe_key": key, "now": now}
            for shop, topic, key in keys
        ],
    )


async def assign_tenant(session: AsyncSession, event: WebhookEvent, tenant_id: int | None) -> None:
    """Give a stored event (an unknown shop's, until now) its store, and its key with it: the
    key must go where the event goes when the store is redacted."""
    event.tenant_id = tenant_id
    keys = _keys()
    await session.execute(
        update(keys)
        .where(
            keys.c.shop_domain == event.shop_domain,
            keys.c.topic == event.topic,
            keys.c.dedupe_key == event.dedupe_key,
            keys.c.webhook_event_id == event.id,
        )
        .values(tenant_id=tenant_id)
    )


async def delete_events(
    session: AsyncSession, received_before: datetime, statuses: Sequence[str]
) -> int:
    """Delete, row by row, the events with one of `statuses` received before
    `received_before`, with their keys (a redelivery is then stored anew); compliance
    requests' references to them become NULL. How many events went."""
    events, keys = _events(), _keys()
    doomed = (events.c.received_at < received_before, events.c.status.in_(statuses))
    await session.execute(
        update(ComplianceRequest)
        .where(ComplianceRequest.webhook_event_id.in_(select(events.c.id).where(*doomed)))
        .values(webhook_event_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        delete(keys).where(
            keys.c.received_at < received_before,  # a key holds its event's received_at
            exists(
                select(events.c.id).where(
                    *(events.c[name] == keys.c[name] for name in _KEY_COLUMNS),
                    events.c.id == keys.c.webhook_event_id,
                    *doomed,
                )
            ),
        )
    )
    result = await session.execute(
        delete(events).where(*doomed).execution_options(synchronize_session=False)
    )
    return affected_rows(result)


def month_start(moment: datetime) -> datetime:
    """The first instant (UTC) of the calendar month holding `moment`."""
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(month: datetime) -> datetime:
    return month_start(month_start(month) + timedelta(days=32))


async def month_partitions(session: AsyncSession) -> list[datetime]:
    """The months that have a partition of their own (PostgreSQL), oldest first."""
    if _dialect(session) != "postgresql":
        return []
    names = await session.scalars(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'webhook_events'::regclass AND c.relname ~ :pattern "
            "ORDER BY c.relname"
        ),
        {"pattern": f"^{PARTITION_PREFIX}[0-9]{{6}}$"},
    )
    return [
        datetime(int(name[-6:-2]), int(name[-2:]), 1, tzinfo=UTC)
        for name in names
        if 1 <= int(name[-2:]) <= 12
    ]


async def drop_months(session: AsyncSession, received_before: datetime, keep_failed: bool) -> int:
    """Drop every month partition wholly older than `received_before` (PostgreSQL), with the
    keys of its events; with `keep_failed` its failed and dead events are kept (moved to the
    DEFAULT partition, unchanged, keys and all). How many events went."""
    dropped = 0
    for month in await month_partitions(session):
        if next_month(month) > received_before:
            break
        dropped += (
            await session.scalar(
                text("SELECT webhook_events_drop_month(:month, :keep_failed)"),
                {"month": month, "keep_failed": keep_failed},
            )
            or 0
        )
    return dropped


async def add_months(session: AsyncSession, now: datetime | None = None) -> list[datetime]:
    """Make the partitions of this month and the next ahead of time (PostgreSQL); the months
    made. An event of a month without one lands in the DEFAULT partition, which is still
    correct; making that month later moves such events into it."""
    if _dialect(session) != "postgresql":
        return []
    this_month = month_start(now or utcnow())
    made = []
    for month in (this_month, next_month(this_month)):
        created = await session.scalar(
            text("SELECT webhook_events_add_month(:month)"), {"month": month}
        )
        if created:
            made.append(month)
    return made
