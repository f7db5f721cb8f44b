"""One error base with a status code, rendered as JSON `{"error": ...}` in one place."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
from collections.abc import Iterator

from cryptography.fernet import InvalidToken
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.encryption import missing_key_advice
from models.engine import CONNECT_TIMEOUT_SECONDS

log = logging.getLogger("shopify_receiver.errors")


class ApiError(Exception):
    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceUnavailable(ApiError):
    status_code = 503


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """The database is down, restarting or out of connections: Shopify retries a 503."""
    log.error("database.unavailable path=%s error=%s", request.url.path, type(exc).__name__)
    return JSONResponse(
        {"error": "database unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


# The database out of reach, whatever the statement: no connection free in the pool in time,
# connection refused or reset before (or as) the driver wrapped it.
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (
    sa_exc.TimeoutError,
    sa_exc.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)
# What answers 503: those, and what a driver raises mid-query (OperationalError and the rest).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, *DATABASE_UNREACHABLE)


# SQLSTATEs PostgreSQL answers to setup mistakes (asyncpg and psycopg both carry `sqlstate`).
_NO_DATABASE = "3D000"
_WRONG_PASSWORD = "28P01"
_LOGIN_REFUSED = "28000"
_NO_TABLE = "42P01"
_NO_PRIVILEGE = "42501"
_STARTING_OR_STOPPING = "57P03"
_NO_CONNECTION_SLOTS = "53300"
# What asyncio says when no address of the host accepted the connection (`localhost` tries
# ::1 and 127.0.0.1, and the error is then a plain OSError without errno).
_UNREACHABLE_PREFIXES = ("Connect call failed", "Multiple exceptions")


def database_address(database_url: str) -> str:
    """Where DATABASE_URL points, without its password: `host:port` or the SQLite file."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or 5432}"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps (SQLAlchemy's `orig`, causes, contexts, the members of an
    exception group), each once."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        error = pending.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        for inner in (getattr(error, "orig", None), error.__cause__, error.__context__):
            if isinstance(inner, BaseException):
                pending.append(inner)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _postgresql_refusal(error: BaseException, sqlstate: str, database_url: str) -> str | None:
    url = make_url(database_url)
    address = database_address(database_url)
    role = url.username or "(your login name)"
    said = _first_line(error)
    if sqlstate == _NO_DATABASE:
        return (
            f"database {url.database} does not exist at {address}: create it "
            f"(`createdb -h {url.host or 'localhost'} -p {url.port or 5432} {url.database}`), "
            "then run `shopify-receiver migrate`"
        )
    if sqlstate == _WRONG_PASSWORD:
        return f"PostgreSQL at {address} refused role {role}'s password: correct DATABASE_URL"
    if sqlstate == _LOGIN_REFUSED:
        return (
            f"PostgreSQL at {address} refused the login ({said}): correct the role in "
            "DATABASE_URL, or allow it in pg_hba.conf"
        )
    if sqlstate == _NO_TABLE:
        return (
            f"the schema of database {url.database} at {address} is not migrated ({said}): "
            "run `shopify-receiver migrate`"
        )
    if sqlstate == _NO_PRIVILEGE:
        return (
            f"database role {role} is not allowed to do this ({said}): run "
            "`shopify-receiver migrate` as the tables' owner and grant this role what "
            "README's 'Database roles' lists"
        )
    if sqlstate == _STARTING_OR_STOPPING:
        return f"the database at {address} is starting up or shutting down: retry in a moment"
    if sqlstate == _NO_CONNECTION_SLOTS:
        return (
            f"the database at {address} has no connection slots left: stop idle clients or "
            "raise max_connections"
        )
    return None


def describe_operational_error(exc: BaseException, database_url: str) -> str | None:
    """One line saying what is wrong with the set-up and what to do, for the mistakes an
    operator makes (database down or misnamed, schema not migrated, grants missing, an
    encryption key gone); None for anything else, which is a bug to see in full."""
    address = database_address(database_url)
    for error in _causes(exc):
        if isinstance(error, InvalidToken):
            return missing_key_advice(
                "a stored access token or webhook secret",
                option="--access-token TOKEN (or --webhook-secret SECRET)",
            )
        sqlstate = getattr(error, "sqlstate", None)
        if isinstance(sqlstate, str):
            described = _postgresql_refusal(error, sqlstate, database_url)
            if described is not None:
                return described
        if isinstance(error, sqlite3.OperationalError):
            said = _first_line(error)
            if said.startswith("no such table"):
                # The embedded database is migrated by every command; another SQLite file
                # (an old copy, a typo in DATABASE_URL) may not be.
                return f"the {address} is not migrated ({said}): run `shopify-receiver migrate`"
            if "unable to open database file" in said:
                return (
                    f"cannot open the {address}: make sure its directory exists and is "
                    "writable, or correct DATABASE_URL"
                )
        if isinstance(error, OSError) and error.filename and not isinstance(error, TimeoutError):
            # The SQLite file's directory, or var/ for the development secrets.
            return (
                f"cannot use {error.filename} ({error.strerror}): check the path and its "
                "permissions, or correct DATABASE_URL"
            )
        if isinstance(error, socket.gaierror):
            host = make_url(database_url).host
            return (
                f"cannot resolve the database host {host} ({error.strerror}): correct DATABASE_URL"
            )
        if isinstance(error, TimeoutError):
            return (
                f"the database at {address} is not answering (no reply within "
                f"{CONNECT_TIMEOUT_SECONDS:g} s): check that it runs and that DATABASE_URL "
                "names it"
            )
        if isinstance(error, ConnectionRefusedError) or (
            isinstance(error, OSError) and str(error).startswith(_UNREACHABLE_PREFIXES)
        ):
            return (
                f"the database at {address} is not answering (connection refused): start "
                "PostgreSQL there, or correct DATABASE_URL"
            )
    return None
