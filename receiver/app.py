"""The Starlette application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TypedDict

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from backfill.maintenance import MaintenanceLoop
from backfill.queue import InProcessRunner, JobQueue, ProcrastinateQueue, procrastinate_app
from models import create_engine, create_session_factory, is_sqlite
from models.migrate import head_revision
from receiver.api import start_sync, sync_status
from receiver.backfill_env import HTTP_TIMEOUT, backfill_environment, maintenance_for
from receiver.errors import DATABASE_ERRORS, ApiError, api_error, database_unavailable
from receiver.health import healthz, readyz
from receiver.logs import configure_logging_once
from receiver.metrics import metrics
from receiver.pages import home, replay_event, run_backfill, store_page
from receiver.security import SecurityHeaders
from receiver.services import Services
from receiver.settings import Settings
from receiver.stats import api_stats
from receiver.web import STATIC_DIR, SessionCookies, login_page, login_submit, logout
from receiver.webhooks import receive_webhook


def pool_options(settings: Settings) -> dict[str, int]:
    if is_sqlite(settings.database_url):
        return {}
    return {"pool_size": settings.database_pool_size, "max_overflow": 0}


class State(TypedDict):
    services: Services


def create_app(settings: Settings | None = None) -> Starlette:
    configure_logging_once()
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        engine = create_engine(settings.database_url, **pool_options(settings))
        sessions = create_session_factory(engine)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(engine.dispose)
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=HTTP_TIMEOUT))
            env = backfill_environment(settings, sessions, http)
            job_queue: JobQueue
            if is_sqlite(settings.database_url):
                runner = InProcessRunner(env)
                stack.push_async_callback(runner.stop)
                await runner.resume_interrupted()
                job_queue = runner
                maintenance = maintenance_for(settings)
                if maintenance is not None:
                    loop = MaintenanceLoop(env, maintenance)
                    loop.start()
                    # Registered after the runner's stop, so it stops first (LIFO).
                    stack.push_async_callback(loop.stop)
            else:
                # Web processes only enqueue; `shopify-receiver worker` processes run jobs.
                queue = ProcrastinateQueue(procrastinate_app(settings.database_url))
                stack.push_async_callback(queue.close)
                job_queue = queue
            yield {
                "services": Services(
                    settings=settings,
                    engine=engine,
                    sessions=sessions,
                    secret_box=settings.secret_box(),
                    head_revision=head_revision(),
                    backfill=env,
                    job_queue=job_queue,
                )
            }

    exception_handlers = {error: database_unavailable for error in DATABASE_ERRORS}
    return Starlette(
        routes=[
            Route("/webhooks/shopify", receive_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/api/sync", start_sync, methods=["POST"]),
            Route("/api/sync/{job_id:int}", sync_status, methods=["GET"], name="sync_status"),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login_submit, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/api/stats", api_stats, methods=["GET"]),
            Route("/", home, methods=["GET"]),
            Route("/stores/{shop}", store_page, methods=["GET"]),
            Route("/stores/{shop}/events/{event_id:int}/replay", replay_event, methods=["POST"]),
            Route("/stores/{shop}/sync", run_backfill, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(SessionCookies, secret_key=settings.secret_key.reveal()),
        ],
        exception_handlers={**exception_handlers, ApiError: api_error},
        lifespan=lifespan,
    )
