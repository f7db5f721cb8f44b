"""One error base with a status code, rendered as JSON `{"error": ...}` in one place."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

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


DATABASE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,  # OperationalError, InterfaceError and what a driver raises mid-query
    sa_exc.TimeoutError,  # no connection free in the pool in time
    OSError,  # connection refused or reset before the driver wrapped it
    asyncio.TimeoutError,
)
