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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
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


async def fetch(
    session: AsyncSession, statement: ClauseElement, parameters: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """Run `statement` (built once, reused) with `parameters` in the session's transaction;
    its rows, as tuples. PostgreSQL only."""
    connection = await session.connection()
    return await fetch_on(connection, statement, parameters)


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
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
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
