"""Builds the backfill's environment from settings (shared by the app, `worker` and the CLI)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backfill.credentials import AppCredentials
from backfill.runner import BackfillEnvironment
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
