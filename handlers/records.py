"""Idempotent, order-safe writes of normalised records, shared by webhooks and the backfill."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.normalize import Record
from models import ShopRecord, utcnow
from models.upsert import insert_on_conflict

# Columns an upsert never overwrites: the row's identity and its tombstone.
_KEEP_ON_UPDATE = frozenset({"id", "tenant_id", "shopify_id", "deleted_at"})


def _newest_per_id(records: Iterable[Record]) -> list[Record]:
    """One record per id (the newest), in id order: a single INSERT may not touch the same row
    twice, and writers that lock rows in one order cannot deadlock each other."""
    newest: dict[int, Record] = {}
    for record in records:
        current = newest.get(record["shopify_id"])
        if current is None or _not_older(record, current):
            newest[record["shopify_id"]] = record
    return [newest[key] for key in sorted(newest)]


def _not_older(candidate: Record, current: Record) -> bool:
    new, old = candidate.get("shopify_updated_at"), current.get("shopify_updated_at")
    return old is None or (new is not None and new >= old)


async def upsert_records(
    session: AsyncSession,
    model: type[ShopRecord],
    tenant_id: int,
    records: Iterable[Record],
    *,
    source: str,
) -> int:
    """Insert or update rows in one executemany; returns how many records were submitted.

    A row changes only when the incoming `updated_at` is not older than the stored one and the
    row is not a tombstone, so late, duplicated and replayed deliveries cannot roll data back.
    The check runs inside the INSERT ... ON CONFLICT, so two concurrent writers of the same row
    cannot both read "older" and then overwrite each other. One prepared statement run for
    every row is about four times faster than one statement with a VALUES row per record.
    """
    now = utcnow()
    rows = [
        {**record, "tenant_id": tenant_id, "source": source, "synced_at": now}
        for record in _newest_per_id(records)
    ]
    if not rows:
        return 0
    table = model.__table__
    statement = insert_on_conflict(session, table)
    excluded = statement.excluded
    columns = [name for name in rows[0] if name not in _KEEP_ON_UPDATE]
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.shopify_id],
        set_={name: excluded[name] for name in columns},
        where=and_(
            table.c.deleted_at.is_(None),
            or_(
                table.c.shopify_updated_at.is_(None),
                excluded.shopify_updated_at >= table.c.shopify_updated_at,
            ),
        ),
    )
    await session.execute(statement, rows)
    return len(rows)


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
    table = model.__table__
    statement = insert_on_conflict(session, table).values(
        tenant_id=tenant_id,
        shopify_id=shopify_id,
        deleted_at=deleted_at,
        raw={"id": shopify_id},
        source=source,
        synced_at=utcnow(),
    )
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.shopify_id],
        set_={
            "deleted_at": statement.excluded.deleted_at,
            "synced_at": statement.excluded.synced_at,
        },
        where=table.c.deleted_at.is_(None),
    )
    await session.execute(statement)
