"""`serve` and `worker` refuse a database role that row-level security does not bind, unless
ALLOW_RLS_BYPASS=on says so; real processes against real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal

import httpx
from sqlalchemy import text

from models import create_engine
from models.tenancy import rls_bypass_reason
from tests.conftest import as_app_role
from tests.integration.test_cli import CLI, Cli, cli_env, free_port, stop, wait_until_healthy


async def start(*args: str, env: dict[str, str], cwd) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(CLI), *args, cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_serve_and_worker_refuse_a_superuser_and_say_why(pg, tmp_path):
    cli = Cli(tmp_path, cli_env(pg.url, PERIODIC_CHECKS="off"))  # pg.url: the postgres superuser
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        refused = await cli.fails(*command)
        assert "refusing to start" in refused.stderr
        assert "superuser" in refused.stderr
        assert "ALLOW_RLS_BYPASS=on" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


async def test_serve_runs_as_a_superuser_only_when_told_and_warns(pg, tmp_path):
    port = free_port()
    env = cli_env(pg.url, ALLOW_RLS_BYPASS="on", PERIODIC_CHECKS="off")
    server = await start("serve", "--port", str(port), env=env, cwd=tmp_path)
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        log = await stop(server)
    assert "superuser" in log, log
    assert "NOT isolated" in log, log


async def test_serve_as_the_service_role_starts_without_a_warning(pg, tmp_path):
    port = free_port()
    env = cli_env(as_app_role(pg.url), PERIODIC_CHECKS="off")
    server = await start("serve", "--port", str(port), env=env, cwd=tmp_path)
    try:
        await wait_until_healthy(f"http://127.0.0.1:{port}", server)
    finally:
        log = await stop(server)
    assert "row-level security" not in log, log


async def test_worker_runs_when_told_and_serves_its_metrics(pg, tmp_path):
    port = free_port()
    env = cli_env(
        pg.url, ALLOW_RLS_BYPASS="on", PERIODIC_CHECKS="off", METRICS_TOKEN="worker-scrape"
    )
    worker = await start(
        "worker", "--concurrency", "1", "--metrics-port", str(port), env=env, cwd=tmp_path
    )
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                assert worker.returncode is None, "the worker exited"
                try:
                    scrape = await http.get(
                        f"http://127.0.0.1:{port}/metrics",
                        headers={"Authorization": "Bearer worker-scrape"},
                    )
                    break
                except httpx.TransportError:
                    assert loop.time() < deadline, "no metrics port within 30 s"
                    await asyncio.sleep(0.1)
            refused = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(worker.communicate(), 30)
    assert scrape.status_code == 200
    assert "shopify_receiver_backfill_records_total" in scrape.text
    assert "shopify_receiver_backfill_throttle_waits_total" in scrape.text
    assert refused.status_code == 401
    assert b"ALLOW_RLS_BYPASS=on" in stderr


async def test_a_role_owning_a_tenant_table_bypasses_unless_forced(pg):
    """Owners skip their tables' policies unless FORCE ROW LEVEL SECURITY; a table with
    row-level security disabled has none to apply."""
    role = "receiver_owner_probe"
    admin = create_engine(pg.url, isolation_level="AUTOCOMMIT")
    probe = create_engine(pg.url.replace("postgres@", f"{role}@", 1))
    try:
        async with admin.connect() as connection:
            await connection.execute(
                text(
                    f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') "
                    f"THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$"
                )
            )
            await connection.execute(
                text(f'GRANT CONNECT ON DATABASE "{pg.url.rsplit("/", 1)[1]}" TO {role}')
            )
            await connection.execute(text(f"ALTER TABLE customers OWNER TO {role}"))
        async with probe.connect() as connection:
            assert await rls_bypass_reason(connection) == (
                f"database role {role} owns customers (without FORCE ROW LEVEL SECURITY)"
            )
        async with admin.connect() as connection:
            await connection.execute(text("ALTER TABLE customers FORCE ROW LEVEL SECURITY"))
        async with probe.connect() as connection:
            assert await rls_bypass_reason(connection) is None
        async with admin.connect() as connection:
            await connection.execute(text("ALTER TABLE orders DISABLE ROW LEVEL SECURITY"))
        async with probe.connect() as connection:
            assert await rls_bypass_reason(connection) == (
                "row-level security is disabled on orders"
            )
    finally:
        async with admin.connect() as connection:
            await connection.execute(text("ALTER TABLE orders ENABLE ROW LEVEL SECURITY"))
            await connection.execute(text("ALTER TABLE customers NO FORCE ROW LEVEL SECURITY"))
            await connection.execute(text("ALTER TABLE customers OWNER TO postgres"))
        await probe.dispose()
        await admin.dispose()
