"""``python -m tests.fakeshop.benchmark [--orders N]``: how fast and how lean the simulator is
on a large store: the first pages of the backfill's order query, and the full bulk JSONL.

Client and server share this process, so times include both sides; peak memory is the
process's maximum resident set (which includes the ~100 MB parsed Admin schema), and with
``--tracemalloc`` also the peak of Python allocations during each phase.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx

from backfill.queries import BULK_RUN, BULK_STATUS, ORDERS

from .schema import admin_schema
from .server import FakeShopServer
from .store import FakeStore


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _phase(name: str, work: Callable[[], Any], trace: bool) -> dict[str, Any]:
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    detail = work()
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    if trace:
        tracemalloc.stop()
    return {
        "phase": name,
        "seconds": elapsed,
        "detail": detail,
        "rss_mb": _rss_mb(),
        "traced_mb": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakeshop.benchmark")
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args(argv)

    admin_schema()
    baseline = _rss_mb()
    store = FakeStore(
        "bench", seed=1, orders=args.orders, customers=args.orders // 10, throttle=False,
        bulk_polls_to_complete=1,
    )  # fmt: skip
    results = []
    with (
        FakeShopServer(store) as server,
        httpx.Client(headers={"X-Shopify-Access-Token": store.access_token}, timeout=600) as client,
    ):
        url = server.graphql_url()

        def pages() -> str:
            after = None
            for _ in range(args.pages):
                body = client.post(
                    url,
                    json={
                        "query": ORDERS.page_query,
                        "variables": {"first": args.page_size, "after": after},
                    },
                ).json()
                after = body["data"]["orders"]["pageInfo"]["endCursor"]
            return f"{args.pages} pages of {args.page_size}"

        def incremental() -> str:
            since = store.order_node(args.orders - 500)["updatedAt"]  # type: ignore[index]
            body = client.post(
                url,
                json={
                    "query": ORDERS.page_query,
                    "variables": {"first": 100, "query": f"updated_at:>='{since}'"},
                },
            ).json()
            return f"updated_at filter, {len(body['data']['orders']['nodes'])} nodes"

        def bulk() -> str:
            started = client.post(
                url, json={"query": BULK_RUN, "variables": {"query": ORDERS.bulk_query()}}
            ).json()
            operation = started["data"]["bulkOperationRunQuery"]["bulkOperation"]["id"]
            status = client.post(
                url, json={"query": BULK_STATUS, "variables": {"id": operation}}
            ).json()["data"]["node"]
            lines = size = 0
            with client.stream("GET", status["url"]) as download:
                for chunk in download.iter_bytes():
                    lines += chunk.count(b"\n")
                    size += len(chunk)
            assert lines == args.orders, (lines, args.orders)
            return f"{lines} JSONL lines, {size / 2**20:.0f} MiB"

        results.append(_phase("page", pages, args.tracemalloc))
        results.append(_phase("filter", incremental, args.tracemalloc))
        results.append(_phase("bulk", bulk, args.tracemalloc))
    print(f"store: {args.orders:,} orders; RSS after loading the schema: {baseline:.0f} MiB")
    for row in results:
        traced = f", traced peak {row['traced_mb']:.1f} MiB" if row["traced_mb"] is not None else ""
        print(
            f"{row['phase']:>6}: {row['seconds']:8.2f} s  {row['detail']}; "
            f"max RSS so far {row['rss_mb']:.0f} MiB{traced}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
