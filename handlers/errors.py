"""Error text that is safe to store and log: it never carries a value from a payload or a row.

A database error's own text is not safe. SQLAlchemy renders `[parameters: ...]` (the whole
record: buyer email, IP, the raw payload), asyncpg's DataError quotes the offending argument
("invalid input for query argument $3: 'ada@example.org'"), and PostgreSQL's DETAIL names key
values. Such text ended up in `webhook_events.error` and in WARNING log lines, where
customers/redact could not reach it. So a database error is described by its parts that are
schema, not data: the error class, SQLSTATE, and the constraint, table and column names.
"""

from __future__ import annotations

import re

from sqlalchemy import exc as sa_exc

MAX_ERROR_LENGTH = 4000
# SQLite's constraint messages name the constraint and columns ("UNIQUE constraint failed:
# customers.tenant_id, customers.shopify_id"), never a value.
_SQLITE_CONSTRAINT = re.compile(r"(UNIQUE|NOT NULL|CHECK|FOREIGN KEY) constraint failed(: [^\n]*)?")
_NAME_ATTRIBUTES = ("constraint_name", "table_name", "column_name")


def error_text(exc: BaseException) -> str:
    """`ClassName: message` for our own errors; for a database error, only what names the
    schema (never its message, which may quote values)."""
    if isinstance(exc, sa_exc.StatementError):
        return _database_error_text(exc)[:MAX_ERROR_LENGTH]
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def may_quote_data(exc: BaseException) -> bool:
    """Whether a traceback of `exc` could print shop data (a database error's message or one
    it was raised from): log such errors by `error_text` only, without exc_info."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sa_exc.StatementError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _database_error_text(exc: sa_exc.StatementError) -> str:
    parts = [type(exc).__name__]
    original = exc.orig
    if original is not None:
        parts.append(type(original).__name__)
        driver_error = original.__cause__ or original
        sqlstate = getattr(original, "sqlstate", None) or getattr(driver_error, "sqlstate", None)
        if isinstance(sqlstate, str):
            parts.append(f"sqlstate={sqlstate}")
        for attribute in _NAME_ATTRIBUTES:
            name = getattr(driver_error, attribute, None)
            if isinstance(name, str) and name:
                parts.append(f"{attribute.removesuffix('_name')}={name}")
        sqlite_name = getattr(original, "sqlite_errorname", None)
        if isinstance(sqlite_name, str):
            parts.append(sqlite_name)
            match = _SQLITE_CONSTRAINT.match(str(original))
            if match:
                parts.append(match.group(0)[:300])
    return " ".join(parts)
