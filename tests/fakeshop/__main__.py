"""``python -m tests.fakeshop``: serve a simulated store for benchmarks and demos."""

from __future__ import annotations

import argparse
import gc
import json
import random
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import uvicorn

from .activity import Activity
from .app import API_VERSION, FakeShopApp
from .faults import Fault
from .schema import admin_schema
from .store import FakeStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeshop", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--shop", default="fakeshop.myshopify.com")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--max-available", type=float, default=2000.0)
    parser.add_argument("--restore-rate", type=float, default=100.0)
    parser.add_argument("--no-throttle", action="store_true", help="never answer THROTTLED")
    parser.add_argument("--throttle-status", type=int, default=200, help="200 or 429")
    parser.add_argument("--bulk-polls", type=int, default=2, help="polls until COMPLETED")
    parser.add_argument(
        "--prepare-bulk-files",
        action="store_true",
        help="write a bulk operation's file while it runs, in a child process at the lowest CPU "
        "priority, and serve it as a static file, as Shopify does (default: generate the lines "
        "during the download, in constant memory)",
    )
    parser.add_argument("--token", help="the static access token (default: derived from seed)")
    parser.add_argument("--expiring-token", action="store_true", help="also issue an expiring pair")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="probability of a random 503, 429 or dropped connection per GraphQL request",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="answer each Admin API request after SECONDS, as Shopify's round trip does "
        "(requests sent at once wait together)",
    )
    parser.add_argument("--executor", choices=("fast", "graphql-core"), default="fast")
    parser.add_argument(
        "--bulk-concurrency",
        # As Shopify: the limit follows the API version the request names.
        default="version",
        help="bulk queries at once: a number, or 'version' (default: 5 from API 2026-01, "
        "else 1, as Shopify)",
    )
    parser.add_argument("--many-line-items-every", type=int, default=250, help="0: none")
    parser.add_argument("--many-line-items", type=int, default=300)
    parser.add_argument("--many-variants-every", type=int, default=25, help="0: none")
    parser.add_argument("--many-variants", type=int, default=150)
    parser.add_argument(
        "--history-years",
        type=float,
        default=None,
        help="records spread over this many years up to now (default: 2021 to 2025)",
    )
    parser.add_argument(
        "--live",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep trading: a random change (order, payment, refund, fulfillment, price, "
        "stock) about every SECONDS, each sending its webhooks to the subscriptions",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    history: dict[str, tuple[datetime, datetime]] = {}
    if args.history_years is not None:
        now = datetime.now(UTC)
        history["history"] = (now - timedelta(days=365.25 * args.history_years), now)

    admin_schema()  # load before serving so the first request is not the slow one
    store = FakeStore(
        args.shop,
        args.seed,
        customers=args.customers,
        products=args.products,
        orders=args.orders,
        maximum_available=args.max_available,
        restore_rate=args.restore_rate,
        throttle=not args.no_throttle,
        throttle_status=args.throttle_status,
        bulk_polls_to_complete=args.bulk_polls,
        bulk_prepare_files=args.prepare_bulk_files,
        access_token=args.token,
        executor=args.executor,
        bulk_concurrency=None if args.bulk_concurrency == "version" else int(args.bulk_concurrency),
        many_line_items_every=args.many_line_items_every,
        many_line_items=args.many_line_items,
        many_variants_every=args.many_variants_every,
        many_variants=args.many_variants,
        **history,
    )
    if args.live > 0:
        # Signed with the app's client secret, to the subscriptions an app creates here.
        store.webhooks.enable()
        threading.Thread(
            target=_trade, args=(store, args.live, args.seed), name="activity", daemon=True
        ).start()
    store.latency = args.latency
    if args.fault_rate > 0:
        share = args.fault_rate / 3
        store.faults.add_random(share, Fault.http(503), seed=args.seed)
        store.faults.add_random(share, Fault.rate_limited(1.0))
        store.faults.add_random(share, Fault.drop())
    base = f"http://{args.host}:{args.port}"
    info = {
        "shop": store.shop_domain,
        "access_token": store.access_token,
        "admin_base_url_template": f"{base}/{{shop}}/admin/api/{{version}}",
        "graphql_url": f"{base}/{store.shop_domain}/admin/api/{API_VERSION}/graphql.json",
        "counts": store.counts,
        "client_id": store.tokens.client_id,
        "client_secret": store.tokens.client_secret,
    }
    if args.expiring_token:
        info["expiring"] = store.issue_expiring_token()
    print(f"fakeshop serving {store.shop_domain} on {base}", file=sys.stderr)
    print(f"  SHOPIFY_ADMIN_BASE_URL={info['admin_base_url_template']}", file=sys.stderr)
    print(f"  access token: {store.access_token}", file=sys.stderr)
    print(
        f"  client secret (SHOPIFY_API_SECRET, signs its webhooks): {store.tokens.client_secret}",
        file=sys.stderr,
    )
    # One JSON line on stdout for scripts that start the simulator and need its coordinates.
    print(json.dumps(info), flush=True)
    # The store lives as long as the process, and writing a bulk file makes objects by the
    # million: with CPython's default thresholds a quarter of the simulator's CPU went to
    # collections walking the store again and again (gc.callbacks, bench.backfill), on the
    # cores the service under test shares. Frozen, and the young generation collected less
    # often, as the service's own processes do (receiver.runtime).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    # uvicorn shuts down on SIGTERM, then raises it again under the handler it found: left at
    # the default, that killed the process before its exit handlers ran, and each benchmark
    # run left its bulk files (up to 0.8 GB) in the temporary directory.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    uvicorn.run(
        FakeShopApp([store]), host=args.host, port=args.port, log_level=args.log_level,
        access_log=False, lifespan="off",
    )  # fmt: skip
    return 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _trade(store: FakeStore, seconds: float, seed: int) -> None:
    activity = Activity(store, seed)
    pause = random.Random(seed)
    while True:
        # Irregular, like real traffic: between half and one and a half times the mean.
        time.sleep(seconds * pause.uniform(0.5, 1.5))
        try:
            activity.step()
        except Exception as exc:  # a demo keeps trading; say what went wrong
            print(f"fakeshop activity: {type(exc).__name__}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
