"""Operational mistakes, made as a new operator makes them, each end in one line on stderr
that says what is wrong and what to do (exit 1); `--debug` or DEBUG=1 shows the traceback.

The real console script runs as a subprocess against real PostgreSQL and SQLite files, as in
test_cli.py; what a command did is checked in the database, not only in its output.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from models import SyncJob, Tenant, create_engine
from models import migrate as migrations
from tests.conftest import (
    POSTGRES_ADMIN_URL,
    TEST_ENCRYPTION_KEY,
    Backend,
    _create_postgres_database,
    _drop_postgres_database,
)
from tests.factories import SHOP
from tests.integration.test_cli import (
    CLI,
    Cli,
    Result,
    cli_env,
    free_port,
    sqlite_rows,
    stop,
    wait_until_healthy,
)
from tests.integration.test_pages import ADMIN, SignIn, create_user, sign_in  # noqa: F401

OTHER_KEY = Fernet.generate_key().decode()


def one_line(result: Result) -> str:
    """The refusal's only line on stderr, checked to be the only one."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, str(result)
    assert lines[0].startswith("Error: "), str(result)
    return lines[0]


def with_scheme(url: str, scheme: str) -> str:
    """The URL as an operator writes it (`postgresql://`, `postgres://`, `sqlite:///`)."""
    return scheme + "://" + url.split("://", 1)[1]


async def stored_tenants(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(select(Tenant.shop_domain).order_by(Tenant.id))
            return list(rows.scalars())
    finally:
        await engine.dispose()


@pytest.fixture
async def empty_postgres() -> AsyncIterator[str]:
    """A PostgreSQL database nobody migrated."""
    url = await _create_postgres_database()
    yield url
    await _drop_postgres_database(url)


# --- database URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_plain_postgresql_urls_work(pg: Backend, tmp_path: Path, scheme: str) -> None:
    url = with_scheme(pg.url, scheme)
    cli = Cli(tmp_path, cli_env(url))
    await cli.ok("tenants", "add", "--shop", SHOP)
    listed = await cli.ok("tenants", "list")
    assert SHOP in listed.stdout
    assert await stored_tenants(pg.url) == [SHOP]


async def test_sslmode_in_a_postgresql_url_reaches_asyncpg(pg: Backend, tmp_path: Path) -> None:
    # libpq's spelling, which asyncpg refuses as such (it takes the same values as `ssl`).
    cli = Cli(tmp_path, cli_env(with_scheme(pg.url, "postgresql") + "?sslmode=disable"))
    await cli.ok("tenants", "add", "--shop", SHOP)
    assert await stored_tenants(pg.url) == [SHOP]


@pytest.mark.parametrize("url", ["mysql://user@db.example/receiver", "receiver.db"])
async def test_an_unsupported_database_url_names_the_supported_ones(
    tmp_path: Path, url: str
) -> None:
    refused = await Cli(tmp_path, cli_env(url)).fails("tenants", "list")
    line = one_line(refused)
    assert line.startswith("Error: DATABASE_URL"), line
    assert "postgresql://USER:PASSWORD@HOST:5432/DATABASE" in line
    assert "sqlite:///" in line


# --- an unreachable database -----------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_an_unreachable_database_says_where_and_that_it_is_not_answering(
    tmp_path: Path, host: str
) -> None:
    port = free_port()  # nothing listens there
    cli = Cli(tmp_path, cli_env(f"postgresql://postgres@{host}:{port}/receiver"))
    for command in (["tenants", "list"], ["migrate"], ["events", "list"], ["worker"]):
        line = one_line(await cli.fails(*command, code=1))
        assert f"the database at {host}:{port} is not answering" in line, line
        assert "DATABASE_URL" in line


async def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    port = free_port()
    cli = Cli(tmp_path, cli_env(f"postgresql://postgres@127.0.0.1:{port}/receiver"))
    for shown in (await cli("--debug", "tenants", "list"), await cli("tenants", "list", DEBUG="1")):
        assert shown.code == 1, str(shown)
        assert "Traceback (most recent call last)" in shown.stderr, str(shown)
        assert "ConnectionRefusedError" in shown.stderr, str(shown)


async def test_an_unknown_database_host_is_named(tmp_path: Path) -> None:
    cli = Cli(tmp_path, cli_env("postgresql://postgres@receiver-db.invalid:5432/receiver"))
    line = one_line(await cli.fails("tenants", "list"))
    assert "cannot resolve the database host receiver-db.invalid" in line, line


async def test_serve_on_an_unreachable_database_says_so_at_start_and_serves(
    tmp_path: Path,
) -> None:
    db_port, port = free_port(), free_port()
    env = cli_env(f"postgresql://postgres@127.0.0.1:{db_port}/receiver", PERIODIC_CHECKS="off")
    server = await asyncio.create_subprocess_exec(
        str(CLI), "serve", "--port", str(port), cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}", server)
        async with httpx.AsyncClient(timeout=5) as http:
            ready = await http.get(f"http://127.0.0.1:{port}/readyz")
    finally:
        log = await stop(server)
    assert ready.status_code == 503, ready.text
    assert f"warning: the database at 127.0.0.1:{db_port} is not answering" in log, log
    assert "Traceback" not in log, log


async def test_a_missing_database_says_how_to_create_it(pg: Backend, tmp_path: Path) -> None:
    missing = f"receiver_missing_{uuid.uuid4().hex[:8]}"
    url = make_url(pg.url).set(database=missing).render_as_string(hide_password=False)
    line = one_line(await Cli(tmp_path, cli_env(url)).fails("tenants", "list"))
    assert f"database {missing} does not exist at 127.0.0.1:5432" in line, line
    assert f"createdb -h 127.0.0.1 -p 5432 {missing}" in line, line


# --- schema and grants -----------------------------------------------------------------------


async def test_an_unmigrated_postgresql_database_says_run_migrate(
    empty_postgres: str, tmp_path: Path
) -> None:
    cli = Cli(tmp_path, cli_env(with_scheme(empty_postgres, "postgresql")))
    for command in (["tenants", "list"], ["tenants", "add", "--shop", SHOP], ["worker"]):
        line = one_line(await cli.fails(*command))
        assert "not migrated" in line, line
        assert "run `shopify-receiver migrate`" in line, line
    migrated = await cli.ok("migrate")
    assert f"schema at {migrations.head_revision()}" in migrated.stdout
    await cli.ok("tenants", "add", "--shop", SHOP)
    assert await stored_tenants(empty_postgres) == [SHOP]


async def test_serve_on_an_unmigrated_database_warns_at_start(
    empty_postgres: str, tmp_path: Path
) -> None:
    port = free_port()
    env = cli_env(empty_postgres, PERIODIC_CHECKS="off", ALLOW_RLS_BYPASS="on")
    server = await asyncio.create_subprocess_exec(
        str(CLI), "serve", "--port", str(port), cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        log = await stop(server)
    assert "schema is not migrated" in log, log
    assert "run `shopify-receiver migrate`" in log, log


async def test_a_role_without_grants_is_told_what_to_grant(pg: Backend, tmp_path: Path) -> None:
    role = f"receiver_nogrants_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"))
        url = make_url(pg.url).set(username=role).render_as_string(hide_password=False)
        line = one_line(await Cli(tmp_path, cli_env(url)).fails("tenants", "list"))
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        await admin.dispose()
    assert f"database role {role} is not allowed" in line, line
    assert "permission denied" in line, line
    assert "Database roles" in line, line


# --- the embedded SQLite database ------------------------------------------------------------


async def test_a_command_on_the_new_embedded_database_migrates_it(tmp_path: Path) -> None:
    cli = Cli(tmp_path, cli_env(None))  # DATABASE_URL unset: ./var/receiver.db
    database = tmp_path / "var" / "receiver.db"
    assert not database.exists()
    listed = await cli.ok("tenants", "list")
    assert "no such table" not in listed.output
    await cli.ok("tenants", "add", "--shop", SHOP)
    assert sqlite_rows(database, "SELECT version_num FROM alembic_version") == [
        (migrations.head_revision(),)
    ]
    assert sqlite_rows(database, "SELECT shop_domain FROM tenants") == [(SHOP,)]


async def test_a_plain_sqlite_url_to_a_new_file_works(tmp_path: Path) -> None:
    database = tmp_path / "data" / "receiver.db"
    cli = Cli(tmp_path, cli_env(f"sqlite:///{database}"))
    await cli.ok("tenants", "add", "--shop", SHOP)
    assert sqlite_rows(database, "SELECT shop_domain FROM tenants") == [(SHOP,)]


async def test_an_sqlite_file_that_cannot_be_created_names_its_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cli = Cli(tmp_path, cli_env(f"sqlite:///{blocker}/receiver.db"))
    line = one_line(await cli.fails("tenants", "list"))
    assert str(blocker) in line, line
    assert "DATABASE_URL" in line, line


# --- a changed ENCRYPTION_KEYS ---------------------------------------------------------------


async def test_a_lost_encryption_key_is_named_in_the_cli_the_sync_job_and_the_dashboard(
    backend: Backend,
    tmp_path: Path,
    sign_in: SignIn,  # noqa: F811
) -> None:
    # Nothing may leave for Shopify: the Admin API base is a closed local port.
    admin_url = f"http://127.0.0.1:{free_port()}/admin/api/{{version}}"
    cli = Cli(tmp_path, cli_env(backend.url, SHOPIFY_ADMIN_BASE_URL=admin_url))
    await cli.ok(
        "tenants", "add", "--shop", SHOP, "--access-token", "shpat_x", "--webhook-secret", "s"
    )
    changed = {"ENCRYPTION_KEYS": OTHER_KEY}

    failed = await cli("backfill", SHOP, "--resources", "customers", **changed)
    assert failed.code == 1, str(failed)
    assert "Traceback" not in failed.output, str(failed)
    assert "InvalidToken" not in failed.output, str(failed)
    assert "access token was encrypted with a key that is not in ENCRYPTION_KEYS" in failed.stdout
    assert f"tenants add --shop {SHOP} --access-token" in failed.stdout
    async with backend.sessions() as session:
        job = (await session.scalars(select(SyncJob))).one()
    assert job.status == "failed"
    assert job.error is not None
    assert "not in ENCRYPTION_KEYS" in job.error, job.error
    assert "unexpected" not in job.error, job.error
    await create_user(backend, ADMIN, admin=True)
    page = await (await sign_in(ADMIN)).get(f"/stores/{SHOP}")
    assert page.status_code == 200, page.text
    assert "access token was encrypted with a key that is not in ENCRYPTION_KEYS" in page.text
    assert "InvalidToken" not in page.text

    sent = await cli.fails("send-test-webhook", "orders/create", "--shop", SHOP, **changed)
    line = one_line(sent)
    assert "was encrypted with a key that is not in ENCRYPTION_KEYS" in line, line

    # The advice works: with the old key back, first in the list, the token opens again.
    restored = {"ENCRYPTION_KEYS": f"{TEST_ENCRYPTION_KEY},{OTHER_KEY}"}
    rotated = await cli.ok("keys", "rotate", **restored)
    assert "re-encrypted" in rotated.stdout


# --- serve's address -------------------------------------------------------------------------


async def test_serve_on_a_port_in_use_says_so_before_starting(tmp_path: Path) -> None:
    cli = Cli(tmp_path, cli_env(None, PERIODIC_CHECKS="off"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line(await cli.fails("serve", "--port", str(port)))
    assert f"127.0.0.1:{port} is already in use" in line, line
    assert "--port" in line, line


async def test_serve_refuses_a_port_beyond_65535(tmp_path: Path) -> None:
    # uvicorn would bind 99999 modulo 65536 (34463) and say nothing.
    refused = await Cli(tmp_path, cli_env(None)).fails("serve", "--port", "99999", code=2)
    assert "--port" in refused.stderr, str(refused)
    assert "0<=x<=65535" in refused.stderr, str(refused)


async def test_a_worker_on_an_older_schema_says_run_migrate(
    empty_postgres: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(migrations.upgrade, empty_postgres, "0010")
    line = one_line(await Cli(tmp_path, cli_env(empty_postgres)).fails("worker"))
    assert f"schema is at revision 0010, this version needs {migrations.head_revision()}" in line
    assert "run `shopify-receiver migrate`" in line, line
