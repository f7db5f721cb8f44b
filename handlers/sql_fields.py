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
bytes) is therefore not for this path either. A value the twin calls `ok` but PostgreSQL cannot
cast (the 30th of February) fails the statement, which sends the batch to Python as well.

The bulk ingest of orders (backfill.bulk_sql) reads with the twins' values alone, trusting
the result's shapes; `python -m bench.extraction` measures the checks beside it
(bench/RESULTS.md has what they cost).
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


# A twin reads a `jsonb` value, by the name `Reading` computed it under (SQL NULL when a null
# came on the way to it: `{"customer": null}` read at `customer.id`, which Python reads as None
# too); `let` names one more expression it needs, computed once a row.
Let = Callable[[str], str]
SqlParse = Callable[[str, Let], SqlRead]


def _text(value: str, let: Let) -> str:
    """The scalar's text: a string unescaped, a number as jsonb writes it, null as NULL."""
    return let(f"{value} #>> '{{}}'")


def _kind(value: str, let: Let) -> str:
    """The value's JSON type, `null` also for SQL NULL (a null on the way)."""
    return let(f"coalesce(jsonb_typeof({value}), 'null')")


def sql_optional_text(value: str, let: Let) -> SqlRead:
    # Numbers are Python's str(), whose spelling of a float is not jsonb's: left to Python.
    return SqlRead(f"nullif({_text(value, let)}, '')", f"{_kind(value, let)} IN ('null', 'string')")


def sql_lower_enum(value: str, let: Let) -> SqlRead:
    # Printable ASCII only, where str.lower and lower() under the C collation agree.
    text = sql_optional_text(value, let)
    return SqlRead(
        f'lower({text.value} COLLATE "C")',
        f"({text.ok} AND coalesce({_text(value, let)} !~ '[^ -~]', true))",
    )


def sql_parse_bool(value: str, let: Let) -> SqlRead:
    return SqlRead(f"{_text(value, let)}::boolean", f"{_kind(value, let)} IN ('null', 'boolean')")


def sql_parse_count(value: str, let: Let) -> SqlRead:
    # JSON integers up to 18 digits (below 2**63); a digit string or a float is Python's.
    kind, text = _kind(value, let), _text(value, let)
    return SqlRead(
        f"{text}::bigint",
        f"({kind} = 'null' OR ({kind} = 'number' AND {text} ~ '^[0-9]{{1,18}}$'))",
    )


def _empty_null_or_matching(value: str, let: Let, pattern: str, cast: str) -> SqlRead:
    """A string read as `cast` when it matches `pattern`; null and "" read as NULL."""
    kind, text = _kind(value, let), _text(value, let)
    return SqlRead(
        f"nullif({text}, '')::{cast}",
        f"({kind} = 'null' OR ({kind} = 'string' AND ({text} = '' OR {text} ~ '{pattern}')))",
    )


def sql_parse_money(value: str, let: Let) -> SqlRead:
    # `_PLAIN_MONEY`'s amounts; PostgreSQL's numeric has no negative zero, as parse_money
    # makes `-0.00` `0.00`.
    return _empty_null_or_matching(value, let, r"^-?[0-9]{1,15}\.[0-9]{2}$", "numeric")


# Shopify's own form, with the hour, minute and second in range: PostgreSQL takes 24:00:00
# and a leap second, Python neither, and year 0, which is no year to Python, is left out
# with the first millennium. A day past its month's end fails the cast, which sends the
# batch to Python too.
_SHOPIFY_TIME = r"^[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"


def sql_parse_timestamp(value: str, let: Let) -> SqlRead:
    return _empty_null_or_matching(value, let, _SHOPIFY_TIME, "timestamptz")


def sql_parse_shopify_id(value: str, let: Let) -> SqlRead:
    # A gid ending in up to 18 digits, not all zeros; a JSON integer as large. Whatever else
    # parse_shopify_id takes (a `?` suffix, a digit string) is Python's. The last segment is
    # cut without a regular expression: `.*/` cost more than the rest of a line item's row.
    kind, text = _kind(value, let), _text(value, let)
    number = let(
        f"CASE {kind} WHEN 'number' THEN {text}"
        f" WHEN 'string' THEN reverse(split_part(reverse({text}), '/', 1)) END"
    )
    return SqlRead(
        f"{number}::bigint",
        f"coalesce({number} ~ '^[0-9]{{1,18}}$' AND ltrim({number}, '0') <> ''"
        f" AND ({kind} = 'number' OR starts_with({text}, 'gid://')), false)",
    )


def sql_optional_shopify_id(value: str, let: Let) -> SqlRead:
    kind = _kind(value, let)
    required = sql_parse_shopify_id(value, let)
    return SqlRead(required.value, f"({kind} = 'null' OR {required.ok})")


def sql_gid_or_id(value: str, let: Let) -> SqlRead:
    # A GraphQL `{ id }` object, its id absent or null read as None, as `.get("id")` does.
    kind = _kind(value, let)
    return sql_optional_shopify_id(
        let(f"CASE WHEN {kind} = 'object' THEN {value} -> 'id' ELSE {value} END"), let
    )


# Each parse function the bulk path reads in SQL, and its twin. A declaration whose parse
# has none here is read in Python (`Reading` raises KeyError for it).
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


_LET_NAME = re.compile(r"\b_j[0-9]+\b")
# A key's or a path's value as text, `(doc -> 'key') #>> '{}'`, is `doc ->> 'key'`: one operator,
# where the first of two copies the value out as a `jsonb` of its own (a line item's title
# over 209,113 lines: 10 ms against 27). Only a whole let's expression is rewritten.
_AS_TEXT = re.compile(r"^\((\w+) (->|#>) ('[^']*')\) #>> '\{\}'$")


class Reading:
    """Columns read in SQL out of one `jsonb` document (a bulk line): each column's value and
    `ok` (`SqlRead`), over the values they share (`let`), each computed once a row behind a
    fence (inlined, PostgreSQL would compute a value again for each of its uses)."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.lets: dict[str, str] = {}  # expression -> its name
        self._named: dict[str, str] = {}
        self.reads: dict[str, SqlRead] = {}

    def let(self, expression: str) -> str:
        # Computed beside the others, so a name among them is spelled out again: a level of
        # its own for each depth cost a third more (each level copies the row).
        expression = _LET_NAME.sub(lambda found: f"({self._named[found[0]]})", expression)
        expression = _AS_TEXT.sub(r"\1 \2> \3", expression)
        name = self.lets.get(expression)
        if name is None:
            name = self.lets[expression] = f"_j{len(self.lets)}"
            self._named[name] = expression
        return name

    def parsed(self, column: str, parse: Parse, expression: str) -> None:
        """`column` is `parse` of the `jsonb` `expression` (KeyError: a parse with no twin)."""
        self.reads[column] = SQL_TWINS[parse](self.let(expression), self.let)

    def fields(self, fields: tuple[Field, ...]) -> None:
        """The GraphQL readings of declared columns, each with its path's presence."""
        for field in fields:
            if field.node is None:
                continue
            value, present = self._path(tuple(field.node.split(".")))
            read = SQL_TWINS[field.parse](value, self.let)
            self.reads[field.column] = SqlRead(read.value, f"({present} AND {read.ok})")

    def _path(self, parts: tuple[str, ...]) -> tuple[str, str]:
        """The value at `parts` (SQL NULL if a null came on the way) and the condition that
        every key on the way is there: `read_fields` leaves a column out when one is missing,
        which a fixed column list cannot say, so such a document is Python's. Each step is an
        object or null (Python refuses anything else on the way)."""
        condition = "true"
        for depth in range(len(parts), 0, -1):
            at = self.let(self._at(parts[:depth]))
            if depth == len(parts):
                condition = f"{at} IS NOT NULL"
            else:
                kind = self.let(f"jsonb_typeof({at})")
                condition = (
                    f"({at} IS NOT NULL AND ({kind} = 'null'"
                    f" OR ({kind} = 'object' AND {condition})))"
                )
        return self.let(self._at(parts)), condition

    def _at(self, parts: tuple[str, ...]) -> str:
        # A path of one key is `->`, which reads it at under half the cost of `#>`.
        if len(parts) == 1:
            return f"{self.document} -> '{parts[0]}'"
        return f"{self.document} #> '{{{','.join(parts)}}}'"

    def ok(self) -> str:
        return " AND ".join(f"({read.ok})" for read in self.reads.values())

    def select(self, source: str, keep: tuple[str, ...] = (), *, checked: bool = True) -> str:
        """Each column by its name, `ok`, and `keep` (columns of `source`), from `source`, a
        SELECT that has the document. Not `checked`: the values alone, without `ok` and the
        shared values only it needs (the bulk ingest, which trusts the result's shapes)."""
        columns = [*keep, *(f"{read.value} AS {name}" for name, read in self.reads.items())]
        if checked:
            columns.append(f"{self.ok()} AS ok")
        used = set(_LET_NAME.findall(" ".join(columns)))
        lets = "".join(
            f", {expression} AS {name}" for expression, name in self.lets.items() if name in used
        )
        return (
            f"SELECT {', '.join(columns)}"
            f" FROM (SELECT source.*{lets} FROM ({source}) source OFFSET 0) s"
        )


def child_reading(document: str, fields: tuple[Field, ...], *, created: bool) -> Reading:
    """`normalize_children.child_record`'s columns of a GraphQL node, `raw` included (the node
    as grouped: `BulkGrouper` took the bulk line's `__parentId` out). `created`: the node
    carries `createdAt`, whose column a record has only when the key is there."""
    reading = Reading(document)
    reading.parsed("shopify_id", parse_shopify_id, f"{document} -> 'id'")
    reading.parsed("shopify_updated_at", parse_timestamp, f"{document} -> 'updatedAt'")
    has_created = f"{document} ? 'createdAt'"
    node = f"jsonb_typeof({document}) = 'object'"
    if created:
        reading.parsed("shopify_created_at", parse_timestamp, f"{document} -> 'createdAt'")
        at = reading.reads["shopify_created_at"]
        reading.reads["shopify_created_at"] = SqlRead(at.value, f"({has_created} AND {at.ok})")
    else:
        node = f"({node} AND NOT {has_created})"
    reading.reads["raw"] = SqlRead(document, node)
    reading.fields(fields)
    return reading


# A digit followed by an exponent: in a number (`1e2`, `2.5E-3`) or, rarely, in a string,
# which only sends that document to Python for nothing.
_EXPONENT = re.compile(rb"[0-9][eE][-+]?[0-9]")


def has_exponent(text: bytes) -> bool:
    return _EXPONENT.search(text) is not None
