"""``python -m bench.webhooks [--quick]``: webhook throughput and latency, service vs reference.

One run, on a fresh PostgreSQL database that it creates, migrates and drops:

0. the load generator alone against a do-nothing ASGI endpoint (``bench.reference_app:noop_app``),
   so its own ceiling and CPU cost per request are on record;
1. for each worker count (default 1 and 2): the bare-minimum reference (``bench.reference_app``:
   Starlette + uvicorn, HMAC check, one asyncpg INSERT) and the service as shipped
   (``shopify-receiver serve --workers N``, default log settings, connecting as the
   ``receiver_app`` role so row-level security is in force), each driven by its own load
   process (``python -m bench.webhook_load``) at a fixed number of keep-alive connections
   for a warm-up and then a measured window.

After each service run it checks the database: one ``webhook_events`` row per distinct event
acknowledged (duplicate deliveries not stored twice), all ``processed``, and every order,
customer and product at the newest ``updated_at`` that was acknowledged for it (out-of-order
deliveries did not roll anything back). After each reference run: one row per 2xx.

Prints one Markdown table and appends it, with the machine and the date, to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import select
from sqlalchemy.engine import make_url

from bench.backfill import (
    DEFAULT_ADMIN_URL,
    RESULTS_FILE,
    ROOT,
    append_results,
    clean_up,
    code_fingerprint,
    free_port,
    log,
    machine_info,
    process_cpu_seconds,
    system_cpu_seconds,
)
from bench.backfill import _wait_for_simulator as wait_for_simulator
from bench.children import CHILDREN, on_sigterm, stop
from bench.database import APP_ROLE, app_role_grants, as_role, dsn, run_statements
from bench.reference_app import CREATE_TABLES, RECORDS_TABLE
from bench.reference_app import TABLE as REFERENCE_TABLE
from models import SecretBox, Tenant, create_engine, create_session_factory
from models import migrate as migrations
from models.encryption import generate_key
from receiver.tenants import set_access_token, set_webhook_secrets
from receiver.webhooks import WEBHOOK_PATH

SHOP = "bench-load.myshopify.com"
APP_SECRET = "shpss_bench_app_secret"
STORE_SECRET = "bench_store_webhook_secret"
RATIO_GOAL = 1.0
P99_CONNECTIONS = 64  # the p99 goal holds at this many connections
BACKFILL_TARGET = "service, backfill running"
INBOX_RATIO_GOAL = 0.95
P99_GOAL_MS = 50.0
STARTUP_TIMEOUT = 90.0
OTHER_LOAD_WARNING = 0.25  # share of one core used by other processes that skews a run
# What the service's code is: a change under these during a run is called out in the results.
SERVICE_PACKAGES = ("receiver", "handlers", "models")


# --------------------------------------------------------------------------------------------
# Processes


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's supervisor and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue.extend(children.get(current, []))
    return found


# --------------------------------------------------------------------------------------------
# Database


def execute(url: str, *statements: str) -> list[list[asyncpg.Record]]:
    return asyncio.run(run_statements(url, *statements))


def create_database(admin_url: str, app_role: str | None) -> str:
    name = f"bench_webhooks_{os.getpid()}"
    execute(
        admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    statements = [*CREATE_TABLES]
    if app_role:
        statements = [*CREATE_TABLES, *app_role_grants(name, app_role)]
    execute(url, *statements)
    return url


async def _create_tenant(url: str, encryption_key: str) -> None:
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            tenant = Tenant(shop_domain=SHOP, status="active")
            set_webhook_secrets(SecretBox([encryption_key]), tenant, [STORE_SECRET])
            session.add(tenant)
    finally:
        await engine.dispose()


def reset_tables(url: str) -> None:
    """Every target starts on empty tables and right after a checkpoint (so that none lands in
    the measured window by chance of timing)."""
    execute(
        url,
        f"TRUNCATE webhook_events, webhook_event_keys, orders, customers, products, "
        f"{REFERENCE_TABLE}, {RECORDS_TABLE} RESTART IDENTITY CASCADE",
        "CHECKPOINT",
    )


def backend_pids(url: str) -> list[int]:
    rows = execute(
        url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()",
    )[0]
    return [int(row["pid"]) for row in rows]


# Prefilled events are marked by their webhook id, so the checks leave them out.
PREFILL_MARK = "prefill"
PREFILL_CHUNK = 250_000
PREFILL_TOPICS = (
    "orders/create",
    "orders/updated",
    "orders/paid",
    "customers/create",
    "customers/update",
    "products/create",
    "products/update",
)
# About 1.3 KB of jsonb per event (an order with three line items and a note): under the
# 2 KB at which PostgreSQL would compress and move it out of line, like most real bodies.
PREFILL_PAYLOAD = """jsonb_build_object(
    'id', 5000000000 + i,
    'admin_graphql_api_id', 'gid://shopify/Order/' || (5000000000 + i),
    'name', '#' || (1000 + i),
    'email', 'buyer' || (i % 100000) || '@example.com',
    'created_at', at, 'updated_at', at, 'processed_at', at,
    'currency', 'USD', 'total_price', ((i % 100000) / 100.0)::text, 'subtotal_price', '19.99',
    'financial_status', 'paid', 'fulfillment_status', NULL, 'tags', 'vip, wholesale',
    'customer', jsonb_build_object('id', 7000000000 + i % 100000, 'email',
        'buyer' || (i % 100000) || '@example.com', 'first_name', 'Alex', 'last_name', 'Doe'),
    'line_items', (SELECT jsonb_agg(jsonb_build_object(
        'id', i * 10 + n, 'product_id', 8000000000 + (i + n) % 500, 'variant_id',
        9000000000 + (i + n) % 1500, 'title', 'Product ' || ((i + n) % 500), 'quantity', 1 + n,
        'price', '19.99', 'sku', 'SKU-' || ((i + n) % 1500), 'vendor', 'Bench Supply'))
        FROM generate_series(1, 3) n),
    'note', repeat('thank you for your order ', 24)
)"""


def prefill_inbox(url: str, size: int, months: int) -> dict[str, Any]:
    """`size` processed events of the benchmark store (and their dedupe keys), received evenly
    over the last `months` months up to an hour ago, in time order, server-side
    (INSERT ... SELECT generate_series), with a partition for each month; then VACUUM ANALYZE
    and a CHECKPOINT. Returns what it made and how long that took."""
    began = time.monotonic()
    end = datetime.now(UTC) - timedelta(hours=1)
    start = end - timedelta(days=30.44 * months)
    step = (end - start) / max(size, 1)
    topics = "ARRAY[" + ", ".join(f"'{topic}'" for topic in PREFILL_TOPICS) + "]"
    execute(
        url,
        "SELECT webhook_events_add_month(month AT TIME ZONE 'UTC') FROM generate_series("
        f"date_trunc('month', '{start.isoformat()}'::timestamptz AT TIME ZONE 'UTC'), "
        f"date_trunc('month', '{end.isoformat()}'::timestamptz AT TIME ZONE 'UTC'), "
        "interval '1 month') AS month",
    )
    for low in range(0, size, PREFILL_CHUNK):
        high = min(size, low + PREFILL_CHUNK) - 1
        execute(
            url,
            f"""
            WITH events AS (
                INSERT INTO webhook_events (tenant_id, shop_domain, topic, event_id, webhook_id,
                    dedupe_key, api_version, triggered_at, received_at, processed_at, status,
                    attempts, payload, duplicate_count)
                SELECT tenant.id, tenant.shop_domain, ({topics})[1 + i % 7], key,
                    '{PREFILL_MARK}', key, '2026-10', at, at, at, 'processed', 1,
                    {PREFILL_PAYLOAD}, 0
                FROM (SELECT id, shop_domain FROM tenants WHERE shop_domain = '{SHOP}') tenant,
                    LATERAL (
                        SELECT i, gen_random_uuid()::text AS key,
                            '{start.isoformat()}'::timestamptz
                            + i * interval '{step.total_seconds():.6f} seconds' AS at
                        FROM generate_series({low}, {high}) i
                    ) series
                RETURNING id, tenant_id, shop_domain, topic, dedupe_key, received_at
            )
            INSERT INTO webhook_event_keys (shop_domain, topic, dedupe_key, tenant_id,
                webhook_event_id, received_at)
            SELECT shop_domain, topic, dedupe_key, tenant_id, id, received_at FROM events
            """,
        )
        if (high + 1) % 2_000_000 < PREFILL_CHUNK:
            log(f"prefilled {high + 1:,} of {size:,} events ...")
    inserted = time.monotonic() - began
    execute(url, "VACUUM ANALYZE webhook_events", "VACUUM ANALYZE webhook_event_keys")
    sizes = execute(
        url,
        "SELECT count(*) AS n FROM pg_inherits WHERE inhparent = 'webhook_events'::regclass",
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) AS bytes FROM pg_inherits "
        "WHERE inhparent = 'webhook_events'::regclass",
        "SELECT pg_total_relation_size('webhook_event_keys') AS bytes",
    )
    execute(url, "CHECKPOINT")
    return {
        "size": size,
        "end": end,
        "months": months,
        "partitions": int(sizes[0][0]["n"]),
        "events_bytes": int(sizes[1][0]["bytes"]),
        "keys_bytes": int(sizes[2][0]["bytes"]),
        "insert_seconds": inserted,
        "seconds": time.monotonic() - began,
    }


def clear_service_rows(url: str, since: datetime) -> None:
    """What a service run stored (everything received after the prefill's last event),
    leaving the prefilled events; then a checkpoint."""
    execute(
        url,
        f"DELETE FROM webhook_event_keys WHERE received_at > '{since.isoformat()}'",
        f"DELETE FROM webhook_events WHERE received_at > '{since.isoformat()}'",
        f"TRUNCATE orders, customers, products, {REFERENCE_TABLE} RESTART IDENTITY CASCADE",
        "CHECKPOINT",
    )


def service_fingerprint() -> str:
    paths = [path for package in SERVICE_PACKAGES for path in (ROOT / package).rglob("*.py")]
    return code_fingerprint(paths)


# --------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    name: str  # "service", "reference", "no-op"
    workers: int
    connections: int
    command: list[str]
    env: dict[str, str]
    ready_path: str
    secret: str


@dataclass
class Run:
    target: Target
    load: dict[str, Any]
    cpu: dict[str, float]
    checks: dict[str, Any] = field(default_factory=dict)
    log_lines: int = 0
    log_bytes: int = 0
    code_before: str = ""
    code_after: str = ""
    # The service's coalesced commits: events and transactions (from its /metrics).
    batch_events: float = 0.0
    batches: float = 0.0
    # With a backfill beside it: whether that was still running when the window ended.
    beside_throughout: bool = False
    # Which of `--rounds` alternating rounds of its setting it belongs to (from 1).
    round: int = 1

    @property
    def non_2xx(self) -> int:
        bad = sum(count for code, count in self.load["status"].items() if not code.startswith("2"))
        return int(bad + sum(self.load["errors"].values()))


def _tree_cpu(pid: int) -> dict[int, float]:
    return {child: process_cpu_seconds(child) or 0.0 for child in descendants(pid)}


def _wait_ready(
    process: subprocess.Popen[bytes], target: Target, port: int, log_path: Path
) -> None:
    """Until the ready path answers 200 and every worker has started.

    uvicorn logs "Application startup complete" once per worker, but not every target logs
    it, so the sign is the process tree: all its workers exist and none is still busy
    importing or starting up.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = f"http://127.0.0.1:{port}{target.ready_path}"
    answered = False
    previous: dict[int, float] = {}
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{target.name} exited with {process.returncode}: "
                f"{log_path.read_text(errors='replace')[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target.name} not ready within {STARTUP_TIMEOUT:.0f} s")
        if not answered:
            with contextlib.suppress(httpx.TransportError):
                answered = httpx.get(url, timeout=2).status_code == 200
        if answered:
            started = log_path.read_text(errors="replace").count("Application startup complete")
            if started >= target.workers:
                return
            current = _tree_cpu(process.pid)
            expected = 1 if target.workers == 1 else target.workers + 1
            if (
                len(current) >= expected
                and previous.keys() == current.keys()
                and all(current[pid] - previous[pid] < 0.02 for pid in current)
            ):
                return
            previous = current
        time.sleep(0.5)


def _analyze_during_warmup(database_url: str | None, warmup: float) -> threading.Timer | None:
    """ANALYZE halfway through the warm-up. Every target starts on empty tables, and within a
    20 s run autovacuum (a minute between rounds) never analyzes them: every statement would
    be planned, and its generic plan kept for the run, on the estimates of empty tables, which
    is the first minute of a store's life, not the steady state a capacity figure is for (a
    child tombstone then scanned all of a store's children per batch, a tenth of the
    service's throughput). The same for every target."""
    if database_url is None:
        return None
    timer = threading.Timer(warmup / 2, execute, args=(database_url, "ANALYZE"))
    timer.start()
    return timer


def run_target(
    target: Target,
    args: argparse.Namespace,
    workdir: Path,
    database_url: str | None,
    seed: int,
    warmup: float,
    duration: float,
    beside: Callable[[], subprocess.Popen[bytes]] | None = None,
) -> Run:
    """Serve `target`, drive it with the load generator, and measure. `beside` starts a
    process of its own once the server is ready (a backfill of the same store): the run
    records whether it was still running when the measured window ended."""
    port = free_port()
    label = f"{target.name} x{target.workers} @{target.connections}"
    log_path = workdir / f"{target.name}-{target.workers}-{port}.log"
    code_before = service_fingerprint()
    with open(log_path, "wb") as out:
        server = subprocess.Popen(
            [*target.command, "--port", str(port)],
            cwd=ROOT,
            env=target.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    CHILDREN.append(server)
    analyze: threading.Timer | None = None
    try:
        _wait_ready(server, target, port, log_path)
        side = beside() if beside is not None else None
        if side is not None:
            CHILDREN.append(side)
        log(f"{label}: serving on port {port}; {warmup:.0f} s warm-up + {duration:.0f} s ...")
        result_path = workdir / f"load-{target.name}-{target.workers}.json"
        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.webhook_load",
                "--url",
                f"http://127.0.0.1:{port}{WEBHOOK_PATH}",
                "--shop",
                SHOP,
                "--secret",
                target.secret,
                "--connections",
                str(target.connections),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
                "--seed",
                str(seed),
                "--duplicate-share",
                str(args.duplicate_share),
                "--stale-share",
                str(args.stale_share),
                "--result-file",
                str(result_path),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        CHILDREN.append(load)
        analyze = _analyze_during_warmup(database_url, warmup)
        samples: dict[str, dict[str, float]] = {}
        pids: list[int] = []
        assert load.stdout is not None
        for raw in load.stdout:
            marker = raw.decode(errors="replace").strip()
            if marker not in ("MEASURE_START", "MEASURE_END"):
                continue
            if marker == "MEASURE_START":
                # Backends are connected by now: the pools filled up during the warm-up.
                pids = backend_pids(database_url) if database_url else []
            busy, total = system_cpu_seconds()
            samples[marker] = {
                "server": sum(process_cpu_seconds(pid) or 0.0 for pid in descendants(server.pid)),
                "postgres": sum(process_cpu_seconds(pid) or 0.0 for pid in pids),
                "load": process_cpu_seconds(load.pid) or 0.0,
                "busy": busy,
                "total": total,
            }
        load.wait(timeout=120)
        CHILDREN.remove(load)
        if analyze is not None:
            analyze.join()
        if load.returncode != 0 or not result_path.exists() or len(samples) != 2:
            raise RuntimeError(f"{label}: the load generator exited with {load.returncode}")
        result: dict[str, Any] = json.loads(result_path.read_text())
        batches = _batch_figures(port) if target.name.startswith("service") else (0.0, 0.0)
        overlapped = side is not None and side.poll() is None
    finally:
        if analyze is not None:
            analyze.cancel()
        if side is not None:
            stop(side)
        stop(server)
    first, last = samples["MEASURE_START"], samples["MEASURE_END"]
    cpu = {key: last[key] - first[key] for key in first}
    cpu["other"] = max(0.0, cpu["busy"] - cpu["server"] - cpu["postgres"] - cpu["load"])
    text = log_path.read_text(errors="replace")
    run = Run(
        target,
        result,
        cpu,
        log_lines=text.count("\n"),
        log_bytes=len(text.encode()),
        code_before=code_before,
        code_after=service_fingerprint(),
        batch_events=batches[0],
        batches=batches[1],
        beside_throughout=overlapped,
    )
    log(
        f"{label}: {result['rate']:,.0f} webhooks/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, non-2xx {run.non_2xx}"
    )
    return run


def _batch_figures(port: int) -> tuple[float, float]:
    """Events and transactions of the service's coalesced commits so far (warm-up included)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    figures = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        for name in figures:
            if line.startswith(f"shopify_receiver_webhook_batch_events_{name} "):
                figures[name] += float(line.split()[-1])
    return figures["sum"], figures["count"]


def service_target(
    name: str, workers: int, connections: int, env: dict[str, str], secret: str
) -> Target:
    """`shopify-receiver serve` as shipped, with `workers` uvicorn workers."""
    return Target(
        name,
        workers,
        connections,
        [
            str(Path(sys.executable).parent / "shopify-receiver"),
            "serve",
            "--host",
            "127.0.0.1",
            "--workers",
            str(workers),
        ],
        env,
        "/readyz",
        secret,
    )


def burst_during_backfill(
    args: argparse.Namespace,
    workdir: Path,
    database_url: str,
    service_env: dict[str, str],
    encryption_key: str,
    secret: str,
    warmup: float,
    duration: float,
    *,
    connections: int,
) -> Run:
    """The service under the same load while `shopify-receiver backfill --mode bulk` pulls
    the same store from the simulator (its own process, as an operator runs it): webhook
    throughput and p99 during the overlap."""
    out_path, err_path = workdir / "simulator.out", workdir / "simulator.err"
    command = [
        sys.executable,
        "-m",
        "tests.fakeshop",
        "--port",
        str(free_port()),
        "--shop",
        SHOP,
        "--seed",
        str(args.seed),
        "--customers",
        str(max(1, args.backfill_orders // 10)),
        "--products",
        "100",
        "--orders",
        str(args.backfill_orders),
        "--no-throttle",
    ]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        simulator = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
    CHILDREN.append(simulator)
    try:
        info = wait_for_simulator(simulator, out_path, err_path)
        asyncio.run(_give_store_access(database_url, encryption_key, info["access_token"], info))
        backfill_log = workdir / "backfill.log"

        def start_backfill() -> subprocess.Popen[bytes]:
            with open(backfill_log, "wb") as log_file:
                return subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "shopify-receiver"),
                        "backfill",
                        SHOP,
                        "--mode",
                        "bulk",
                    ],
                    cwd=ROOT,
                    env=service_env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        target = service_target(BACKFILL_TARGET, 1, connections, service_env, secret)
        reset_tables(database_url)
        run = run_target(
            target, args, workdir, database_url, args.seed, warmup, duration, start_backfill
        )
        check_service(run, database_url)
        log(f"{BACKFILL_TARGET}: checks {'ok' if run.checks['ok'] else 'FAILED'}")
        return run
    finally:
        stop(simulator)


async def _give_store_access(
    url: str, encryption_key: str, token: str, info: dict[str, Any]
) -> None:
    """The benchmark's store reads from the simulator: its token, its Admin API address."""
    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            tenant = await session.scalar(select(Tenant).where(Tenant.shop_domain == SHOP))
            assert tenant is not None
            set_access_token(SecretBox([encryption_key]), tenant, token)
            tenant.admin_base_url = info["admin_base_url_template"]
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------------------------
# Correctness


Rows = Sequence[Mapping[str, Any]]


def _records_check(load: dict[str, Any], tables: Sequence[Rows]) -> tuple[int, int]:
    """How many records acknowledged at some updated_at are not stored at the newest one
    (rolled back or ahead), and how many are missing."""
    mismatched = missing = 0
    for name, rows in zip(("orders", "customers", "products"), tables, strict=True):
        have = {int(row["shopify_id"]): row["updated_at"] for row in rows}
        for shopify_id, newest in load["newest_acked"][name].items():
            value = have.get(int(shopify_id))
            if value is None:
                missing += 1
            elif value != datetime.fromisoformat(newest):
                mismatched += 1
    return mismatched, missing


def _check(run: Run, by_status: dict[str, int], tables: Sequence[Rows]) -> None:
    load = run.load
    mismatched, missing = _records_check(load, tables)
    stored = sum(by_status.values())
    acked, sent = load["distinct_events_acked"], load["distinct_events_sent"]
    # Events whose every delivery failed may or may not have been stored.
    events_ok = acked <= stored <= sent if run.non_2xx else stored == acked
    records = sum(len(ids) for ids in load["newest_acked"].values())
    run.checks = {
        "ok": events_ok
        and set(by_status) <= {"processed"}
        and not mismatched
        and not missing
        and not run.non_2xx,
        "text": (
            f"{stored:,} events stored for {acked:,} distinct acknowledged "
            f"({load['deliveries']:,} deliveries, {load['duplicates']:,} exact duplicates, "
            f"{load['stale']:,} out-of-order); statuses "
            + ", ".join(f"{status} {count:,}" for status, count in sorted(by_status.items()))
            + f"; records at the newest acknowledged updated_at: "
            f"{records - mismatched - missing:,} of {records:,}"
            + (f", {mismatched} rolled back or ahead" if mismatched else "")
            + (f", {missing} missing" if missing else "")
        ),
    }


def check_service(run: Run, database_url: str, since: datetime | None = None) -> None:
    """`since`: count only the events received after it (not an inbox prefilled before)."""
    after = f"WHERE received_at > '{since.isoformat()}' " if since else ""
    statuses, *tables = execute(
        database_url,
        f"SELECT status, count(*) AS n FROM webhook_events {after}GROUP BY status",
        *(
            f"SELECT shopify_id, shopify_updated_at AS updated_at FROM {name}"
            for name in ("orders", "customers", "products")
        ),
    )
    _check(run, {row["status"]: int(row["n"]) for row in statuses}, tables)


def check_sqlite(run: Run, path: Path) -> None:
    """The service's checks, on the embedded SQLite file it served from."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        statuses = connection.execute(
            "SELECT status, count(*) FROM webhook_events GROUP BY status"
        ).fetchall()
        tables = [
            [
                # Stored as naive UTC (models.types.UTCDateTime).
                {
                    "shopify_id": shopify_id,
                    "updated_at": datetime.fromisoformat(stamp).replace(tzinfo=UTC),
                }
                for shopify_id, stamp in connection.execute(
                    f"SELECT shopify_id, shopify_updated_at FROM {name}"
                )
            ]
            for name in ("orders", "customers", "products")
        ]
    _check(run, {status: int(count) for status, count in statuses}, tables)


def check_reference(run: Run, database_url: str) -> None:
    """The same checks as the service's: the reference keeps the same guarantees."""
    count, *tables = execute(
        database_url,
        f"SELECT count(*) AS n FROM {REFERENCE_TABLE}",
        *(
            f"SELECT shopify_id, updated_at FROM {RECORDS_TABLE} WHERE kind = '{name}'"
            for name in ("orders", "customers", "products")
        ),
    )
    _check(run, {"processed": int(count[0]["n"])}, tables)


# --------------------------------------------------------------------------------------------
# Table


def _cores(run: Run) -> int:
    """The machine's cores, as the run's CPU accounting saw them."""
    seconds = run.load["seconds"]
    return round(run.cpu["total"] / seconds) if seconds else 0


def _per_request_us(run: Run, key: str) -> float:
    """CPU microseconds per request of one part (server, postgres, load)."""
    return run.cpu[key] / (run.load["requests"] or 1) * 1e6


def _cpu_text(run: Run) -> str:
    cpu, seconds = run.cpu, run.load["seconds"]
    share = {key: cpu[key] / seconds for key in ("server", "postgres", "load", "other")}
    return (
        f"CPU, share of one core: server {share['server']:.0%}, PostgreSQL backends "
        f"{share['postgres']:.0%}, load generator {share['load']:.0%} "
        f"({_per_request_us(run, 'load'):.0f} µs/request), other processes "
        f"{share['other']:.0%} (of {_cores(run)} cores); per request: server "
        f"{_per_request_us(run, 'server'):,.0f} µs, PostgreSQL "
        f"{_per_request_us(run, 'postgres'):,.0f} µs"
    )


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def table(calibration: Run | None, runs: list[Run]) -> str:
    lines = [
        "| target | workers | connections | webhooks/s | p50 ms | p99 ms | non-2xx | vs reference "
        "| checks | detail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    reference = _references(runs)

    rounds = max((run.round for run in runs), default=1)

    def row(run: Run, ratio: str, checks: str, detail: str) -> None:
        load = run.load
        errors = "; ".join(f"{name}: {count}" for name, count in load["errors"].items())
        cells = [
            run.target.name + (f", round {run.round}" if rounds > 1 else ""),
            str(run.target.workers),
            str(run.target.connections),
            f"**{load['rate']:,.0f}**",
            _ms(load["p50_ms"]),
            _ms(load["p99_ms"]),
            str(run.non_2xx) + (f" ({errors})" if errors else ""),
            ratio,
            checks,
            detail,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")

    if calibration is not None:
        per_request = calibration.cpu["load"] / (calibration.load["requests"] or 1)
        row(
            calibration,
            "—",
            "—",
            "the load generator alone against a do-nothing ASGI endpoint: its ceiling is about "
            f"{1 / per_request:,.0f} requests/s per core of its own; " + _cpu_text(calibration),
        )
    for run in runs:
        ratio = "—"
        if run.target.name.startswith("service") and (value := _ratio(run, reference)):
            ratio = f"**{value:.2f}**"
        detail = [_cpu_text(run)]
        if run.target.name.startswith("service"):
            requests = run.load["deliveries"] or 1
            detail.append(
                f"server log {run.log_lines / requests:.1f} lines, "
                f"{run.log_bytes / requests:,.0f} bytes per webhook"
            )
            if run.target.name == BACKFILL_TARGET:
                detail.append(
                    "a bulk backfill of the same store ran throughout the window"
                    if run.beside_throughout
                    else "**the backfill finished before the window ended**"
                )
            if run.batches:
                detail.append(
                    f"{run.batch_events / run.batches:.1f} events per transaction on average "
                    f"({run.batches:,.0f} coalesced commits)"
                )
        body = run.load["body_bytes"]
        detail.append(
            f"bodies {body['min']:,}-{body['max']:,} bytes (median {body['p50']:,}); "
            f"p90 {_ms(run.load['p90_ms'])} ms, max {_ms(run.load['max_ms'])} ms"
        )
        row(
            run,
            ratio,
            ("ok: " if run.checks.get("ok") else "**FAILED**: ")
            + run.checks.get("text", "not checked"),
            "; ".join(detail),
        )
    return "\n".join(lines)


def _setting(run: Run) -> tuple[int, int, int]:
    return run.target.workers, run.target.connections, run.round


def _references(runs: list[Run]) -> dict[tuple[int, int, int], Run]:
    return {_setting(run): run for run in runs if run.target.name == "reference"}


def _ratio(run: Run, references: Mapping[tuple[int, int, int], Run]) -> float | None:
    """The run's rate over the reference's at its setting and round (None: no reference)."""
    base = references.get(_setting(run))
    return run.load["rate"] / base.load["rate"] if base and base.load["rate"] else None


def p99_bound(run: Run) -> str:
    """What the p99 goal asks of this machine, from the run's own figures. With `connections`
    requests always in flight (a closed loop), the mean latency is connections / rate
    (Little's law) and p99 is at least the mean: p99 under the goal needs more than
    connections / goal requests a second, whatever the code, and with this run's spread (its
    p99 over its mean) proportionally more. At the run's CPU per request (server, PostgreSQL
    and load generator together) each rate takes so many cores."""
    floor = run.target.connections / (P99_GOAL_MS / 1000)
    rate = run.load["rate"]
    spread = run.load["p99_ms"] / (run.target.connections / rate * 1000) if rate else 1.0
    server, postgres, load = (_per_request_us(run, key) for key in ("server", "postgres", "load"))
    per_request = (server + postgres + load) / 1e6
    return (
        f"p99 < {P99_GOAL_MS:.0f} ms with {run.target.connections} requests always in flight "
        f"needs more than {floor:,.0f} webhooks/s (the mean latency is connections / rate, and "
        f"p99 is at least the mean), and {floor * spread:,.0f}/s at this run's p99 of "
        f"{spread:.1f}x its mean; at this run's CPU per webhook (server {server:,.0f}, "
        f"PostgreSQL {postgres:,.0f}, load generator {load:,.0f} µs) those rates take "
        f"{floor * per_request:.1f} and {floor * spread * per_request:.1f} cores of the "
        f"machine's {_cores(run)}"
    )


def goal_summary(runs: list[Run]) -> str:
    services = [run for run in runs if run.target.name == "service"]
    reference = _references(runs)
    if not services:
        return ""
    by_setting: dict[tuple[int, int], list[Run]] = {}
    for run in services:
        by_setting.setdefault((run.target.workers, run.target.connections), []).append(run)
    lines = []
    for (workers, connections), rounds in by_setting.items():
        scored = [(_ratio(run, reference), run) for run in rounds]
        ratios = [value for value, _ in scored if value is not None]
        # Several rounds: the median run (by ratio, or by rate without a reference) speaks
        # for the setting, and the range says how far the rounds spread.
        scored.sort(key=lambda pair: pair[1].load["rate"] if pair[0] is None else pair[0])
        middle = scored[(len(scored) - 1) // 2][1]
        if not ratios:
            ratio_text = "no reference at this setting"
        else:
            ratio = statistics.median(ratios)
            verdict = "met" if ratio >= RATIO_GOAL else "**not met**"
            ratio_text = f"ratio {ratio:.2f} ({verdict})"
            if len(ratios) > 1:
                ratio_text = (
                    f"median ratio of {len(ratios)} alternating rounds {ratio:.2f} "
                    f"(range {min(ratios):.2f}-{max(ratios):.2f}; {verdict})"
                )
        p99 = middle.load["p99_ms"]
        p99_text = f"p99 {_ms(p99)} ms"
        if len(rounds) > 1:
            p99_text += f" (median round; {', '.join(_ms(r.load['p99_ms']) for r in rounds)})"
        if connections >= P99_CONNECTIONS:
            p99_text += f" ({'met' if p99 < P99_GOAL_MS else '**not met**'})"
            if p99 >= P99_GOAL_MS:
                p99_text += f": {p99_bound(middle)}"
        rates = ", ".join(f"{run.load['rate']:,.0f}" for run in rounds)
        lines.append(
            f"- {workers} worker(s), {connections} connections: {rates} webhooks/s, "
            f"{ratio_text}; {p99_text}"
        )
    return (
        f"Goal (issue #16): throughput ≥ {RATIO_GOAL} x the reference's at the same worker count "
        f"and connections, and p99 < {P99_GOAL_MS:.0f} ms at {P99_CONNECTIONS} connections.\n\n"
        + "\n".join(lines)
    )


# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 s warm-up and 5 s measured per target"
    )
    parser.add_argument("--warmup", type=float, help="seconds per target (default 5; quick 2)")
    parser.add_argument("--duration", type=float, help="seconds per target (default 20; quick 5)")
    parser.add_argument(
        "--connections",
        default="32,64",
        help="keep-alive connection counts, each a run per target (default 32,64)",
    )
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts (default 1,2)")
    parser.add_argument(
        "--targets",
        default="reference,service,sqlite",
        help="which targets to run (comma-separated; default reference,service,sqlite: the "
        "service on the embedded SQLite default, one worker only)",
    )
    parser.add_argument(
        "--no-calibrate", action="store_true", help="skip the generator-vs-no-op measurement"
    )
    parser.add_argument(
        "--sign-with",
        choices=("app", "store"),
        default="app",
        help="sign with the app secret (SHOPIFY_API_SECRET, the usual case; default) or the "
        "store's own webhook secret (the service tries the app secret first, then decrypts "
        "the store's)",
    )
    parser.add_argument(
        "--log-format",
        help="LOG_FORMAT for the service (default: unset, the service's default, json)",
    )
    parser.add_argument(
        "--backfill-orders",
        type=int,
        default=100_000,
        help="a last service run (1 worker, the largest connection count) during a bulk "
        "backfill of the same store from the simulator, with this many orders (default "
        "100,000; 0 skips it)",
    )
    parser.add_argument("--duplicate-share", type=float, default=0.05)
    parser.add_argument("--stale-share", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL, help="an admin database URL")
    parser.add_argument(
        "--app-role",
        default=APP_ROLE,
        help=f"role the servers connect as (default {APP_ROLE}, created without a password "
        "if missing; '' for the admin URL's role)",
    )
    parser.add_argument(
        "--inbox-sizes",
        type=int,
        nargs="+",
        metavar="N",
        help="instead of the usual table: for each N, prefill the inbox with N events (and "
        "their keys) spread over months, then measure the service; reports the rate at each "
        "size and largest/smallest (e.g. --inbox-sizes 1000000 10000000)",
    )
    parser.add_argument(
        "--prefill-months",
        type=int,
        default=12,
        help="months the prefilled events are spread over (default 12)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternating rounds of the targets at each setting (default 1); the goal line "
        "then gives the median ratio and its range: on a machine other work shares, one "
        "window's ratio moves by a tenth or more",
    )
    parser.add_argument("--no-append", action="store_true", help="do not write bench/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    warmup = args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0)
    duration = args.duration if args.duration is not None else (5.0 if args.quick else 20.0)
    worker_counts = [int(part) for part in args.workers.split(",") if part.strip()]
    connection_counts = [int(part) for part in args.connections.split(",") if part.strip()]
    names = [part.strip() for part in args.targets.split(",") if part.strip()]
    encryption_key = generate_key()
    began = time.monotonic()
    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    database_url: str | None = None
    calibration: Run | None = None
    runs: list[Run] = []
    sized: list[tuple[dict[str, Any], Run]] = []  # --inbox-sizes: (the prefill, its run)
    finished = False
    python = sys.executable
    base_env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "SHOPIFY_API_SECRET", "LOG_FORMAT", "WEB_CONCURRENCY"}
    }
    # `shopify-receiver` imports the project through the environment's install, which may be
    # another checkout's (an editable install): this checkout's code is what is served and
    # fingerprinted.
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")]))
    try:
        log(f"creating and migrating a database on {make_url(args.postgres_url).host} ...")
        database_url = create_database(args.postgres_url, args.app_role or None)
        asyncio.run(_create_tenant(database_url, encryption_key))
        served_url = as_role(database_url, args.app_role or None)
        secret = APP_SECRET if args.sign_with == "app" else STORE_SECRET
        service_env = base_env | {
            "DATABASE_URL": served_url,
            "SHOPIFY_API_SECRET": APP_SECRET,
            "SECRET_KEY": "bench-session-key",
            "ENCRYPTION_KEYS": encryption_key,
        }
        if args.log_format:
            service_env["LOG_FORMAT"] = args.log_format
        reference_env = base_env | {
            "REFERENCE_DATABASE_URL": dsn(served_url),
            "REFERENCE_WEBHOOK_SECRET": secret,
        }

        def uvicorn(app: str, workers: int, *options: str) -> list[str]:
            return [
                python,
                "-m",
                "uvicorn",
                app,
                *options,
                "--host",
                "127.0.0.1",
                "--workers",
                str(workers),
                "--no-access-log",
            ]

        def service(workers: int) -> Target:
            return service_target("service", workers, connection_counts[-1], service_env, secret)

        if args.inbox_sizes:
            for size in args.inbox_sizes:
                reset_tables(database_url)
                log(f"prefilling the inbox with {size:,} events over {args.prefill_months} months")
                prefill = prefill_inbox(database_url, size, args.prefill_months)
                log(
                    f"prefilled {size:,} events in {prefill['seconds']:.0f} s: "
                    f"{prefill['partitions']} partitions, "
                    f"{prefill['events_bytes'] / 2**30:.1f} GiB of events, "
                    f"{prefill['keys_bytes'] / 2**30:.2f} GiB of keys"
                )
                for workers in worker_counts:
                    clear_service_rows(database_url, prefill["end"])
                    run = run_target(
                        service(workers), args, workdir, database_url, args.seed, warmup, duration
                    )
                    check_service(run, database_url, since=prefill["end"])
                    log(f"service x{workers}: checks {'ok' if run.checks['ok'] else 'FAILED'}")
                    sized.append((prefill, run))
            finished = True
            return _inbox_results(args, argv, sized, started_at, began, warmup, duration)
        if not args.no_calibrate:
            noop = Target(
                "no-op",
                1,
                connection_counts[0],
                uvicorn("bench.reference_app:noop_app", 1),
                base_env,
                "/",
                secret,
            )
            calibration = run_target(
                noop, args, workdir, None, args.seed, min(warmup, 2.0), min(duration, 10.0)
            )
        settings = [(w, c) for w in worker_counts for c in connection_counts]
        for (workers, connections), round_ in itertools.product(
            settings, range(1, args.rounds + 1)
        ):
            for name in names:
                if name == "reference":
                    target = Target(
                        "reference",
                        workers,
                        connections,
                        uvicorn("bench.reference_app:create_app", workers, "--factory"),
                        reference_env,
                        "/healthz",
                        secret,
                    )
                elif name == "service":
                    target = service_target("service", workers, connections, service_env, secret)
                elif name == "sqlite":
                    if workers != 1:
                        continue  # one process writes the embedded file
                    sqlite_path = workdir / f"sqlite-{connections}-{round_}.db"
                    sqlite_url = f"sqlite+aiosqlite:///{sqlite_path}"
                    migrations.upgrade(sqlite_url)
                    asyncio.run(_create_tenant(sqlite_url, encryption_key))
                    target = service_target(
                        "service (SQLite)",
                        workers,
                        connections,
                        service_env | {"DATABASE_URL": sqlite_url},
                        secret,
                    )
                else:
                    raise SystemExit(f"unknown target {name!r}")
                reset_tables(database_url)
                run = run_target(
                    target,
                    args,
                    workdir,
                    None if name == "sqlite" else database_url,
                    args.seed,
                    warmup,
                    duration,
                )
                if name == "service":
                    check_service(run, database_url)
                elif name == "sqlite":
                    check_sqlite(run, sqlite_path)
                else:
                    check_reference(run, database_url)
                run.round = round_
                verdict = "ok" if run.checks["ok"] else "FAILED"
                log(f"{name} x{workers} @{connections}: checks {verdict}")
                runs.append(run)
        if args.backfill_orders and "service" in names:
            runs.append(
                burst_during_backfill(
                    args,
                    workdir,
                    database_url,
                    service_env,
                    encryption_key,
                    secret,
                    warmup,
                    duration,
                    connections=connection_counts[-1],
                )
            )
        finished = True
    finally:
        clean_up(args.postgres_url, database_url, workdir)
        elapsed = time.monotonic() - began
        if runs or calibration:
            print(table(calibration, runs), flush=True)
        if not finished:
            log(f"aborted after {elapsed:.0f} s; nothing appended to {RESULTS_FILE.name}")

    summary = goal_summary(runs)
    print("\n" + summary, flush=True)
    code_note = _code_note(runs) + _load_note([*runs, *([calibration] if calibration else [])])
    print(code_note, flush=True)
    if not args.no_append:
        command_line = " ".join(
            ["python -m bench.webhooks", *(sys.argv[1:] if argv is None else argv)]
        )
        section = "\n".join(
            [
                f"## Webhooks ({started_at:%Y-%m-%d %H:%M} UTC)",
                "",
                f"`{command_line}`, total run time {elapsed / 60:.1f} min; "
                f"{args.connections} keep-alive connections, {warmup:.0f} s warm-up + "
                f"{duration:.0f} s measured per target; signed with the {args.sign_with} "
                f"secret; service log format {args.log_format or 'default (json)'}. {code_note}",
                "",
                *machine_info(args.postgres_url),
                "",
                table(calibration, runs),
                "",
                summary,
                "",
                NOTES,
                "",
            ]
        )
        append_results(section)
        log(f"appended to {RESULTS_FILE}")
    failed = [run for run in runs if not run.checks.get("ok")]
    return 1 if failed else 0


def inbox_table(sized: list[tuple[dict[str, Any], Run]]) -> str:
    lines = [
        "| inbox events | partitions | on disk (events + keys) | prefill | workers | webhooks/s "
        "| p50 ms | p99 ms | non-2xx | vs smallest | checks | detail |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    smallest: dict[int, float] = {}
    for prefill, run in sorted(sized, key=lambda item: (item[0]["size"], item[1].target.workers)):
        workers, rate = run.target.workers, run.load["rate"]
        base = smallest.setdefault(workers, rate)
        cells = [
            f"{prefill['size']:,}",
            str(prefill["partitions"]),
            f"{prefill['events_bytes'] / 2**30:.1f} + {prefill['keys_bytes'] / 2**30:.2f} GiB",
            f"{prefill['seconds'] / 60:.1f} min",
            str(workers),
            f"**{rate:,.0f}**",
            _ms(run.load["p50_ms"]),
            _ms(run.load["p99_ms"]),
            str(run.non_2xx),
            f"**{rate / base:.2f}**" if base else "—",
            ("ok: " if run.checks.get("ok") else "**FAILED**: ")
            + run.checks.get("text", "not checked"),
            _cpu_text(run),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def inbox_summary(sized: list[tuple[dict[str, Any], Run]]) -> str:
    by_workers: dict[int, list[tuple[int, float]]] = {}
    for prefill, run in sized:
        by_workers.setdefault(run.target.workers, []).append((prefill["size"], run.load["rate"]))
    lines = []
    for workers, rates in sorted(by_workers.items()):
        rates.sort()
        (small, low), (large, high) = rates[0], rates[-1]
        ratio = high / low if low else 0.0
        lines.append(
            f"- {workers} worker(s): {low:,.0f} webhooks/s at {small:,} events, {high:,.0f} at "
            f"{large:,}: ratio {ratio:.2f} "
            f"({'met' if ratio >= INBOX_RATIO_GOAL else '**not met**'})"
        )
    return (
        f"Goal (issue #16, item 5): the webhook rate does not fall as the inbox grows, "
        f"largest/smallest ≥ {INBOX_RATIO_GOAL}.\n\n" + "\n".join(lines)
    )


def _inbox_results(
    args: argparse.Namespace,
    argv: list[str] | None,
    sized: list[tuple[dict[str, Any], Run]],
    started_at: datetime,
    began: float,
    warmup: float,
    duration: float,
) -> int:
    elapsed = time.monotonic() - began
    summary = inbox_summary(sized)
    code_note = _code_note([run for _, run in sized]) + _load_note([run for _, run in sized])
    print(inbox_table(sized) + "\n\n" + summary + "\n" + code_note, flush=True)
    if not args.no_append:
        command_line = " ".join(
            ["python -m bench.webhooks", *(sys.argv[1:] if argv is None else argv)]
        )
        append_results(
            "\n".join(
                [
                    f"## Webhooks as the inbox grows ({started_at:%Y-%m-%d %H:%M} UTC)",
                    "",
                    f"`{command_line}`, total run time {elapsed / 60:.1f} min; "
                    f"{args.connections} keep-alive connections, {warmup:.0f} s warm-up + "
                    f"{duration:.0f} s measured per row. {code_note}",
                    "",
                    *machine_info(args.postgres_url),
                    "",
                    inbox_table(sized),
                    "",
                    summary,
                    "",
                    INBOX_NOTES,
                    "",
                ]
            )
        )
        log(f"appended to {RESULTS_FILE}")
    return 0 if all(run.checks.get("ok") for _, run in sized) else 1


def _load_note(runs: list[Run]) -> str:
    """A warning when other processes took a noticeable share of the machine meanwhile."""
    busiest = max((run.cpu["other"] / run.load["seconds"] for run in runs), default=0.0)
    if busiest < OTHER_LOAD_WARNING:
        return ""
    return (
        f" **Other processes used up to {busiest:.0%} of a core during the measured windows** "
        "(see each row's CPU split): the figures are skewed by work that was not this benchmark."
    )


def _code_note(runs: list[Run]) -> str:
    versions = {run.code_before for run in runs} | {run.code_after for run in runs}
    if len(versions) <= 1:
        return (
            f"Every run served the same code (fingerprint of {', '.join(SERVICE_PACKAGES)}: "
            f"{next(iter(versions), '-')})."
        )
    return (
        f"**The service's code changed during this run** ({len(versions)} versions of "
        f"{', '.join(SERVICE_PACKAGES)}: {', '.join(sorted(versions))}); the figures mix versions."
    )


NOTES = (
    "Each target is its own server process tree (uvicorn, uvloop and httptools for both) and is "
    "driven by its own load process (`python -m bench.webhook_load`: raw asyncio streams, closed "
    "loop, keep-alive) on the same machine; the three share its cores with PostgreSQL. webhooks/s "
    "= responses completed in the measured window / its length; latency is from writing the "
    "request to reading the whole response. The reference (`bench.reference_app`) is a careful "
    "minimal peer: it verifies the HMAC, parses the body, and in one transaction through a raw "
    "asyncpg pool inserts the event under its dedupe key (ON CONFLICT DO NOTHING) and upserts the "
    "record with the updated_at guard, without access log or row-level security; the same checks "
    "as the service's are run on its tables; the service runs as shipped (`shopify-receiver "
    "serve`: INFO logs, uvicorn's access log but for acknowledged webhooks, JSON lines to a file)."
    " Both connect as the same role (RLS applies to the service's tables), with 20 connections per"
    " worker. Load: a mix of orders/create, orders/updated, orders/paid, customers/create, "
    "customers/update, products/create and products/update, 5 % exact redeliveries (same event and"
    " webhook ids) and 5 % out-of-order updates (older updated_at than one already sent). Each "
    "target starts on empty tables after a CHECKPOINT. CPU comes from /proc; 'other processes' is "
    "everything else on the machine and shows when other work skewed a run. In a closed loop, mean"
    " latency is connections / throughput (Little's law): at 64 connections a p99 under 50 ms "
    "needs well over 1,280 webhooks/s. The service writes one JSON line per acknowledged webhook "
    "(its outcome; uvicorn's access line is left out for those)."
)


INBOX_NOTES = (
    "Each size starts on empty tables; the inbox is then prefilled server-side (INSERT ... "
    "SELECT generate_series, in time order) with that many processed events of the benchmark "
    "store and their dedupe keys (random UUIDs, as Shopify's event ids are), received evenly "
    "over the last `--prefill-months` months (12 by default) up to an hour before the run, one "
    "month partition each (migration 0015), ~1.3 KB jsonb bodies (an order with three line items), "
    "followed by VACUUM ANALYZE and a CHECKPOINT. The service (as shipped, as `receiver_app`) "
    "then takes the same load as in the table above: new events land in the current month's "
    "partition, and every delivery's dedupe key is checked against the whole keys table. "
    "Before each row the previous row's events are deleted. 'vs smallest' is the rate over "
    "the smallest size's at the same worker count."
)


if __name__ == "__main__":
    raise SystemExit(main())
