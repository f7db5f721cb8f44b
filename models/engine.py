"""Engine and session factory for PostgreSQL (asyncpg) and the embedded SQLite default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

# Shopify gives up on a delivery after 5 s, so waiting longer than this for a connection only
# turns a quick 503 (which Shopify retries) into a timeout.
CONNECT_TIMEOUT_SECONDS = 3.0
POOL_TIMEOUT_SECONDS = 2.0


# The drivers this service runs on, by backend; another driver is swapped for ours.
_OUR_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
_BACKEND_ALIASES = {"postgres": "postgresql", "postgresql": "postgresql", "sqlite": "sqlite"}
EXAMPLE_URLS = "postgresql://USER:PASSWORD@HOST:5432/DATABASE or sqlite:///PATH/receiver.db"


class UnsupportedDatabaseUrl(ValueError):
    pass


def normalize_database_url(url: str) -> str:
    """`postgresql://` and `postgres://` (what PostgreSQL's tools and hosting providers give)
    as `postgresql+asyncpg://`, `sqlite:///x` as `sqlite+aiosqlite:///x`.

    Left alone, SQLAlchemy would pick psycopg for the first, which refuses the connect options
    given to asyncpg (`invalid connection option "timeout"`), and has no plugin for `postgres`.
    """
    scheme, separator, rest = url.strip().partition("://")
    backend, _, _driver = scheme.lower().partition("+")
    if not separator or not backend:
        raise UnsupportedDatabaseUrl(f"is not a database URL; use {EXAMPLE_URLS}")
    if backend not in _BACKEND_ALIASES:
        raise UnsupportedDatabaseUrl(f"{backend} is not supported; use {EXAMPLE_URLS}")
    return f"{_OUR_DRIVERS[_BACKEND_ALIASES[backend]]}://{rest}"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, **options: Any) -> AsyncEngine:
    # A statement's parameters are shop data (emails, addresses, whole payloads): they must
    # never reach an error message, where they would be stored and logged.
    options.setdefault("hide_parameters", True)
    url = normalize_database_url(url)
    if is_sqlite(url):
        return _create_sqlite_engine(url, **options)
    options.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    connect_args = options.pop("connect_args", {})
    connect_args.setdefault("timeout", CONNECT_TIMEOUT_SECONDS)
    parsed = make_url(url)
    if "sslmode" in parsed.query:
        # libpq's spelling (psycopg, the job queue, reads it from the same URL); asyncpg takes
        # the same values as `ssl` and refuses `sslmode`.
        connect_args.setdefault("ssl", parsed.query["sslmode"])
        url = parsed.difference_update_query(["sslmode"]).render_as_string(hide_password=False)
    options.setdefault("json_serializer", dumps_json)
    engine = create_async_engine(url, connect_args=connect_args, **options)
    if not options.get("pool_pre_ping"):
        event.listen(engine.sync_engine, "checkout", _drop_closed_connection)
    return engine


# Types orjson would write but json.dumps refuses (datetimes, dataclasses) or writes its own way
# (str/int/dict subclasses, enums among them) are handed back to json.dumps, so what can be
# stored, and how, stays json.dumps's.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _not_plain_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is left to json.dumps")


def dumps_json(value: Any) -> str:
    """JSON text for a JSONB value: orjson, more than ten times faster than json.dumps on a
    webhook payload (each webhook writes two: the event's payload and the record's raw copy).

    orjson refuses what it cannot write exactly like json.dumps (integers beyond 64 bits, lone
    surrogates, non-string keys, the types passed through above); those take json.dumps, so
    every value it stored before is stored the same (jsonb keeps no spacing or escapes).
    """
    try:
        return orjson.dumps(value, default=_not_plain_json, option=_ORJSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value)


def _drop_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has closed (a restart) before it is used.

    asyncpg notices the closed socket on its own, so this costs no round trip, where
    SQLAlchemy's pool_pre_ping costs three with asyncpg (BEGIN, a ping, ROLLBACK) on every
    checkout: a webhook's whole budget of round trips. A connection that dies between this
    check and its use still fails that one request with a 503, which Shopify retries.
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def _create_sqlite_engine(url: str, **options: Any) -> AsyncEngine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30}, **options)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that "begin" below decides how
        # transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # A deferred transaction that reads and then writes can deadlock against another writer
        # and fail with "database is locked"; taking the write lock up front makes writers queue.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
