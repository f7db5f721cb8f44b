"""Hot statements run on the session's asyncpg connection itself (PostgreSQL only).

A webhook batch runs about fifteen statements, each built once and reused with new values.
SQLAlchemy's execution of such a statement (cache lookup, execution context, parameter and
result objects, the hop into a greenlet) costs about twice what asyncpg's own execution costs
(300 vs 140 us of CPU per statement measured side by side), and on a webhook that is a tenth of
the CPU. Here a statement is compiled once by SQLAlchemy's PostgreSQL dialect (its SQL, the
order of its parameters, each parameter's bind processor, all through public APIs) and then
sent straight to the driver inside the session's transaction.

Errors keep SQLAlchemy's shape: the driver's are raised as `sqlalchemy.exc.DBAPIError` (with
`orig` carrying the driver's SQLSTATE), and a lost connection is invalidated in the pool, so
callers handle them exactly as they handle a statement run through SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import asyncpg
import orjson
from sqlalchemy import String
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.types import TypeEngine


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Per positional parameter: its name, and the bind processor its type applies (or None).
    names: tuple[str, ...]
    processors: tuple[Callable[[Any], Any] | None, ...]
    compiled: SQLCompiler  # fills in the values a statement carries itself


# Statements are module-level constants built once, so the cache is bounded by the code (and
# by _MAX_COMPILED should a caller build one per call).
_COMPILED: dict[tuple[int, str], tuple[ClauseElement, _Compiled]] = {}
_MAX_COMPILED = 500

# The driver's errors that mean the connection itself is gone (a connection the server closed
# under a statement can also surface as an internal client error: then it reports closed).
_CONNECTION_LOST = (asyncpg.ConnectionDoesNotExistError, ConnectionError, OSError)
# SQLSTATEs of a server ending the session: connection exceptions (08) and operator
# intervention that closes it (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot
# connect now); 57014 (a cancelled statement) leaves the connection usable.
_CONNECTION_ENDED = ("08", "57P01", "57P02", "57P03")


def bind_processor(dialect: Dialect, type_: TypeEngine[Any]) -> Callable[[Any], Any] | None:
    """What SQLAlchemy does to a value of `type_` before the driver gets it (None: nothing)."""
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _compile(dialect: Dialect, statement: ClauseElement) -> _Compiled:
    key = (id(statement), dialect.name)
    cached = _COMPILED.get(key)
    if cached is not None and cached[0] is statement:
        return cached[1]
    compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("an expanding IN is rendered per call: bind an array (= ANY) instead")
    if compiled.insert_prefetch or compiled.update_prefetch:
        # Python-side column defaults are computed by SQLAlchemy's execution, not here.
        columns = [column.name for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        raise ValueError(f"give values for {', '.join(columns)}: their defaults are Python's")
    names = tuple(compiled.positiontup or ())
    processors = tuple(bind_processor(dialect, compiled.binds[name].type) for name in names)
    result = _Compiled(compiled.string, names, processors, compiled)
    if len(_COMPILED) >= _MAX_COMPILED:
        # Only a caller building a statement per call gets here: forget, don't grow.
        _COMPILED.clear()
    # Holding the statement keeps its id from being reused by another object.
    _COMPILED[key] = (statement, result)
    return result


# Where `session_connection` keeps the session's connection for its current transaction, and
# `driver_of` a pooled connection's asyncpg connection: each lookup through SQLAlchemy is a
# hop into a greenlet (about 12 us), and a webhook batch's statements made two per statement.
_SESSION_CONNECTION = "models.driver.connection"
_DRIVER = "models.driver.asyncpg"


async def session_connection(session: AsyncSession) -> AsyncConnection:
    """`session.connection()`, looked up once per transaction of the session."""
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_SESSION_CONNECTION)
    if (
        held is not None
        and transaction is not None
        and held[0] is transaction
        and transaction.is_active
    ):
        return cast(AsyncConnection, held[1])
    connection = await session.connection()
    session.info[_SESSION_CONNECTION] = (session.sync_session.get_transaction(), connection)
    return connection


async def driver_of(connection: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under `connection`, kept in the pooled connection's `info`
    (which lives exactly as long as that DBAPI connection)."""
    info = connection.info
    driver = info.get(_DRIVER)
    if driver is None:
        raw = await connection.get_raw_connection()
        driver = info[_DRIVER] = raw.driver_connection
        assert driver is not None
    return cast(asyncpg.Connection, driver)


async def fetch(
    session: AsyncSession, statement: ClauseElement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """Run `statement` (built once, reused) with `parameters` in the session's transaction;
    its rows, as tuples. PostgreSQL only."""
    return await fetch_on(await session_connection(session), statement, parameters)


async def fetch_on(
    connection: AsyncConnection, statement: ClauseElement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    compiled = _compile(connection.dialect, statement)
    values = compiled.compiled.construct_params(parameters)
    arguments = [
        value if process is None or value is None else process(value)
        for process, value in zip(
            compiled.processors, (values[name] for name in compiled.names), strict=True
        )
    ]
    driver = await driver_of(connection)
    if not driver.is_in_transaction():
        # SQLAlchemy begins its transaction with its first statement: let it, so that this
        # one runs inside that transaction rather than committing on its own.
        await connection.exec_driver_sql("SELECT 1")
    try:
        return await driver.fetch(compiled.sql, *arguments)  # type: ignore[no-any-return]
    except Exception as exc:  # the driver's, all of them: SQLAlchemy wraps them alike
        lost = (
            isinstance(exc, _CONNECTION_LOST)
            or str(getattr(exc, "sqlstate", "")).startswith(_CONNECTION_ENDED)
            or driver.is_closed()
        )
        if lost:
            await connection.invalidate(exc)
        raise sa_exc.DBAPIError(compiled.sql, None, exc, connection_invalidated=lost) from exc


# --------------------------------------------------------------------------------------------
# Many rows as one parameter: a JSON array of objects, one per row, read back in the statement
# (`FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS given(value)`). orjson writes a batch's
# rows in one call, where one array parameter per column cost the driver a type test and an
# encoder call per value (a webhook's records carry hundreds).

ROWS_PARAMETER = "rows"
ROWS_SOURCE = "given.value"  # how a statement names the row being read


def unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """A column's type without its length: an explicit cast to VARCHAR(32) silently cuts a
    longer value, where the INSERT's own assignment to the column refuses it (22001), as
    every other write path does."""
    return String() if isinstance(type_, String) and type_.length else type_


def is_json(dialect: Dialect, type_: TypeEngine[Any]) -> bool:
    return isinstance(type_.dialect_impl(dialect), sqltypes.JSON)


def json_field(dialect: Dialect, type_: TypeEngine[Any], name: str) -> str:
    """SQL for one column's value in the row being read, as the column's type. A JSON column
    keeps a JSON null as JSON null (`->`), as binding None to it stores; the rest are read as
    text and cast, as a text parameter would be."""
    if is_json(dialect, type_):
        return f"{ROWS_SOURCE} -> '{name}'"
    sql_type = dialect.type_compiler_instance.process(unbounded(type_))
    return f"CAST({ROWS_SOURCE} ->> '{name}' AS {sql_type})"


Check = Callable[[Any], Any]


def json_checks(
    dialect: Dialect, types: Mapping[str, TypeEngine[Any]]
) -> tuple[tuple[str, Check], ...]:
    """Per column whose type checks or converts a value on the way in (a money amount must be
    a Decimal, a time must carry its zone), that type's own bind processor: rows written as
    JSON pass the same checks as rows bound column by column. JSON columns go as they are."""
    checks = []
    for name, type_ in types.items():
        if is_json(dialect, type_):
            continue
        process = bind_processor(dialect, type_)
        if process is not None:
            checks.append((name, process))
    return tuple(checks)


class JsonText:
    """JSON text already written (a webhook's body as it came), which `rows_json` places in
    its array as it is instead of writing the parsed value again. (Not a dataclass: orjson
    would write a dataclass's fields.)"""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


def rows_json(rows: Sequence[Mapping[str, Any]], checks: Sequence[tuple[str, Check]]) -> str:
    """The rows as one JSON array, each checked column's value as its type binds it (a time
    in UTC: orjson would round an offset of seconds to the minute). Amounts go as strings
    (exact), times in RFC 3339, JsonText as the text it holds; what orjson cannot write (an
    integer past 64 bits) takes json.dumps, as a JSON column's value does on its own
    (models.engine)."""
    written = list(rows)
    for name, check in checks:
        for index, row in enumerate(written):
            value = row[name]
            if value is not None and (bound := check(value)) is not value:
                written[index] = {**row, name: bound}  # the caller's row stays as it was
    try:
        return orjson.dumps(written, default=_orjson_default).decode()
    except TypeError:
        return json.dumps(written, default=_json_default)


def _orjson_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, JsonText):
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, JsonText):
        return json.loads(value.text)
    raise TypeError(f"{type(value).__name__} cannot be written as JSON")
