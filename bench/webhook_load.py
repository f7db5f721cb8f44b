"""``python -m bench.webhook_load``: the load generator of ``bench.webhooks`` (one process).

Keeps ``--connections`` keep-alive HTTP/1.1 connections busy, closed loop, with correctly signed
Shopify webhooks for ``--warmup`` + ``--duration`` seconds, then writes its figures as JSON to
``--result-file``. It prints ``MEASURE_START`` and ``MEASURE_END`` on stdout at the edges of the
measured window so that the parent can read CPU counters at the same moments.

The HTTP client is raw asyncio streams (uvloop when installed) over requests whose bytes are
built once per delivery: httpx's per-request cost (header models, URL parsing, its pool) is
several times what a request here costs, and on a 2-core machine every microsecond the generator
spends is taken from the server under test. ``bench.webhooks`` measures the generator against a
do-nothing endpoint in the same run so its ceiling is on record.

What it sends (deterministic for a ``--seed``; payloads built from receiver/webhook_samples):

- a topic mix of orders/create, orders/updated, orders/paid, customers/create, customers/update,
  products/create and products/update; an update names a recent id of its resource with a
  newer ``updated_at`` than any sent before for that id;
- compact JSON bodies from the samples, 24 target sizes per topic spread over 2-8 KB: orders
  of 1 to 5 line items, with optional sections (shipping, addresses, customer...) dropped
  until they fit their target (about 2.6-8.1 KB), products of 2 to 9 variants (3.5-8 KB),
  customers of 1 to 3 addresses (about 2-2.4 KB);
- ``--duplicate-share`` exact redeliveries: the same bytes, headers included (same
  X-Shopify-Event-Id and X-Shopify-Webhook-Id), of one of the last 500 deliveries;
- ``--stale-share`` out-of-order updates: a new event for an id whose ``updated_at`` is older
  than one already sent for that id (it must be stored but must not roll the record back).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import random
import resource
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from receiver.samples import SAMPLE_API_VERSION, sample_payload, triggered_at_header
from receiver.signature import sign

# Placeholders in the body templates. Neither occurs in the samples; the builder checks.
ID_TOKEN = "918273645500000001"
TS_TOKEN = "1999-12-31T23:59:59-00:00"
# An order's line items name variants of one product the stream created (`_request`), as a
# store's orders do: with the samples' two variant ids in every order, PostgreSQL's statistics
# say each variant is named by half the line items, and nulling the names of a removed
# variant (handlers.children) is planned as a scan of them all.
PRODUCT_TOKEN = "918273645600000002"
NO_PRODUCT_YET = 4_999_999_999_999
SHOP_TZ = timezone(timedelta(hours=-5))  # the samples' shop offset
BASE_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
RECENT_IDS = 1000  # updates name one of this many most recent ids of their resource
RECENT_DELIVERIES = 500  # duplicates copy one of this many most recent deliveries

RESOURCES = {"orders": "Order", "customers": "Customer", "products": "Product"}
# (topic, weight): creates make new ids, the rest update existing ones.
TOPIC_MIX: tuple[tuple[str, int], ...] = (
    ("orders/create", 18),
    ("orders/updated", 27),
    ("orders/paid", 10),
    ("customers/create", 5),
    ("customers/update", 15),
    ("products/create", 5),
    ("products/update", 20),
)
TEMPLATES_PER_TOPIC = 24
MIN_BODY, MAX_BODY = 2048, 8192

# Dropped, in this order, from order bodies that are still over their target size: what a
# guest, digital or POS order lacks first, then the rarely filled fields.
ORDER_OPTIONAL = (
    "shipping_lines",
    "client_details",
    "billing_address",
    "customer",
    "shipping_address",
    "discount_codes",
    "discount_applications",
    "note_attributes",
    "tax_lines",
    "order_status_url",
    "refunds",
    "fulfillments",
    "landing_site",
    "referring_site",
    "cart_token",
    "checkout_token",
    "token",
    "note",
)
# What the normaliser reads from an order; never dropped.
ORDER_KEEP = frozenset(
    {
        "id",
        "admin_graphql_api_id",
        "created_at",
        "updated_at",
        "name",
        "email",
        "currency",
        "total_price",
        "subtotal_price",
        "total_price_set",
        "subtotal_price_set",
        "financial_status",
        "fulfillment_status",
        "cancelled_at",
        "processed_at",
        "line_items",
    }
)


def compact(payload: dict[str, Any]) -> bytes:
    # Shopify sends compact JSON.
    return json.dumps(payload, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------
# Body templates


@dataclass(frozen=True)
class Template:
    topic: str
    resource: str
    body: bytes  # with ID_TOKEN and TS_TOKEN in it


def child_id(index: int) -> int:
    """A child's id made from its record's (ID_TOKEN, replaced with the record's id): ids are
    unique per store in Shopify, so no two records share a line item, variant or address."""
    return int(f"{ID_TOKEN}{index:02d}")


def _placeholders(payload: dict[str, Any], resource: str) -> dict[str, Any]:
    payload["id"] = int(ID_TOKEN)
    payload["admin_graphql_api_id"] = f"gid://shopify/{RESOURCES[resource]}/{ID_TOKEN}"
    payload["updated_at"] = TS_TOKEN
    return payload


def _order_template(topic: str, target: int, rng: random.Random) -> dict[str, Any]:
    sample = _placeholders(sample_payload(topic), "orders")
    items: list[dict[str, Any]] = sample["line_items"]

    def line_item(index: int) -> dict[str, Any]:
        item = copy.deepcopy(items[index % len(items)])
        item["id"] = child_id(index)
        item["admin_graphql_api_id"] = f"gid://shopify/LineItem/{item['id']}"
        item["quantity"] = item["current_quantity"] = rng.randint(1, 4)
        item["product_id"] = int(PRODUCT_TOKEN)
        item["variant_id"] = int(f"{PRODUCT_TOKEN}{index:02d}")
        return item

    for count in range(rng.randint(1, 5), 0, -1):
        order = copy.deepcopy(sample)
        order["line_items"] = [line_item(index) for index in range(count)]
        droppable = [key for key in ORDER_OPTIONAL if key in order] + [
            key
            for key, value in order.items()
            if key not in ORDER_KEEP
            and key not in ORDER_OPTIONAL
            and (value is None or key.endswith("_set"))
        ]
        for key in droppable:
            if len(compact(order)) <= target:
                break
            del order[key]
        if len(compact(order)) <= target:
            break
    return order


def _product_template(topic: str, target: int, rng: random.Random) -> dict[str, Any]:
    product = _placeholders(sample_payload(topic), "products")
    variants: list[dict[str, Any]] = product["variants"]
    gids: list[dict[str, Any]] = product["variant_gids"]
    for index, (variant, gid) in enumerate(zip(variants, gids, strict=True)):
        variant["id"] = child_id(index)
        variant["product_id"] = int(ID_TOKEN)
        variant["admin_graphql_api_id"] = gid["admin_graphql_api_id"] = (
            f"gid://shopify/ProductVariant/{variant['id']}"
        )
    while len(compact(product)) + 600 < target and len(variants) < 11:
        variant = copy.deepcopy(variants[len(variants) % 2])
        variant["id"] = child_id(len(variants))
        variant["admin_graphql_api_id"] = f"gid://shopify/ProductVariant/{variant['id']}"
        variant["position"] = len(variants) + 1
        variant["title"] = variant["option1"] = f"Size {len(variants) + 1}"
        variant["sku"] = f"CCT-{variant['id'] % 100000:05d}"
        variants.append(variant)
        gids.append({**gids[0], "admin_graphql_api_id": variant["admin_graphql_api_id"]})
    return product


def _customer_template(topic: str, target: int, rng: random.Random) -> dict[str, Any]:
    customer = _placeholders(sample_payload(topic), "customers")
    addresses: list[dict[str, Any]] = customer["addresses"]
    for index, address in enumerate(addresses):
        address["customer_id"] = int(ID_TOKEN)
        if address["id"] == customer["default_address"]["id"]:
            customer["default_address"]["id"] = child_id(index)
        address["id"] = child_id(index)
    customer["default_address"]["customer_id"] = int(ID_TOKEN)
    while len(compact(customer)) + 330 < target and len(addresses) < 3:
        address = copy.deepcopy(addresses[0])
        address["id"] = child_id(len(addresses))
        address["default"] = False
        address["address1"] = f"{rng.randint(1, 999)} Bank Street"
        addresses.append(address)
    return customer


BUILDERS = {"orders": _order_template, "products": _product_template}


def build_templates(rng: random.Random) -> dict[str, list[Template]]:
    templates: dict[str, list[Template]] = {}
    for topic, _ in TOPIC_MIX:
        resource = topic.split("/")[0]
        builder = BUILDERS.get(resource, _customer_template)
        built = []
        for index in range(TEMPLATES_PER_TOPIC):
            # Evenly spread targets, not random ones: every seed gets the same size range.
            target = MIN_BODY + (MAX_BODY - MIN_BODY) * index // (TEMPLATES_PER_TOPIC - 1)
            body = compact(builder(topic, target, rng))
            text = body.decode()
            if (
                text.count(TS_TOKEN) != 1
                or ID_TOKEN not in text
                or (resource == "orders") != (PRODUCT_TOKEN in text)
            ):
                raise RuntimeError(f"{topic}: the placeholders are not where they belong")
            built.append(Template(topic, resource, body))
        templates[topic] = built
    return templates


# --------------------------------------------------------------------------------------------
# The delivery stream


@dataclass(slots=True)
class Delivery:
    request: bytes  # the whole HTTP request
    resource: str
    shopify_id: int
    version: int  # updated_at = version_time(shopify_id, version)
    event_id: str
    topic: str
    body_size: int
    duplicate: bool = False
    stale: bool = False


def version_time(shopify_id: int, version: int) -> datetime:
    # A minute per version: distinct and increasing for one id.
    return BASE_TIME + timedelta(seconds=shopify_id % 3600, minutes=version)


@dataclass
class DeliveryStream:
    host: str
    path: str
    shop: str
    secret: str
    rng: random.Random
    duplicate_share: float
    stale_share: float
    templates: dict[str, list[Template]] = field(init=False)
    ids: dict[str, list[int]] = field(init=False)
    newest_sent: dict[str, dict[int, int]] = field(init=False)
    updated_ids: dict[str, list[int]] = field(init=False)  # ids with a version > 0
    recent: deque[Delivery] = field(init=False)
    next_id: int = 5_000_000_000_000

    def __post_init__(self) -> None:
        self.templates = build_templates(self.rng)
        self.ids = {resource: [] for resource in RESOURCES}
        self.newest_sent = {resource: {} for resource in RESOURCES}
        self.updated_ids = {resource: [] for resource in RESOURCES}
        self.recent = deque(maxlen=RECENT_DELIVERIES)
        self._topics = [topic for topic, _ in TOPIC_MIX]
        self._weights = [weight for _, weight in TOPIC_MIX]

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _request(self, template: Template, shopify_id: int, version: int) -> tuple[bytes, str, int]:
        stamp = version_time(shopify_id, version).astimezone(SHOP_TZ).isoformat()
        body = template.body.replace(ID_TOKEN.encode(), str(shopify_id).encode()).replace(
            TS_TOKEN.encode(), stamp.encode()
        )
        if template.resource == "orders":
            products = self.ids["products"]
            product = self.rng.choice(products) if products else NO_PRODUCT_YET
            body = body.replace(PRODUCT_TOKEN.encode(), str(product).encode())
        event_id = self._uuid()
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}\r\n"
            "User-Agent: Shopify-Captain-Hook\r\n"
            "Accept: */*\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Shopify-Topic: {template.topic}\r\n"
            f"X-Shopify-Hmac-Sha256: {sign(body, self.secret)}\r\n"
            f"X-Shopify-Shop-Domain: {self.shop}\r\n"
            f"X-Shopify-API-Version: {SAMPLE_API_VERSION}\r\n"
            f"X-Shopify-Webhook-Id: {self._uuid()}\r\n"
            f"X-Shopify-Event-Id: {event_id}\r\n"
            f"X-Shopify-Triggered-At: {triggered_at_header()}\r\n"
            "\r\n"
        )
        return head.encode() + body, event_id, len(body)

    def _new_event(self, topic: str) -> Delivery:
        resource, _, action = topic.partition("/")
        ids, newest = self.ids[resource], self.newest_sent[resource]
        if action == "create" or not ids:
            topic = f"{resource}/create"
            self.next_id += 1
            shopify_id, version = self.next_id, 0
            ids.append(shopify_id)
        else:
            shopify_id = ids[-1 - self.rng.randrange(min(len(ids), RECENT_IDS))]
            version = newest[shopify_id] + 1
            if version == 1:
                self.updated_ids[resource].append(shopify_id)
        newest[shopify_id] = version
        return self._delivery(topic, shopify_id, version, stale=False)

    def _stale_event(self) -> Delivery | None:
        """An update older than one already sent for its id (which may not be applied yet:
        then this one may apply first, and the newer one must still win)."""
        resources = [resource for resource, ids in self.updated_ids.items() if ids]
        if not resources:
            return None
        resource = self.rng.choice(resources)
        recent = self.updated_ids[resource]
        shopify_id = recent[-1 - self.rng.randrange(min(len(recent), RECENT_IDS))]
        version = self.rng.randrange(self.newest_sent[resource][shopify_id])
        topic = "orders/updated" if resource == "orders" else f"{resource}/update"
        return self._delivery(topic, shopify_id, version, stale=True)

    def _delivery(self, topic: str, shopify_id: int, version: int, *, stale: bool) -> Delivery:
        template = self.rng.choice(self.templates[topic])
        request, event_id, size = self._request(template, shopify_id, version)
        return Delivery(
            request, template.resource, shopify_id, version, event_id, topic, size, stale=stale
        )

    def next(self) -> Delivery:
        draw = self.rng.random()
        if draw < self.duplicate_share and self.recent:
            original = self.rng.choice(self.recent)
            return dataclasses.replace(original, duplicate=True)
        delivery = None
        if draw < self.duplicate_share + self.stale_share:
            delivery = self._stale_event()
        if delivery is None:
            delivery = self._new_event(self.rng.choices(self._topics, self._weights)[0])
        self.recent.append(delivery)
        return delivery


# --------------------------------------------------------------------------------------------
# HTTP


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server keeps the connection) of one HTTP/1.1 response; its body is discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 "):
        raise ProtocolError(head[:80].decode(errors="replace"))
    status = int(head[9:12])
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start >= 0:
        end = lower.index(b"\r\n", start + 2)
        length = int(lower[start + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, b"\r\nconnection: close" not in lower


@dataclass
class Figures:
    window_start: float
    window_end: float
    latencies: list[float] = field(default_factory=list)  # seconds, completions in the window
    window_status: Counter[int] = field(default_factory=Counter)
    status: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    deliveries: int = 0
    duplicates: int = 0
    stale: int = 0
    topics: Counter[str] = field(default_factory=Counter)
    sizes: list[int] = field(default_factory=list)  # bodies of first deliveries in the window
    events_sent: set[str] = field(default_factory=set)
    events_acked: set[str] = field(default_factory=set)
    acked_deliveries: int = 0
    newest_acked: dict[str, dict[int, int]] = field(
        default_factory=lambda: {resource: {} for resource in RESOURCES}
    )

    def record(self, delivery: Delivery, status: int, started: float, finished: float) -> None:
        self.status[status] += 1
        if 200 <= status < 300:
            self.acked_deliveries += 1
            self.events_acked.add(delivery.event_id)
            newest = self.newest_acked[delivery.resource]
            if newest.get(delivery.shopify_id, -1) < delivery.version:
                newest[delivery.shopify_id] = delivery.version
        if self.window_start <= finished < self.window_end:
            self.latencies.append(finished - started)
            self.window_status[status] += 1
            if not delivery.duplicate:
                self.sizes.append(delivery.body_size)


async def connection_loop(
    host: str,
    port: int,
    stream: DeliveryStream,
    figures: Figures,
    stop: asyncio.Event,
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while not stop.is_set():
        if writer is None or reader is None:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                figures.errors[f"connect: {type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)
                continue
        delivery = stream.next()
        figures.deliveries += 1
        figures.duplicates += delivery.duplicate
        figures.stale += delivery.stale and not delivery.duplicate
        figures.topics[delivery.topic] += 1
        figures.events_sent.add(delivery.event_id)
        started = time.perf_counter()
        try:
            writer.write(delivery.request)
            status, keep = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            figures.errors[type(exc).__name__] += 1
            writer.close()
            writer = reader = None
            continue
        except ProtocolError as exc:
            figures.errors[f"protocol: {exc}"] += 1
            writer.close()
            writer = reader = None
            continue
        figures.record(delivery, status, started, time.perf_counter())
        if not keep:
            writer.close()
            writer = reader = None
    if writer is not None:
        writer.close()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentile(ordered: Sequence[float], share: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    stream = DeliveryStream(
        host=f"{host}:{port}",
        path=url.path or "/",
        shop=args.shop,
        secret=args.secret,
        rng=random.Random(args.seed),
        duplicate_share=args.duplicate_share,
        stale_share=args.stale_share,
    )
    started = time.perf_counter()
    figures = Figures(started + args.warmup, started + args.warmup + args.duration)
    stop = asyncio.Event()
    cpu: dict[str, float] = {}

    async def clock() -> None:
        await asyncio.sleep(max(0.0, figures.window_start - time.perf_counter()))
        cpu["start"] = _cpu_seconds()
        print("MEASURE_START", flush=True)
        await asyncio.sleep(max(0.0, figures.window_end - time.perf_counter()))
        cpu["end"] = _cpu_seconds()
        print("MEASURE_END", flush=True)
        stop.set()

    tasks = [
        asyncio.create_task(connection_loop(host, port, stream, figures, stop))
        for _ in range(args.connections)
    ]
    await clock()
    # In-flight requests finish (their events count for the correctness check) unless the
    # server stopped answering.
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
        figures.errors["no answer 30 s after the end"] += 1
    for task in done:
        if task.exception() is not None:
            figures.errors[f"generator: {task.exception()!r}"] += 1

    ordered = sorted(figures.latencies)
    sizes = sorted(figures.sizes)
    window = figures.window_end - figures.window_start
    return {
        "requests": len(ordered),
        "seconds": window,
        "rate": len(ordered) / window,
        "p50_ms": (_percentile(ordered, 0.50) or 0.0) * 1000,
        "p90_ms": (_percentile(ordered, 0.90) or 0.0) * 1000,
        "p99_ms": (_percentile(ordered, 0.99) or 0.0) * 1000,
        "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
        "window_status": {str(code): count for code, count in figures.window_status.items()},
        "status": {str(code): count for code, count in figures.status.items()},
        "errors": dict(figures.errors),
        "deliveries": figures.deliveries,
        "duplicates": figures.duplicates,
        "stale": figures.stale,
        "topics": dict(figures.topics),
        "distinct_events_sent": len(figures.events_sent),
        "distinct_events_acked": len(figures.events_acked),
        "acked_deliveries": figures.acked_deliveries,
        "body_bytes": {
            "min": sizes[0] if sizes else 0,
            "p50": _percentile(sizes, 0.5) or 0,
            "max": sizes[-1] if sizes else 0,
            "mean": sum(sizes) / len(sizes) if sizes else 0,
        },
        "newest_acked": {
            resource: {
                str(shopify_id): version_time(shopify_id, version).isoformat()
                for shopify_id, version in newest.items()
            }
            for resource, newest in figures.newest_acked.items()
        },
        "cpu_seconds": cpu.get("end", 0.0) - cpu.get("start", 0.0),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webhook_load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--url", required=True, help="the webhook endpoint")
    parser.add_argument("--shop", required=True)
    parser.add_argument("--secret", required=True, help="signs every body")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duplicate-share", type=float, default=0.05)
    parser.add_argument("--stale-share", type=float, default=0.05)
    parser.add_argument("--result-file", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    with open(args.result_file, "w") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
