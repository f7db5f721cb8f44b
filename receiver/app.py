"""The Starlette application factory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any, TypedDict

import httpx
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from backfill.maintenance import MaintenanceLoop
from backfill.queue import InProcessRunner, JobQueue, ProcrastinateQueue, procrastinate_app
from models import create_engine, create_session_factory, is_sqlite
from models.migrate import head_revision
from receiver.admin_pages import ADMIN_ROUTES
from receiver.api import MAX_ID, start_sync, sync_status
from receiver.backfill_env import HTTP_TIMEOUT, backfill_environment, maintenance_for
from receiver.coalesce import Coalescer
from receiver.errors import DATABASE_ERRORS, ApiError, api_error, database_unavailable
from receiver.health import healthz, readyz
from receiver.install import callback, install, token_exchange
from receiver.limits import BodyBudget, BodyDeadline
from receiver.logs import configure_logging_once
from receiver.metrics import metrics
from receiver.pages import home, replay_event, run_backfill, store_page
from receiver.runtime import tune_garbage_collector
from receiver.security import SecurityHeaders
from receiver.services import Services
from receiver.settings import Settings, positive_int
from receiver.stats import api_stats
from receiver.web import STATIC_DIR, SessionCookies, login_page, login_submit, logout
from receiver.webhooks import (
    WEBHOOK_BATCH_MAX,
    WEBHOOK_CLAIM_PATIENCE_SECONDS,
    WEBHOOK_PATH,
    BatchTransactions,
    ExceptionHandler,
    WebhookLane,
    batch_claims,
    quiet_acknowledged_webhooks,
    receive_webhook,
    store_batches_per_process,
    store_together,
)


def engine_options(settings: Settings) -> dict[str, Any]:
    """The web process's pool, and server-side limits on each of its PostgreSQL sessions:
    a statement or an idle transaction past them is ended by the server (503, retried)."""
    if is_sqlite(settings.database_url):
        return {}
    seconds = {
        "statement_timeout": settings.database_statement_timeout_seconds,
        "idle_in_transaction_session_timeout": (
            settings.database_idle_in_transaction_timeout_seconds
        ),
    }
    server_settings = {name: str(round(value * 1000)) for name, value in seconds.items()}
    return {
        "pool_size": settings.database_pool_size,
        "max_overflow": 0,
        "connect_args": {"server_settings": server_settings},
    }


NO_SUCH_ID = MAX_ID + 1


class IdConvertor(Convertor[int]):
    """`{name:id}`: a database id, always a bounded integer. A number beyond any 64-bit id
    (or beyond the 4,300 digits int() accepts) becomes NO_SUCH_ID without being converted,
    so the route still checks who asks first and then answers 404."""

    regex = "[0-9]+"

    def convert(self, value: str) -> int:
        digits = value.lstrip("0")
        if len(digits) > len(str(MAX_ID)) or int(digits or "0") > MAX_ID:
            return NO_SUCH_ID
        return int(digits or "0")

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


class State(TypedDict):
    services: Services


# How many web processes `serve` runs, for each of them to read: uvicorn builds the app in
# each process from an import string, with no arguments.
WEB_PROCESSES_ENV = "SHOPIFY_RECEIVER_WEB_PROCESSES"


def create_served_app() -> Starlette:
    """The app as `serve` runs it in each worker process: built, then the interpreter set up
    for a long-running process (`receiver.runtime`)."""
    app = create_app(web_processes=served_web_processes())
    tune_garbage_collector()
    return app


def served_web_processes() -> int:
    """How many web processes `serve` started (1 when it did not say). Set by hand to what
    is not a positive whole number, it is refused in one line, as every setting is."""
    return positive_int(os.environ, WEB_PROCESSES_ENV, 1)


def create_app(settings: Settings | None = None, *, web_processes: int = 1) -> Starlette:
    """The service's app. `web_processes`: how many processes serve it side by side (a
    store's webhook batches in flight are shared among them)."""
    configure_logging_once()
    quiet_acknowledged_webhooks()
    settings = settings or Settings.from_env()
    settings.apply_metafields()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        engine = create_engine(settings.database_url, **engine_options(settings))
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
            # Only PostgreSQL runs a store's batches side by side; SQLite writes one at a time.
            transactions = BatchTransactions(
                sessions,
                ahead_from=None if is_sqlite(settings.database_url) else engine.sync_engine.pool,
            )
            # Registered after the engine's disposal, so it runs first (LIFO).
            stack.push_async_callback(transactions.close)
            yield {
                "services": Services(
                    settings=settings,
                    engine=engine,
                    sessions=sessions,
                    secret_box=settings.secret_box(),
                    head_revision=head_revision(),
                    backfill=env,
                    job_queue=job_queue,
                    body_budget=BodyBudget(
                        settings.webhook_unverified_budget_bytes,
                        settings.webhook_small_body_bytes,
                    ),
                    webhook_batches=Coalescer(
                        partial(store_together, transactions),
                        max_batch=WEBHOOK_BATCH_MAX,
                        concurrency=store_batches_per_process(settings.database_url, web_processes),
                        claims=batch_claims,
                        patience=WEBHOOK_CLAIM_PATIENCE_SECONDS,
                    ),
                )
            }

    exception_handlers: dict[Any, ExceptionHandler] = {
        **{error: database_unavailable for error in DATABASE_ERRORS},
        ApiError: api_error,
    }
    return Starlette(
        routes=[
            # WebhookLane answers it first; the route keeps the path's 405 for other methods.
            Route(WEBHOOK_PATH, receive_webhook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/api/sync", start_sync, methods=["POST"]),
            Route("/api/sync/{job_id:id}", sync_status, methods=["GET"], name="sync_status"),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login_submit, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/api/stats", api_stats, methods=["GET"]),
            Route("/auth/install", install, methods=["GET"]),
            Route("/auth/callback", callback, methods=["GET"]),
            Route("/auth/token-exchange", token_exchange, methods=["POST"]),
            Route("/", home, methods=["GET"]),
            Route("/stores/{shop}", store_page, methods=["GET"]),
            Route("/stores/{shop}/events/{event_id:id}/replay", replay_event, methods=["POST"]),
            Route("/stores/{shop}/sync", run_backfill, methods=["POST"]),
            *ADMIN_ROUTES,
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            # Inside SecurityHeaders, so its 408 carries them; before any route takes a
            # database connection.
            Middleware(BodyDeadline, seconds=settings.http_body_timeout_seconds),
            Middleware(WebhookLane, exception_handlers=exception_handlers),
            Middleware(SessionCookies, secret_key=settings.secret_key.reveal()),
        ],
        exception_handlers=exception_handlers,
        lifespan=lifespan,
    )
