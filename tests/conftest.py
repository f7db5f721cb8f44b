"""Shared fixtures: a real PostgreSQL database and an SQLite file, each migrated once, and the
app served over real HTTP on loopback for each.

PostgreSQL is required: when it cannot be reached the suite errors loudly instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backfill.queue import InProcessRunner
from models import Base, create_engine, create_session_factory
from models import migrate as migrations
from receiver.app import create_app
from receiver.limits import server_config
from receiver.settings import Secret, Settings

# In CI the fuzzers draw the same examples every run, so a landing never depends on luck;
# locally they explore new inputs each time (and replay past failures from .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# Where the test databases are created; CI and the README use this machine's local server.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
APP_SECRET = "shpss_current_app_secret"
OLD_APP_SECRET = "shpss_previous_app_secret"
TEST_ENCRYPTION_KEY = "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5IT0="
TEST_BODY_LIMIT = 64 * 1024
# Bounds on waiting for a served app: its startup, and its background jobs to stop.
STARTUP_SECONDS = 30.0
SETTLE_SECONDS = 30.0
BACKENDS = ("postgresql", "sqlite")


# The service's own PostgreSQL role: neither owner nor superuser, so row-level security binds
# it. Tests set data up and read it back as the owner; the served app connects as this role.
APP_ROLE = "receiver_app"


def as_app_role(database_url: str) -> str:
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return database_url
    return url.set(username=APP_ROLE, password=None).render_as_string(hide_password=False)


def settings_for(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": as_app_role(database_url),
        "api_secrets": (Secret(APP_SECRET), Secret(OLD_APP_SECRET)),
        "secret_key": Secret("test-session-key"),
        "encryption_keys": (Secret(TEST_ENCRYPTION_KEY),),
        "webhook_max_body_bytes": TEST_BODY_LIMIT,
        # Tests start the watchdog and reconcile themselves, never on a timer behind their back.
        "periodic_checks": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def _create_postgres_database() -> str:
    name = f"shopify_receiver_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        raise RuntimeError(
            f"PostgreSQL is required for the test suite and is not reachable at "
            f"{POSTGRES_ADMIN_URL} ({type(exc).__name__}: {exc}). Start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or point TEST_POSTGRES_URL at a server."
        ) from exc
    finally:
        await admin.dispose()
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


async def _drop_postgres_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def _grant_app_role(url: str) -> None:
    """What README's "Database roles" asks an operator to run, for the test database."""
    name = make_url(url).database
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(
                text(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                    f"'{APP_ROLE}') THEN CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS; "
                    "END IF; END $$"
                )
            )
            for statement in (
                f'GRANT CONNECT ON DATABASE "{name}" TO {APP_ROLE}',
                f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "
                f"TO {APP_ROLE}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}",
                f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO {APP_ROLE}",
            ):
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
async def postgresql_url() -> AsyncIterator[str]:
    url = await _create_postgres_database()
    await asyncio.to_thread(migrations.upgrade, url)
    await _grant_app_role(url)
    yield url
    await _drop_postgres_database(url)


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'receiver.db'}"
    await asyncio.to_thread(migrations.upgrade, url)
    return url


@dataclass
class Backend:
    name: str
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]

    async def truncate(self) -> None:
        tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
        async with self.engine.begin() as connection:
            if self.name == "postgresql":
                # procrastinate's queue too: ids restart, and a stale job holding the queueing
                # lock "sync-job-1" would swallow the next test's job 1.
                queue_tables = ["procrastinate_jobs", "procrastinate_periodic_defers"]
                await connection.execute(
                    text(f"TRUNCATE {', '.join(tables + queue_tables)} RESTART IDENTITY CASCADE")
                )
            else:
                for table in tables:
                    await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session", params=BACKENDS)
async def backend_session(
    request: pytest.FixtureRequest, postgresql_url: str, sqlite_url: str
) -> AsyncIterator[Backend]:
    url = {"postgresql": postgresql_url, "sqlite": sqlite_url}[request.param]
    engine = create_engine(url)
    yield Backend(request.param, url, engine, create_session_factory(engine))
    await engine.dispose()


@pytest.fixture
async def backend(
    backend_session: Backend, served_apps: dict[str, ServedApp]
) -> AsyncIterator[Backend]:
    """A database of the parametrised kind, emptied before each test, with no job of an
    earlier test still running in the app served on it."""
    served = served_apps.get(backend_session.name)
    if served is not None:
        await served.settle()
    await backend_session.truncate()
    yield backend_session
    served = served_apps.get(backend_session.name)
    if served is not None:
        await served.settle()


@pytest.fixture
async def pg(postgresql_url: str) -> AsyncIterator[Backend]:
    """PostgreSQL only, for behaviour that SQLite cannot show (real concurrent writers)."""
    engine = create_engine(postgresql_url)
    backend = Backend("postgresql", postgresql_url, engine, create_session_factory(engine))
    await backend.truncate()
    yield backend
    await engine.dispose()


@pytest.fixture
async def app_sessions(pg: Backend) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on `pg` as the service's role: row-level security binds every statement."""
    engine = create_engine(as_app_role(pg.url))
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def held_statistics(pg: Backend) -> AsyncIterator[Callable[..., Awaitable[None]]]:
    """`await held_statistics(*tables)`: the planner's statistics of these tables taken now
    (ANALYZE, as the owner) and held to the end of the test, autovacuum off for them until
    then. A stock server's autovacuum analyses a table again once it has grown a tenth, and a
    test of what a plan does on statistics that predate a store's rows would then pass
    whatever the code."""
    held: dict[str, None] = {}

    async def take(*tables: str) -> None:
        async with pg.engine.begin() as connection:
            for table in tables:
                await connection.execute(
                    text(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
                )
            await connection.execute(text("ANALYZE " + ", ".join(tables)))
        held.update(dict.fromkeys(tables))

    yield take
    if held:
        async with pg.engine.begin() as connection:
            for table in held:
                await connection.execute(text(f"ALTER TABLE {table} RESET (autovacuum_enabled)"))


class LifespanProbe:
    """ASGI around the app that keeps what its lifespan started: the state it yielded and the
    server's event loop, so a test can reach the in-process job runner of a served app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        self.loop = asyncio.get_running_loop()
        self.state = scope["state"]

        async def observed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self.started.set()

        await self.app(scope, receive, observed_send)


class ServedApp:
    """The real app under uvicorn in a background thread, on a loopback port of its own."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        # Listening before the server starts: early clients wait in the backlog, no polling.
        self.sock.listen(128)
        port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        # The service's own uvicorn configuration, limits included (receiver/limits.py).
        self.probe = LifespanProbe(create_app(settings))
        config = server_config(self.probe, settings, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> ServedApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/webhooks/shopify"

    async def settle(self) -> None:
        """Return once no background job runs in the served app: on SQLite its in-process
        runner would otherwise finish one test's job in the next test's rows (ids restart).

        Jobs are let finish rather than cancelled: a job cancelled in the middle of a SQLite
        statement left the database locked for the next test's truncate. One still running
        after SETTLE_SECONDS is cancelled, with a warning naming the test that left it.
        """
        if not await asyncio.to_thread(self.probe.started.wait, STARTUP_SECONDS):
            raise RuntimeError(f"the served app did not start within {STARTUP_SECONDS} s")
        runner = self.probe.state["services"].job_queue
        loop = self.probe.loop
        if not isinstance(runner, InProcessRunner) or loop is None:
            return
        try:
            await asyncio.wait_for(
                asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner.drain(), loop)),
                SETTLE_SECONDS,
            )
        except TimeoutError:
            warnings.warn(
                f"sync jobs {sorted(runner.tasks)} still ran {SETTLE_SECONDS} s after a test; "
                "cancelled",
                stacklevel=1,
            )
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner.idle(), loop))


@pytest.fixture(scope="session")
def served_apps() -> Iterator[dict[str, ServedApp]]:
    apps: dict[str, ServedApp] = {}
    yield apps
    for app in apps.values():
        app.__exit__(None, None, None)


@pytest.fixture
def served(backend: Backend, served_apps: dict[str, ServedApp]) -> ServedApp:
    """The app on the parametrised backend (one server per backend for the whole run)."""
    if backend.name not in served_apps:
        served_apps[backend.name] = ServedApp(settings_for(backend.url)).__enter__()
    return served_apps[backend.name]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
