"""Liveness and readiness."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.migrate import current_revision
from receiver.errors import DATABASE_ERRORS
from receiver.services import Services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database answers and its schema is at this build's head revision."""
    services: Services = request.state.services
    try:
        async with services.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            revision = await current_revision(connection)
    except DATABASE_ERRORS:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    if revision != services.head_revision:
        return JSONResponse(
            {"status": "unavailable", "schema": revision, "expected": services.head_revision},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "schema": revision})
