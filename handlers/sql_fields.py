"""The declared columns (`Field`) read by PostgreSQL out of a `jsonb` document, for the bulk
ingest (issue #16): each parse function has an SQL twin here, beside a test that holds the two
to the same readings (tests/integration/test_sql_fields.py).

A twin does not copy every branch of its parse function. It reads the shapes Shopify sends
(a gid, an amount with two decimals, `2024-03-01T10:20:30Z`, a JSON integer, a string, null)
and gives, with each column, an `ok` condition: true when the value has one of those shapes,
where the SQL reading equals Python's. A document whose columns are not all `ok` is read by
the Python normalisers, which accept it the same way or refuse it with their own message:
the SQL path never accepts what Python refuses, and never stores a value Python would not.
So `ok` must be false for everything Python refuses, and may be false for more.

One fact the twins cannot see: `jsonb` keeps a number's value, not its spelling, so `1e2`
reads as `100`, which Python (orjson) reads as a float and refuses as a count or an id. A
document whose text has a number written with an exponent (`has_exponent`, a test on the
bytes) is therefore not for this path either.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from handlers.normalize import (
    Field,
    Parse,
    gid_or_id,
    lower_enum,
    optional_shopify_id,
    optional_text,
    parse_bool,
    parse_count,
    parse_money,
    parse_shopify_id,
    parse_timestamp,
)


@dataclass(frozen=True)
class SqlRead:
    """One column read in SQL: its value, and when that value is Python's (see the module)."""

    value: str
    ok: str


# A twin reads a `jsonb` expression that is SQL NULL when a null came on the way to the value
# (`{"customer": null}` read at `customer.id`), which Python reads as None too.
SqlParse = Callable[[str], SqlRead]


def _text(value: str) -> str:
    """The scalar's text: a string unescaped, a number as jsonb writes it, null as NULL."""
    return f"({value} #>> '{{}}')"


def _kind(value: str) -> str:
    return f"jsonb_typeof({value})"


def _is_null(value: str) -> str:
    """SQL NULL (null on the way) or JSON null."""
    return f"({value} IS NULL OR {_kind(value)} = 'null')"


def sql_optional_text(value: str) -> SqlRead:
    # Numbers are Python's str(), whose spelling of a float is not jsonb's: left to Python.
    return SqlRead(
        f"nullif({_text(value)}, '')", f"({_is_null(value)} OR {_kind(value)} = 'string')"
    )


def sql_lower_enum(value: str) -> SqlRead:
    # Printable ASCII only, where str.lower and lower() under the C collation agree.
    text = sql_optional_text(value)
    return SqlRead(
        f'lower({text.value} COLLATE "C")',
        f"({text.ok} AND coalesce({_text(value)} !~ '[^ -~]', true))",
    )


def sql_parse_bool(value: str) -> SqlRead:
    return SqlRead(f"{_text(value)}::boolean", f"({_is_null(value)} OR {_kind(value)} = 'boolean')")


def sql_parse_count(value: str) -> SqlRead:
    # JSON integers up to 18 digits (below 2**63); a digit string or a float is Python's.
    return SqlRead(
        f"{_text(value)}::bigint",
        f"({_is_null(value)} OR ({_kind(value)} = 'number'"
        f" AND {_text(value)} ~ '^[0-9]{{1,18}}$'))",
    )


def sql_parse_money(value: str) -> SqlRead:
    # `_PLAIN_MONEY`'s amounts; PostgreSQL's numeric has no negative zero, as parse_money
    # makes `-0.00` `0.00`.
    text = _text(value)
    return SqlRead(
        f"nullif({text}, '')::numeric",
        f"({_is_null(value)} OR ({_kind(value)} = 'string'"
        rf" AND ({text} = '' OR {text} ~ '^-?[0-9]{{1,15}}\.[0-9]{{2}}$')))",
    )


# Shopify's own form, with the hour, minute and second in range: PostgreSQL takes 24:00:00
# and a leap second, Python neither. A day past its month's end fails the cast, which sends
# the batch to Python too. Year 0 is no year to Python.
_SHOPIFY_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"


def sql_parse_timestamp(value: str) -> SqlRead:
    text = _text(value)
    return SqlRead(
        f"nullif({text}, '')::timestamptz",
        f"({_is_null(value)} OR ({_kind(value)} = 'string' AND ({text} = ''"
        f" OR ({text} ~ '{_SHOPIFY_TIME}' AND {text} !~ '^0000'))))",
    )


def sql_parse_shopify_id(value: str) -> SqlRead:
    # A gid ending in up to 18 digits, not all zeros; a JSON integer as large. Whatever else
    # parse_shopify_id takes (a `?` suffix, a digit string) is Python's.
    text = _text(value)
    return SqlRead(
        f"(CASE {_kind(value)} WHEN 'number' THEN {text}"
        f" ELSE substring({text} FROM '/([0-9]+)$') END)::bigint",
        f"coalesce(({_kind(value)} = 'string' AND {text} ~ '^gid://.*/0*[1-9][0-9]*$'"
        f" AND {text} ~ '/[0-9]{{1,18}}$')"
        f" OR ({_kind(value)} = 'number' AND {text} ~ '^[1-9][0-9]{{0,17}}$'), false)",
    )


def sql_optional_shopify_id(value: str) -> SqlRead:
    required = sql_parse_shopify_id(value)
    return SqlRead(
        f"(CASE WHEN NOT {_is_null(value)} THEN {required.value} END)",
        f"({_is_null(value)} OR {required.ok})",
    )


def sql_gid_or_id(value: str) -> SqlRead:
    # A GraphQL `{ id }` object, its id absent or null read as None, as `.get("id")` does.
    return sql_optional_shopify_id(
        f"(CASE WHEN {_kind(value)} = 'object' THEN {value} -> 'id' ELSE {value} END)"
    )


# Each parse function the bulk path reads in SQL, and its twin. A declaration whose parse
# has none here is read in Python (`field_reads` raises KeyError for it).
SQL_TWINS: dict[Parse, SqlParse] = {
    optional_text: sql_optional_text,
    lower_enum: sql_lower_enum,
    parse_bool: sql_parse_bool,
    parse_count: sql_parse_count,
    parse_money: sql_parse_money,
    parse_timestamp: sql_parse_timestamp,
    parse_shopify_id: sql_parse_shopify_id,
    optional_shopify_id: sql_optional_shopify_id,
    gid_or_id: sql_gid_or_id,
}


def _path(document: str, parts: tuple[str, ...]) -> tuple[str, str]:
    """The value at `parts` (SQL NULL if a null came on the way) and the condition that every
    key on the way is there: `read_fields` leaves a column out when one is missing, which a
    fixed column list cannot say, so such a document is Python's. Each step is an object or
    null (Python refuses anything else on the way)."""
    condition = "true"
    for depth in range(len(parts), 0, -1):
        at = f"({document} #> '{{{','.join(parts[:depth])}}}')"
        if depth == len(parts):
            condition = f"{at} IS NOT NULL"
        else:
            condition = (
                f"({at} IS NOT NULL AND ({_kind(at)} = 'null'"
                f" OR ({_kind(at)} = 'object' AND {condition})))"
            )
    value = f"({document} #> '{{{','.join(parts)}}}')"
    return value, condition


def field_reads(document: str, fields: tuple[Field, ...]) -> dict[str, SqlRead]:
    """The GraphQL readings of `fields` out of the `jsonb` expression `document` (a bulk
    line), each with its twin's `ok` and the presence of its path."""
    reads: dict[str, SqlRead] = {}
    for field in fields:
        if field.node is None:
            continue
        value, present = _path(document, tuple(field.node.split(".")))
        read = SQL_TWINS[field.parse](value)
        reads[field.column] = SqlRead(read.value, f"({present} AND {read.ok})")
    return reads


def child_reads(document: str, fields: tuple[Field, ...], *, created: bool) -> dict[str, SqlRead]:
    """`normalize_children.child_record`'s columns of a GraphQL node, `raw` included (the node
    without the bulk line's `__parentId`). `created`: the node carries `createdAt`, whose
    column a record has only when the key is there."""
    shopify_id = sql_parse_shopify_id(f"({document} -> 'id')")
    updated = sql_parse_timestamp(f"({document} -> 'updatedAt')")
    reads = {
        "shopify_id": shopify_id,
        "shopify_updated_at": updated,
        "raw": SqlRead(f"({document} - '__parentId')", f"{_kind(document)} = 'object'"),
    }
    if created:
        read = sql_parse_timestamp(f"({document} -> 'createdAt')")
        reads["shopify_created_at"] = SqlRead(
            read.value, f"({document} ? 'createdAt' AND {read.ok})"
        )
    else:
        reads["raw"] = SqlRead(
            reads["raw"].value, f"({reads['raw'].ok} AND NOT {document} ? 'createdAt')"
        )
    return reads | field_reads(document, fields)


def all_ok(reads: dict[str, SqlRead]) -> str:
    return " AND ".join(f"({read.ok})" for read in reads.values())


# A digit followed by an exponent: in a number (`1e2`, `2.5E-3`) or, rarely, in a string,
# which only sends that document to Python for nothing.
_EXPONENT = re.compile(rb"[0-9][eE][-+]?[0-9]")


def has_exponent(text: bytes) -> bool:
    return _EXPONENT.search(text) is not None
