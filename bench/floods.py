"""``python -m bench.floods [--quick]``: a well-behaved webhook client's latency during floods.

The service runs as shipped (``shopify-receiver serve``, one worker, default limits, as the
``receiver_app`` role) on a fresh PostgreSQL database that this creates, migrates and drops.
For each flood, a flood process (``python -m bench.floods --flood NAME``) attacks the service
while this process sends correctly signed webhooks one after another on one keep-alive
connection (as Shopify does) and times each:

| flood | what |
| --- | --- |
| none | no flood: the baseline |
| idle | 5,000 connections that never finish a request head, reopened as they are closed |
| slow-bodies | 100 POSTs to /api/sync and /stores/<shop>/sync, one body byte a second |
| big-unsigned | 200 concurrent unsigned 10 MB webhook bodies, again and again |
| login-storm | 200 concurrent wrong-password logins from 200 loopback addresses |

Prints p50/p99 of the webhook client, its non-2xx answers and the ratio of each p99 to the
baseline's, and appends the table to bench/RESULTS.md (``--no-append`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.backfill import DEFAULT_ADMIN_URL, ROOT, append_results, free_port, log, machine_info
from bench.children import CHILDREN, on_sigterm, start_service, stop, stop_children
from bench.database import APP_ROLE, as_role
from bench.webhooks import (
    APP_SECRET,
    SHOP,
    _create_tenant,
    create_database,
    execute,
)
from models import create_engine, create_session_factory
from models.encryption import generate_key
from receiver.samples import webhook_headers

FLOODS = ("none", "idle", "slow-bodies", "big-unsigned", "login-storm")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
USER_EMAIL = "bench-admin@example.com"
BIG_BODY = 10 * 1024 * 1024
# What the flood process saw: status code (or error name) -> count, printed when it ends.
SEEN: dict[str, int] = {}


def seen(what: object) -> None:
    SEEN[str(what)] = SEEN.get(str(what), 0) + 1


# --------------------------------------------------------------------------------------------
# The floods (run in their own process, so their CPU is not the measuring client's)


async def flood_idle(host: str, port: int, stop_at: float) -> None:
    async def one(index: int) -> None:
        while time.monotonic() < stop_at:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            if index % 2:
                writer.write(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(max(0.0, stop_at - time.monotonic())):
                    await reader.read()  # until the server closes it
            writer.close()

    await asyncio.gather(*(one(index) for index in range(5000)))


async def flood_slow_bodies(host: str, port: int, stop_at: float, token: str) -> None:
    async def one(index: int) -> None:
        path = "/api/sync" if index % 2 else f"/stores/{SHOP}/sync"
        kind = "application/json" if index % 2 else "application/x-www-form-urlencoded"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {kind}\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        while time.monotonic() < stop_at:
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(head)
                while time.monotonic() < stop_at:
                    writer.write(b"x")
                    try:
                        async with asyncio.timeout(1.0):
                            await reader.read(1024)
                        break  # answered (408) or closed: start over
                    except TimeoutError:
                        continue
                writer.close()

    await asyncio.gather(*(one(index) for index in range(100)))


async def flood_big_unsigned(host: str, port: int, stop_at: float) -> None:
    body = b"{" + b" " * (BIG_BODY - 2) + b"}"
    head = (
        "POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nX-Shopify-Topic: orders/create\r\n"
        f"X-Shopify-Shop-Domain: {SHOP}\r\nX-Shopify-Hmac-Sha256: bm9wZQ==\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def one() -> None:
        while time.monotonic() < stop_at:
            with contextlib.suppress(OSError, TimeoutError):
                reader, writer = await asyncio.open_connection(host, port)
                async with asyncio.timeout(max(0.1, stop_at - time.monotonic())):
                    writer.write(head + body)
                    await writer.drain()
                    seen((await reader.readline())[9:12].decode() or "closed")
                writer.close()

    await asyncio.gather(*(one() for _ in range(200)))


async def flood_logins(host: str, port: int, stop_at: float) -> None:
    # One TLS context for all (plain http here): building one per client costs ~30 ms of CPU.
    context = ssl.create_default_context()

    async def one(index: int) -> None:
        address = f"127.0.{1 + index // 250}.{1 + index % 250}"
        transport = httpx.AsyncHTTPTransport(local_address=address, verify=context)
        async with httpx.AsyncClient(
            base_url=f"http://{host}:{port}", transport=transport, timeout=5
        ) as client:
            while time.monotonic() < stop_at:
                try:
                    page = await client.get("/login")
                    match = CSRF.search(page.text)
                    data = {
                        "email": f"nobody{index}@example.com",
                        "password": "wrong password",
                        "csrf_token": match.group(1) if match else "",
                    }
                    seen((await client.post("/login", data=data)).status_code)
                except httpx.HTTPError as exc:
                    seen(type(exc).__name__)

    await asyncio.gather(*(one(index) for index in range(200)))


def run_flood(name: str, port: int, seconds: float, token: str) -> None:
    stop_at = time.monotonic() + seconds
    host = "127.0.0.1"
    floods = {
        "idle": lambda: flood_idle(host, port, stop_at),
        "slow-bodies": lambda: flood_slow_bodies(host, port, stop_at, token),
        "big-unsigned": lambda: flood_big_unsigned(host, port, stop_at),
        "login-storm": lambda: flood_logins(host, port, stop_at),
    }
    asyncio.run(floods[name]())
    print(f"[flood {name}] answers seen: {dict(sorted(SEEN.items()))}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# The well-behaved webhook client


@dataclass
class Figures:
    flood: str
    latencies: list[float]
    failures: int
    peak_rss_mb: float = 0.0

    def percentile(self, share: float) -> float | None:
        ordered = sorted(self.latencies)
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def probe(port: int, seconds: float, flood: str) -> Figures:
    url = f"http://127.0.0.1:{port}/webhooks/shopify"
    latencies: list[float] = []
    failures = 0
    stop_at = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < stop_at:
            body = (
                b'{"id": %d, "email": "probe@example.com", "updated_at": "2026-01-01T00:00:00Z"}'
                % (uuid.uuid4().int >> 80)
            )
            headers = webhook_headers("customers/create", SHOP, body, APP_SECRET)
            started = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            latencies.append(elapsed)  # a failure counts with the time it took to fail
            failures += not ok
    return Figures(flood, latencies, failures)


# --------------------------------------------------------------------------------------------
# The run


async def _bench_credentials(url: str) -> str:
    from models import User
    from receiver.auth import create_api_token, hash_password

    engine = create_engine(url)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            session.add(User(email=USER_EMAIL, password_hash=hash_password("pw"), is_admin=True))
            return await create_api_token(session, "bench-floods")
    finally:
        await engine.dispose()


def peak_rss_mb(pid: int) -> float:
    """The service's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def table(results: list[Figures]) -> str:
    base = results[0].percentile(0.99) if results else None
    lines = [
        "| flood | webhooks | non-200 | p50 ms | p99 ms | p99 / no flood | service peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for figures in results:
        p99 = figures.percentile(0.99)
        ratio = f"{p99 / base:.1f}" if p99 is not None and base else "-"
        lines.append(
            f"| {figures.flood} | {len(figures.latencies)} | {figures.failures} | "
            f"{_ms(figures.percentile(0.5))} | {_ms(p99)} | {ratio} | {figures.peak_rss_mb:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floods", description=__doc__)
    parser.add_argument("--admin-url", default=os.environ.get("BENCH_ADMIN_URL", DEFAULT_ADMIN_URL))
    parser.add_argument("--seconds", type=float, default=10.0, help="per flood")
    parser.add_argument("--quick", action="store_true", help="4 s per flood")
    parser.add_argument("--floods", default=",".join(FLOODS))
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--flood", choices=FLOODS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flood:
        run_flood(args.flood, args.port, args.seconds, args.token)
        return 0
    seconds = 4.0 if args.quick else args.seconds
    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="bench-floods-"))
    database_url: str | None = None
    try:
        database_url = create_database(args.admin_url, APP_ROLE)
        key = generate_key()
        asyncio.run(_create_tenant(database_url, key))
        token = asyncio.run(_bench_credentials(database_url))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": as_role(database_url, APP_ROLE),
            "SHOPIFY_API_SECRET": APP_SECRET,
            "SECRET_KEY": "bench-floods-secret-key",
            "ENCRYPTION_KEYS": key,
            "PERIODIC_CHECKS": "off",
        }
        log_path = workdir / "service.log"
        server = start_service(ROOT, env, port, log_path, timeout=60)
        results: list[Figures] = []
        for flood in args.floods.split(","):
            flooder = None
            if flood != "none":
                flooder = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.floods",
                        "--flood",
                        flood,
                        "--port",
                        str(port),
                        "--seconds",
                        str(seconds + 2),
                        "--token",
                        token,
                    ],
                    cwd=ROOT,
                    start_new_session=True,
                )
                CHILDREN.append(flooder)
                time.sleep(2)  # the flood builds up before the measured window
            log(f"{flood}: measuring {seconds:.0f} s")
            results.append(asyncio.run(probe(port, seconds, flood)))
            results[-1].peak_rss_mb = peak_rss_mb(server.pid)
            if flooder is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    flooder.wait(timeout=15)  # it prints what it saw
                stop(flooder)
            if server.poll() is not None:
                raise RuntimeError(f"the service died: {log_path.read_text()[-3000:]}")
        text = table(results)
        print(text)
        if not args.no_append:
            date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            info = "\n".join(machine_info(args.admin_url))
            append_results(f"## Floods ({date})\n\n{info}\n\n{text}\n")
        return 0
    finally:
        stop_children()
        if database_url is not None:
            with contextlib.suppress(Exception):
                name = database_url.rsplit("/", 1)[1]
                execute(args.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    raise SystemExit(main())
