"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypedDict

from starlette.applications import Starlette
from starlette.routing import Route

from models import create_engine, create_session_factory
from models.migrate import head_revision
from receiver.errors import DATABASE_ERRORS, ApiError, api_error, database_unavailable
from receiver.health import healthz, readyz
from receiver.services import Services
from receiver.settings import Settings
from receiver.webhooks import receive_webhook


class State(TypedDict):
    services: Services


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        engine = create_engine(settings.database_url)
        services = Services(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            secret_box=settings.secret_box(),
            head_revision=head_revision(),
        )
        try:
            yield {"services": services}
        finally:
            await engine.dispose()

    exception_handlers = {error: database_unavailable for error in DATABASE_ERRORS}
    return Starlette(
        routes=[
            Route("/webhooks/shopify", receive_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={**exception_handlers, ApiError: api_error},
        lifespan=lifespan,
    )
