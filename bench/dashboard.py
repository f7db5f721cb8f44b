"""How fast the store page and its JSON answer on a store of many orders.

A fresh PostgreSQL database gets two stores: one with N orders (default 1,000,000) spread
evenly over three years, two line items each, a refund on every 25th, 200 products of two
variants with stock at two locations; and an empty one, the reference. Both are filled by SQL
(`generate_series`), then vacuumed and analysed as autovacuum would leave them. The service
runs as shipped (`shopify-receiver serve`, one worker, as the non-superuser app role, so
row-level security applies), and every store page and `/api/stats` for each date range is
timed over HTTP on loopback, big store beside empty store: the first request (top products of
the long ranges not yet in the app's 60 s cache) and the median of the next R. The slowest is
printed last.

    python -m bench.dashboard [--orders N] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench.backfill import DEFAULT_ADMIN_URL, ROOT, free_port, log, machine_info
from bench.children import on_sigterm, start_service, stop_children
from bench.database import APP_ROLE, app_role_grants, as_role
from bench.webhooks import APP_SECRET, execute
from models import migrate as migrations
from models.encryption import generate_key
from receiver.auth import hash_password

BIG = "bench-big.myshopify.com"
EMPTY = "bench-empty.myshopify.com"
EMAIL = "bench@example.com"
PASSWORD = "bench dashboard password"
RANGES = ("7d", "30d", "90d", "12m", "all")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
STARTUP_TIMEOUT = 90.0
YEARS = 3


def create_database(admin_url: str) -> str:
    name = f"bench_dashboard_{uuid.uuid4().hex[:10]}"
    execute(admin_url, f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url)
    execute(url, *app_role_grants(name, APP_ROLE))
    return url


def fill(url: str, orders: int) -> None:
    """Two stores and an admin; the big store's history by generate_series (as the owner,
    which row-level security does not bind)."""
    seconds = YEARS * 365 * 86400
    statements = [
        "INSERT INTO tenants (shop_domain, status, credentials_status, created_at, updated_at) "
        f"VALUES ('{BIG}', 'active', 'ok', now(), now()), "
        f"('{EMPTY}', 'active', 'ok', now(), now())",
        "INSERT INTO users (email, password_hash, is_admin, created_at) "
        f"VALUES ('{EMAIL}', '{hash_password(PASSWORD)}', true, now())",
        # Order g happened g steps back from a minute ago: N orders evenly over three years.
        "INSERT INTO orders (tenant_id, shopify_id, name, currency, total_price, "
        "subtotal_price, financial_status, processed_at, shopify_created_at, "
        "shopify_updated_at, synced_at, source) "
        "SELECT t.id, g, '#' || g, CASE WHEN g % 10 = 0 THEN 'EUR' ELSE 'USD' END, "
        "(10 + g % 90) + 0.99, (10 + g % 90) + 0.99, 'paid', at, at, at, now(), 'backfill' "
        f"FROM tenants t, generate_series(1, {orders}) g, "
        f"LATERAL (SELECT now() - interval '1 minute' - g * interval '{seconds / orders} "
        "seconds' AS at) moment "
        f"WHERE t.shop_domain = '{BIG}'",
        "INSERT INTO order_line_items (tenant_id, shopify_id, order_shopify_id, "
        "product_shopify_id, variant_shopify_id, title, variant_title, quantity, price, "
        "currency, synced_at, source) "
        "SELECT t.id, g, (g + 1) / 2, p, p * 10 + g % 2, 'Product ' || p, "
        "CASE WHEN g % 2 = 0 THEN 'Small' ELSE 'Large' END, 1 + g % 3, 4.50 + p, "
        "CASE WHEN ((g + 1) / 2) % 10 = 0 THEN 'EUR' ELSE 'USD' END, now(), 'backfill' "
        f"FROM tenants t, generate_series(1, {2 * orders}) g, "
        "LATERAL (SELECT (g::bigint * 7919) % 200 + 1 AS p) product "
        f"WHERE t.shop_domain = '{BIG}'",
        "INSERT INTO order_refunds (tenant_id, shopify_id, order_shopify_id, processed_at, "
        "total_refunded, currency, synced_at, source) "
        "SELECT o.tenant_id, o.shopify_id, o.shopify_id, o.processed_at, 5.00, o.currency, "
        "now(), 'backfill' FROM orders o WHERE o.shopify_id % 25 = 0",
        "INSERT INTO products (tenant_id, shopify_id, title, synced_at, source) "
        "SELECT t.id, p, 'Product ' || p, now(), 'backfill' "
        f"FROM tenants t, generate_series(1, 200) p WHERE t.shop_domain = '{BIG}'",
        "INSERT INTO product_variants (tenant_id, shopify_id, product_shopify_id, title, sku, "
        "inventory_item_shopify_id, synced_at, source) "
        "SELECT t.id, p * 10 + s, p, CASE WHEN s = 0 THEN 'Small' ELSE 'Large' END, "
        "'SKU-' || p || '-' || s, p * 10 + s, now(), 'backfill' "
        "FROM tenants t, generate_series(1, 200) p, generate_series(0, 1) s "
        f"WHERE t.shop_domain = '{BIG}'",
        "INSERT INTO inventory_levels (tenant_id, inventory_item_shopify_id, "
        "location_shopify_id, available, synced_at, source) "
        "SELECT v.tenant_id, v.inventory_item_shopify_id, l, (v.shopify_id * 13 + l) % 40, "
        "now(), 'backfill' FROM product_variants v, generate_series(1, 2) l",
    ]
    started = time.monotonic()
    execute(url, *statements)
    log(
        f"filled {orders:,} orders, {2 * orders:,} line items in {time.monotonic() - started:.0f} s"
    )
    execute(url, "VACUUM ANALYZE")


@dataclass
class Timing:
    path: str
    seconds: list[float] = field(default_factory=list)
    # The first request: nothing of this store and range in the app's top-items cache yet.
    first: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def sign_in(client: httpx.Client) -> None:
    login = client.get("/login")
    match = CSRF.search(login.text)
    if match is None:
        raise RuntimeError("no csrf_token on /login")
    response = client.post(
        "/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": match.group(1)}
    )
    if response.status_code != 303:
        raise RuntimeError(f"sign-in answered {response.status_code}")


def measure(base_url: str, repeat: int) -> list[tuple[Timing, Timing]]:
    """(big store, empty store) timings of each page and JSON endpoint for each range."""
    pairs: list[tuple[Timing, Timing]] = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        sign_in(client)
        paths = [f"/stores/{{shop}}?range={key}" for key in RANGES]
        paths += [f"/api/stats?shop={{shop}}&range={key}" for key in RANGES]
        for path in paths:
            timings = []
            for shop in (BIG, EMPTY):
                timing = Timing(path.format(shop=shop))
                started = time.perf_counter()
                client.get(timing.path)
                timing.first = time.perf_counter() - started
                for _ in range(repeat):
                    started = time.perf_counter()
                    response = client.get(timing.path)
                    timing.seconds.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(f"{timing.path} answered {response.status_code}")
                timings.append(timing)
            pairs.append((timings[0], timings[1]))
            log(f"{path}: {timings[0].median * 1000:.0f} ms / {timings[1].median * 1000:.0f} ms")
    return pairs


def table(pairs: list[tuple[Timing, Timing]], orders: int) -> str:
    lines = [
        f"| endpoint | {orders:,} orders: first ms | then median ms | max ms "
        "| empty store: median ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for big, empty in sorted(pairs, key=lambda pair: pair[0].median, reverse=True):
        path = big.path.replace(BIG, "{shop}")
        lines.append(
            f"| `{path}` | {big.first * 1000:.0f} | {big.median * 1000:.0f} | "
            f"{max(big.seconds) * 1000:.0f} | "
            f"{empty.median * 1000:.0f} |"
        )
    slowest = max(pairs, key=lambda pair: pair[0].median)
    coldest = max(pairs, key=lambda pair: pair[0].first)
    lines.append("")
    lines.append(
        f"Slowest: `{slowest[0].path.replace(BIG, '{shop}')}` at "
        f"{slowest[0].median * 1000:.0f} ms median ({slowest[1].median * 1000:.0f} ms on the "
        f"empty store); slowest first request: `{coldest[0].path.replace(BIG, '{shop}')}` at "
        f"{coldest[0].first * 1000:.0f} ms."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__)
    parser.add_argument("--postgres-url", default=DEFAULT_ADMIN_URL, help="an admin database URL")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per endpoint")
    parser.add_argument("--keep", action="store_true", help="keep the database (prints its URL)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    database_url: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        database_url = create_database(args.postgres_url)
        fill(database_url, args.orders)
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": as_role(database_url, APP_ROLE),
            "SHOPIFY_API_SECRET": APP_SECRET,
            "SECRET_KEY": "bench-dashboard-secret-key",
            "ENCRYPTION_KEYS": generate_key(),
            "PERIODIC_CHECKS": "off",
        }
        start_service(ROOT, env, port, workdir / "service.log", timeout=STARTUP_TIMEOUT)
        pairs = measure(f"http://127.0.0.1:{port}", args.repeat)
        print("\n".join(machine_info(args.postgres_url)))
        print()
        print(table(pairs, args.orders))
        return 0
    finally:
        stop_children()
        if database_url is not None:
            if args.keep:
                log(f"kept {database_url}")
            else:
                with contextlib.suppress(Exception):
                    name = make_url(database_url).database
                    execute(args.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.suppress(OSError):
            (workdir / "service.log").unlink()
            workdir.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
