"""`shopify-receiver backfill` as a person runs it, against the simulator over real HTTP: the
mode `auto` chooses from Shopify's counts, and in a terminal (a real pty) the progress line shows
rate-limit waits while log lines print above it."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backfill.queries import RESOURCES
from backfill.sync import AUTO_BULK_MIN_RECORDS
from models import Customer, SecretBox, SyncJob, Tenant, create_engine, create_session_factory
from receiver.tenants import set_access_token
from tests.conftest import TEST_ENCRYPTION_KEY, Backend
from tests.fakeshop import FakeShopServer, FakeStore
from tests.terminal import screen

BOX = SecretBox([TEST_ENCRYPTION_KEY])
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
async def sqlite_backend(sqlite_url: str) -> AsyncIterator[Backend]:
    engine = create_engine(sqlite_url)
    backend = Backend("sqlite", sqlite_url, engine, create_session_factory(engine))
    await backend.truncate()
    yield backend
    await engine.dispose()


async def add_store(backend: Backend, store: FakeStore) -> int:
    async with backend.sessions() as session, session.begin():
        tenant = Tenant(shop_domain=store.shop_domain, status="active")
        set_access_token(BOX, tenant, store.access_token)
        session.add(tenant)
        await session.flush()
        return tenant.id


def cli_environment(backend: Backend, server: FakeShopServer) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": backend.url,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SECRET_KEY": "cli-test",
        "SHOPIFY_ADMIN_BASE_URL": server.admin_base_url_template,
    }


async def backfill_in_a_pipe(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "receiver.cli", "backfill", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=180)
    assert process.returncode is not None
    return process.returncode, output.decode()


def backfill_in_a_terminal(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str]:
    """Run the command on a pseudo-terminal (stdin, stdout and stderr), return all it drew."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "backfill", *args],
        cwd=cwd,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "40"},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        close_fds=True,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=180)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, b"".join(chunks).decode(errors="replace")


def counted(store: FakeStore) -> int:
    """What Shopify's counts add up to over the resources a backfill takes by default."""
    return sum(
        store.counts.get(name, 0) for name, resource in RESOURCES.items() if resource.counted
    )


async def job_modes(backend: Backend, tenant_id: int) -> list[str]:
    async with backend.sessions() as session:
        return list(
            await session.scalars(select(SyncJob.mode).where(SyncJob.tenant_id == tenant_id))
        )


async def test_auto_mode_pulls_a_large_store_in_bulk_and_a_small_one_page_by_page(
    sqlite_backend, tmp_path
):
    small = FakeStore(
        "small-store.myshopify.com", seed=3, customers=40, products=10, orders=30, throttle=False
    )
    large = FakeStore(
        "large-store.myshopify.com",
        seed=4,
        customers=AUTO_BULK_MIN_RECORDS + 50,
        products=5,
        orders=5,
        throttle=False,
    )
    with FakeShopServer([small, large]) as server:
        small_id = await add_store(sqlite_backend, small)
        large_id = await add_store(sqlite_backend, large)
        env = cli_environment(sqlite_backend, server)

        code, output = await backfill_in_a_pipe(env, tmp_path, small.shop_domain)
        assert code == 0, output
        assert f"mode auto: full, Shopify counts {counted(small)} records" in output
        assert "succeeded" in output
        assert await job_modes(sqlite_backend, small_id) == ["full"]

        code, output = await backfill_in_a_pipe(env, tmp_path, large.shop_domain)
        assert code == 0, output
        assert f"mode auto: bulk, Shopify counts {counted(large):,} records" in output
        assert "Shopify is exporting (" in output  # while the operation runs
        assert await job_modes(sqlite_backend, large_id) == ["bulk"]
        assert small.stats.bulk_operations == 0
        assert large.stats.bulk_operations > 0
        async with sqlite_backend.sessions() as session:
            customers = await session.scalar(
                select(func.count()).select_from(Customer).where(Customer.tenant_id == large_id)
            )
        assert customers == AUTO_BULK_MIN_RECORDS + 50


async def test_a_terminal_run_shows_rate_limit_waits_with_log_lines_above_the_progress_line(
    sqlite_backend, tmp_path
):
    # A customers page costs about 1,000 points: at 400 points a second each page after the
    # first waits about 2.5 s for the bucket, which the progress line must say.
    store = FakeStore(
        "paced-store.myshopify.com",
        seed=6,
        customers=300,
        products=0,
        orders=0,
        maximum_available=1_000,
        restore_rate=400,
    )
    with FakeShopServer(store) as server:
        await add_store(sqlite_backend, store)
        env = cli_environment(sqlite_backend, server)
        code, output = await asyncio.to_thread(
            backfill_in_a_terminal, env, tmp_path, store.shop_domain, "--resources", "customers"
        )
    assert code == 0, output
    plain = ANSI.sub("", output)
    assert re.search(r"waiting for Shopify's rate limit: [\d,]+ points at 400/s", plain), plain
    lines = [line for line in screen(output) if line.strip()]
    started = [line for line in lines if "backfill.started" in line]
    progress = [line for line in lines if "records/s" in line or "customers " in line]
    assert len(started) == 1, lines
    assert "customers" not in started[0].replace("shop=paced-store", ""), lines
    assert len(progress) == 1, lines  # redrawn in place: no stale copies, nothing glued on
    assert "300 / 300" in progress[0]
    assert "100%" in progress[0]
    assert "backfill." not in progress[0]
    assert lines.index(started[0]) < lines.index(progress[0])
    assert re.fullmatch(r"sync job \d+: succeeded", lines[-1]), lines


async def test_the_api_accepts_auto_and_queues_the_mode_it_chose(pg, http):
    from receiver.auth import create_api_token
    from tests.conftest import ServedApp, settings_for
    from tests.factories import create_tenant

    small = FakeStore("small-api.myshopify.com", seed=7, customers=20, products=3, orders=10)
    large = FakeStore(
        "large-api.myshopify.com", seed=8, customers=AUTO_BULK_MIN_RECORDS, products=3, orders=3
    )
    async with pg.sessions() as session, session.begin():
        token = await create_api_token(session, "auto-mode")
    with FakeShopServer([small, large]) as server:
        for store in (small, large):
            await create_tenant(pg.sessions, store.shop_domain, access_token=store.access_token)
        # On PostgreSQL the web process only queues: the job's mode is what the request chose.
        settings = settings_for(pg.url, admin_base_url=server.admin_base_url_template)
        with ServedApp(settings) as served:
            modes = {}
            for store in (small, large):
                response = await http.post(
                    f"{served.base_url}/api/sync",
                    json={"shop": store.shop_domain, "mode": "auto"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 202, response.text
                modes[store.shop_domain] = response.json()["job"]["mode"]
    assert modes == {small.shop_domain: "full", large.shop_domain: "bulk"}


async def test_serve_takes_its_port_from_port_when_no_option_names_one(tmp_path):
    from tests.integration.test_cli import CLI, cli_env, free_port, stop, wait_until_healthy

    port = free_port()
    server = await asyncio.create_subprocess_exec(
        str(CLI), "serve", cwd=tmp_path, env=cli_env(None, PORT=str(port), PERIODIC_CHECKS="off"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        log = await stop(server)
    assert f"127.0.0.1:{port}" in log, log


def test_make_run_passes_port_to_serve():
    root = Path(__file__).resolve().parents[2]
    for args, env_port, expected in (
        (["PORT=9123"], None, "--port 9123"),
        ([], "9124", "--port 9124"),
        ([], None, "--port 8000"),
    ):
        # Not PORT, nor the variables of a `make test` this may run under (a sub-make
        # prints "Entering directory" lines and inherits the parent's flags).
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PORT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")
        }
        if env_port is not None:
            env["PORT"] = env_port
        # -n: print the recipe without running it; -o: the venv counts as built.
        dry_run = subprocess.run(
            ["make", "--no-print-directory", "-n", "-o", "install", "-o",
             ".venv/bin/shopify-receiver", "run", *args],
            cwd=root, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert (
            dry_run.stdout.strip().splitlines()[-1].endswith(f"serve --host 127.0.0.1 {expected}")
        )


async def test_a_long_rate_limit_wait_is_recorded_in_the_job_for_the_dashboard(backend):
    """The store page reads waits from the job's stored progress (`receiver.stats.job_summary`):
    while the client sleeps for the bucket the row says so; the next page clears it."""
    from dataclasses import replace
    from datetime import UTC, datetime

    import httpx

    from backfill.runner import create_sync_job, run_sync_job
    from receiver.stats import job_summary
    from tests.factories import create_tenant, simulator_environment
    from tests.fakeshop import ManualClock

    clock = ManualClock(start=datetime.now(UTC))
    # A customers page costs about 1,000 points: at 50 a second each page after the first waits
    # about 20 s of the simulator's virtual time.
    store = FakeStore(
        "waits.myshopify.com",
        seed=12,
        customers=200,
        products=0,
        orders=0,
        clock=clock,
        maximum_available=1_000,
        restore_rate=50,
    )
    stored_during_waits: list[tuple[float, SyncJob]] = []
    with FakeShopServer(store) as server:
        tenant_id = await create_tenant(
            backend.sessions, store.shop_domain, access_token=store.access_token
        )
        async with backend.sessions() as session, session.begin():
            tenant = await session.get_one(Tenant, tenant_id)
            job = await create_sync_job(session, tenant, "full", ["customers"])
        async with httpx.AsyncClient(timeout=10) as http:
            env = simulator_environment(
                backend.sessions, http, server.admin_base_url_template, store, clock
            )
            virtual_sleep = env.client_options["sleep"]

            async def look_then_sleep(seconds: float) -> None:
                async with backend.sessions() as session:
                    stored_during_waits.append((seconds, await session.get_one(SyncJob, job.id)))
                await virtual_sleep(seconds)

            env = replace(env, client_options={**env.client_options, "sleep": look_then_sleep})
            assert await run_sync_job(env, job.id) == "succeeded"
        async with backend.sessions() as session:
            finished = await session.get_one(SyncJob, job.id)

    long_waits = [(seconds, row) for seconds, row in stored_during_waits if seconds >= 1]
    assert len(long_waits) >= 2, stored_during_waits
    for seconds, row in long_waits:
        waiting = row.progress["customers"]["waiting"]
        assert waiting["rate"] == 50
        assert waiting["points"] == pytest.approx(seconds * 50, abs=1)
        document = {
            "progress": row.progress,
            "resources": row.resources,
            "status": row.status,
            "started_at": row.started_at.isoformat(),
        }
        shown = job_summary(document, datetime.now(UTC))["throttled"]
        assert shown == waiting
    assert finished.progress["customers"]["count"] == 200
    assert "waiting" not in finished.progress["customers"]
