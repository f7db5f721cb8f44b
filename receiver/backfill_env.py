"""Builds the backfill's environment from settings (shared by the app, `worker` and the CLI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.credentials import AppCredentials
from backfill.maintenance import Maintenance
from backfill.runner import BackfillEnvironment
from models import create_engine, create_session_factory
from receiver.settings import Settings

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def backfill_environment(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
    **overrides: Any,
) -> BackfillEnvironment:
    app = None
    if settings.api_key and settings.api_secrets:
        app = AppCredentials(settings.api_key, settings.api_secrets[0].reveal())
    return BackfillEnvironment(
        sessions=sessions,
        http=http,
        box=settings.secret_box(),
        admin_base_url=settings.admin_base_url,
        api_version=settings.api_version,
        app=app,
        **({"lease": timedelta(seconds=settings.backfill_lease_seconds)} | overrides),
    )


def maintenance_for(settings: Settings) -> Maintenance | None:
    """The periodic checks' settings, or None when PERIODIC_CHECKS is off."""
    if not settings.periodic_checks:
        return None
    return Maintenance(
        webhook_url=settings.webhook_url,
        watchdog_interval=timedelta(seconds=settings.watchdog_interval_seconds),
        reconcile_interval=timedelta(seconds=settings.reconcile_interval_seconds),
        event_max_attempts=settings.event_max_attempts,
    )


@asynccontextmanager
async def admin_environment(settings: Settings) -> AsyncIterator[BackfillEnvironment]:
    """A database engine and an HTTP client for one command (`backfill`, `reconcile`, ...),
    both closed when it ends."""
    engine = create_engine(settings.database_url)
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
            yield backfill_environment(settings, create_session_factory(engine), http)
    finally:
        await engine.dispose()
