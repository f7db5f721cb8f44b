"""The gapless handoff: an initial backfill pages through a store while Shopify keeps changing
it and sending webhooks, and the database still ends identical to the store.

Everything is real except Shopify: the app serves webhooks over loopback HTTP into the
database (PostgreSQL and SQLite), the backfill pages the simulator over HTTP, and the
simulator signs and POSTs webhooks to the app. The interleaving is deterministic without a
sleep: a simulator hook runs after the N-th page of a resource has been computed and before it
is sent, changes records and delivers their webhooks synchronously, so every webhook it sends
is newer than the page the backfill is about to write (the adversarial order for "an older
page never overwrites a newer webhook" and "a tombstone is never resurrected").
"""

from __future__ import annotations

import math
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from backfill.queries import RESOURCES as REGISTRY
from backfill.runner import TARGETS, BackfillEnvironment, create_sync_job, run_sync_job
from models import Order, SyncJob, Tenant, WebhookEvent
from tests.conftest import APP_SECRET, Backend, ServedApp
from tests.factories import RECORD_COLUMNS, create_tenant, simulator_environment
from tests.fakeshop import FakeShopServer, FakeStore, GraphQLRequest, ManualClock
from tests.fakeshop import select as project
from tests.fakeshop.store import RESOURCE_NAMES

SHOP = "handoff-store.myshopify.com"
RESOURCES = ("customers", "products", "orders")  # the order the backfill pulls them in
SIZES = {"customers": 240, "products": 160, "orders": 400}
TOPICS = [
    f"{resource}/{action}"
    for resource, actions in {
        "customers": ("create", "update", "delete"),
        "products": ("create", "update", "delete"),
        "orders": ("create", "updated", "delete", "paid"),
    }.items()
    for action in actions
]
# The node the backfill reads is the projection of the store's record on its selection.
BACKFILL_FIELDS = {name: resource.fields for name, resource in REGISTRY.items()}
COMMON_COLUMNS = ("shopify_created_at", "shopify_updated_at")
COMPARED = {
    "customers": (*RECORD_COLUMNS["customers"], "currency", *COMMON_COLUMNS),
    "products": (*RECORD_COLUMNS["products"], *COMMON_COLUMNS),
    "orders": (*RECORD_COLUMNS["orders"], *COMMON_COLUMNS),
    "locations": (*RECORD_COLUMNS["locations"], *COMMON_COLUMNS),
}


@dataclass
class Page:
    """A page the backfill is about to receive, and how far it has got with each resource."""

    resource: str
    number: int  # 1-based, per resource
    indexes: list[int]
    fetched_upto: dict[str, int]  # highest index in pages already answered (-1: none)


class Changes:
    """Changes to the store the way a merchant makes them: each one a second after the last,
    so successive versions of a record have strictly newer ``updated_at`` (REST timestamps
    have whole seconds, and equal ones apply, by design)."""

    def __init__(self, store: FakeStore, clock: ManualClock) -> None:
        self.store = store
        self.clock = clock
        self.version = 0
        self.log: Counter[str] = Counter()

    def _tick(self) -> int:
        self.clock.advance(1)
        self.version += 1
        return self.version

    def live(self, resource: str, index: int) -> bool:
        return bool(self.store.resource(resource).view().exists(index))

    def deletable(self, resource: str, index: int) -> bool:
        """Shopify refuses to delete a customer who has orders (only redaction erases one);
        the simulator would allow it and silently null those orders' customer."""
        if not self.store.resource(resource).view().exists(index):
            return False
        if resource != "customers":
            return True
        gid = self.store.customers.gid(index)
        orders = self.store.orders
        for order in range(orders.total):
            node = orders.node(order)
            if node is not None and node["customer"] and node["customer"]["id"] == gid:
                return False
        return True

    def fields(self, resource: str, version: int) -> dict[str, Any]:
        if resource == "customers":
            return {"first_name": f"Name{version}", "email": f"v{version}@example.com"}
        if resource == "products":
            return {"title": f"Title v{version}", "vendor": f"Vendor {version}", "tags": "x, y"}
        return {
            "financial_status": ("paid", "refunded", "partially_refunded")[version % 3],
            "total_price": f"{100 + version}.00",
            "email": f"buyer{version}@example.com",
        }

    def update(self, resource: str, index: int, *, duplicate: bool = False) -> None:
        version = self._tick()
        getattr(self.store, f"update_{resource[:-1]}")(index, **self.fields(resource, version))
        self.log[f"update {resource}"] += 1
        if duplicate:
            event = self.store.webhooks.last
            assert event is not None
            self.store.webhooks.redeliver(event)
            self.log["duplicate"] += 1

    def paid(self, index: int) -> None:
        """An order paid: Shopify sends orders/updated and orders/paid for one change."""
        self._tick()
        self.store.update_order(index, financial_status="paid")
        self.store.webhooks.emit("orders/paid", resource="orders", index=index)
        self.log["paid"] += 1

    def create(self, resource: str) -> int:
        version = self._tick()
        fields = self.fields(resource, version)
        if resource == "orders":
            fields |= {"fulfillment_status": "unfulfilled", "customer": version % 50}
        index: int = getattr(self.store, f"create_{resource[:-1]}")(**fields)
        self.log[f"create {resource}"] += 1
        return index

    def delete(self, resource: str, index: int) -> None:
        assert self.deletable(resource, index), (resource, index)
        self._tick()
        getattr(self.store, f"delete_{resource[:-1]}")(index)
        self.log[f"delete {resource}"] += 1

    def out_of_order(self, resource: str, index: int, versions: int, seed: int | None) -> None:
        """Several updates of one record, delivered newest first (or shuffled by ``seed``)."""
        self.store.webhooks.hold()
        for _ in range(versions):
            self.update(resource, index)
        self.store.webhooks.release("reverse" if seed is None else "shuffled", seed=seed)
        self.log["out of order"] += 1

    def create_then_delete_delivered_backwards(self, resource: str) -> None:
        """The delete arrives before the create: the create must not revive the record."""
        self.store.webhooks.hold()
        index = self.create(resource)
        self.delete(resource, index)
        self.store.webhooks.release("reverse")
        self.log["delete before create"] += 1


Script = dict[tuple[str, int], Callable[[Page], None]]


class Interleaver:
    """The simulator hook: runs ``script[(resource, n)]`` when page n of resource is ready,
    and ``script[("bulk", n)]`` at the n-th poll of a bulk operation (whose data is a snapshot
    taken when it started, so everything changed then is newer than the file to come)."""

    def __init__(self, store: FakeStore, script: Script) -> None:
        self.store = store
        self.script = script
        self.pages: Counter[str] = Counter()
        self.fetched_upto = dict.fromkeys(RESOURCES, -1)
        self.ran: list[tuple[str, int]] = []

    def __call__(self, request: GraphQLRequest) -> None:
        if "node" in request.root_fields:
            self.pages["bulk"] += 1
            action = self.script.get(("bulk", self.pages["bulk"]))
            if action is not None:
                action(Page("bulk", self.pages["bulk"], [], dict(self.fetched_upto)))
                self.ran.append(("bulk", self.pages["bulk"]))
            return
        for resource in RESOURCES:
            if not request.page_of(resource):
                continue
            base = self.store.resource(resource).base_id
            nodes = request.body["data"][resource]["nodes"]
            indexes = [int(node["id"].rsplit("/", 1)[-1]) - base for node in nodes]
            self.pages[resource] += 1
            number = self.pages[resource]
            action = self.script.get((resource, number))
            if action is not None:
                action(Page(resource, number, indexes, dict(self.fetched_upto)))
                self.ran.append((resource, number))
            if indexes:
                self.fetched_upto[resource] = max(self.fetched_upto[resource], *indexes)


@dataclass
class Handoff:
    store: FakeStore
    clock: ManualClock
    changes: Changes
    env: BackfillEnvironment
    backend: Backend
    tenant_id: int
    script: Script = field(default_factory=dict)

    async def backfill(self, page_size: int, mode: str = "full") -> tuple[SyncJob, Interleaver]:
        interleaver = Interleaver(self.store, self.script)
        self.store.on_request(interleaver)
        try:
            async with self.backend.sessions() as session, session.begin():
                tenant = await session.get_one(Tenant, self.tenant_id)
                job = await create_sync_job(session, tenant, mode)
                # Small pages make many "between pages" moments; the runner keeps a page size
                # in the job's checkpoint (normally after a MAX_COST_EXCEEDED halving).
                job.progress = {
                    name: {"cursor": None, "count": 0, "done": False, "page_size": page_size}
                    for name in RESOURCES
                }
            status = await run_sync_job(self.env, job.id)
        finally:
            self.store.hooks.remove(interleaver)
        async with self.backend.sessions() as session:
            finished = await session.get_one(SyncJob, job.id)
        assert status == finished.status
        return finished, interleaver


@pytest.fixture
def simulator() -> Iterator[tuple[FakeStore, ManualClock, FakeShopServer]]:
    # Virtual time for the bucket, the client's pacing and the records' updated_at.
    clock = ManualClock(start=datetime.now(UTC))
    # No locations: this test interleaves webhooks with the pages of the three above.
    store = FakeStore(SHOP, seed=23, clock=clock, locations=0, **SIZES)
    with FakeShopServer(store) as server:
        yield store, clock, server
    store.webhooks.disable()


@pytest.fixture
async def handoff(
    backend: Backend, served: ServedApp, simulator: tuple[FakeStore, ManualClock, FakeShopServer]
) -> AsyncIterator[Handoff]:
    store, clock, server = simulator
    tenant_id = await create_tenant(backend.sessions, SHOP, access_token=store.access_token)
    # Signed with the app's client secret, which the served app holds (SHOPIFY_API_SECRET).
    store.webhooks.enable(APP_SECRET)
    for topic in TOPICS:
        store.subscriptions.create(topic, served.webhook_url)
    async with httpx.AsyncClient(timeout=10) as http:
        # The simulator finishes a bulk operation after a number of polls, not of seconds.
        env = simulator_environment(
            backend.sessions,
            http,
            server.admin_base_url_template,
            store,
            clock,
            bulk_poll_interval=0,
        )
        yield Handoff(store, clock, Changes(store, clock), env, backend, tenant_id)


async def assert_database_is_the_store(handoff: Handoff) -> None:
    """Every record, not a sample: the live ones equal field by field, the deleted ones
    tombstoned, no row the store does not account for."""
    store = handoff.store
    async with handoff.backend.sessions() as session:
        for resource, (model, normalize) in TARGETS.items():
            if resource not in RESOURCE_NAMES:
                continue  # inventory items: the store's are its variants', not records
            source = store.resource(resource)
            rows = {
                row.shopify_id: row
                for row in await session.scalars(
                    select(model).where(model.tenant_id == handoff.tenant_id)
                )
            }
            # Every deleted record's delete was delivered, so each has a tombstone.
            expected_ids = {source.numeric_id(index) for index in range(source.total)}
            assert set(rows) == expected_ids, (
                resource,
                sorted(set(rows) - expected_ids)[:5],
                sorted(expected_ids - set(rows))[:5],
            )
            live = 0
            for index in range(source.total):
                row = rows[source.numeric_id(index)]
                node = source.node(index)
                if node is None:
                    assert row.deleted_at is not None, f"{resource} {index} deleted, row live"
                    continue
                live += 1
                assert row.deleted_at is None, f"{resource} {index} live, row tombstoned"
                expected = normalize(project(node, BACKFILL_FIELDS[resource]))
                actual = {column: getattr(row, column) for column in COMPARED[resource]}
                wanted = {column: expected[column] for column in COMPARED[resource]}
                assert actual == wanted, (resource, index, row.source)
            assert live == store.counts[resource]


@contextmanager
def unreachable_url() -> Iterator[str]:
    """A loopback address that refuses connections: bound, so nobody else can take the port
    meanwhile, but not listening."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}/webhooks/shopify"


async def assert_every_webhook_applied(handoff: Handoff, failed: int = 0) -> None:
    """Every event processed once, with ``failed`` deliveries that a retry then made."""
    counts = handoff.store.webhooks.counts
    assert counts["failed"] == failed
    assert counts["skipped"] == 0
    assert counts["pending"] == 0
    assert counts["delivered"] == counts["emitted"] + counts["duplicates"]
    async with handoff.backend.sessions() as session:
        events = list(await session.scalars(select(WebhookEvent)))
    assert Counter(event.status for event in events) == {"processed": counts["emitted"]}
    assert sum(event.duplicate_count for event in events) == counts["duplicates"]
    assert handoff.store.hooks.errors == []


def fixed_script(changes: Changes) -> Script:
    """Every case named in issue #7, each at a known place in the run."""

    def customers_page_4(page: Page) -> None:
        current, total = page.indexes, changes.store.customers.total
        changes.update("customers", 5)  # already written by the backfill
        changes.update("customers", current[5])  # in the page being answered: older snapshot
        changes.update("customers", current[-1] + 100)  # not reached yet: the webhook is first
        # Already fetched: a tombstone over a live row.
        changes.delete("customers", deletable(changes, "customers", range(current[0])))
        # The page being answered still has it: applying the page must not resurrect it.
        changes.delete("customers", deletable(changes, "customers", current))
        # Never fetched: a tombstone with no row, and the backfill never sees the record.
        changes.delete("customers", deletable(changes, "customers", range(current[-1], total)))
        changes.create("customers")  # paged at the end, after its webhook

    def products_page_2(page: Page) -> None:
        first, last = page.indexes[0], page.indexes[-1]
        changes.out_of_order("products", 3, versions=3, seed=None)  # paged, newest first
        changes.out_of_order("products", last + 60, versions=2, seed=None)  # not yet paged
        changes.update("products", first + 2, duplicate=True)  # the same delivery twice
        changes.create_then_delete_delivered_backwards("products")
        changes.delete("products", first + 1)

    def orders_page_5(page: Page) -> None:
        first, last = page.indexes[0], page.indexes[-1]
        candidates = [i for i in range(first + 1, last) if changes.live("orders", i)]
        changes.update("orders", pick(changes, "orders", 10))
        changes.update("orders", candidates[0])
        changes.update("orders", pick(changes, "orders", last + 200), duplicate=True)
        changes.out_of_order("orders", pick(changes, "orders", 15), versions=3, seed=None)
        changes.out_of_order("orders", candidates[1], versions=4, seed=7)
        changes.paid(candidates[2])
        changes.delete("orders", 20)
        changes.delete("orders", candidates[3])
        changes.delete("orders", last + 150)
        changes.create("orders")
        changes.create_then_delete_delivered_backwards("orders")
        # A resource already finished: only its webhooks can bring these in.
        changes.update("customers", 100)
        changes.delete("customers", deletable(changes, "customers", range(150, 240)))
        changes.create("customers")

    def orders_page_12(page: Page) -> None:
        created = changes.create("orders")
        changes.update("orders", created)  # created and changed before the backfill gets there
        changes.update("products", 140)
        changes.delete("products", 141)
        # The receiver is unreachable for two deliveries, retried after the backfill ended
        # (Shopify retries for hours): one is older than a later delivery by then, the other
        # is the version the backfill already wrote.
        (subscription,) = changes.store.subscriptions.for_topic("orders/updated")
        paged, ahead = pick(changes, "orders", 30), pick(changes, "orders", page.indexes[-1] + 60)
        with unreachable_url() as down:
            changes.store.subscriptions.update(subscription.legacy_id, uri=down)
            changes.update("orders", paged)
            changes.update("orders", ahead)
        changes.store.subscriptions.update(subscription.legacy_id, uri=subscription.uri)
        changes.update("orders", paged)

    return {
        ("customers", 4): customers_page_4,
        ("products", 2): products_page_2,
        ("orders", 5): orders_page_5,
        ("orders", 12): orders_page_12,
    }


def deletable(changes: Changes, resource: str, indexes: Iterable[int]) -> int:
    """The first of ``indexes`` Shopify would let a merchant delete."""
    return next(index for index in indexes if changes.deletable(resource, index))


def pick(changes: Changes, resource: str, index: int) -> int:
    """``index``, or the next live record a webhook can be compared for."""
    while not changes.live(resource, index):
        index += 1
    return index


async def test_backfill_and_webhooks_together_leave_the_database_equal_to_the_store(handoff):
    handoff.script = fixed_script(handoff.changes)
    job, interleaver = await handoff.backfill(page_size=20)
    assert (job.status, job.error) == ("succeeded", None)
    assert interleaver.ran == list(handoff.script)
    assert handoff.changes.log["duplicate"] == 2
    assert handoff.changes.log["out of order"] == 4
    assert handoff.store.webhooks.failed == 2
    assert handoff.store.webhooks.retry_failed() == 2  # late, after the backfill ended
    await assert_every_webhook_applied(handoff, failed=2)
    await assert_database_is_the_store(handoff)
    # The sources prove both paths wrote: webhooks for what changed, the backfill the rest.
    async with handoff.backend.sessions() as session:
        sources = Counter(await session.scalars(select(Order.source)))
    assert sources["webhook"] >= 5
    assert sources["backfill"] >= 300


MAX_CHANGES_PER_MOMENT = 6
MAX_DELETES = 3 * MAX_CHANGES_PER_MOMENT  # three moments per resource


def random_moment(changes: Changes, rng: random.Random) -> Callable[[Page], None]:
    """A handful of changes of any kind anywhere in the store, drawn from ``rng``."""
    kinds = ("update", "update", "delete", "create", "duplicate", "out_of_order", "backwards")

    def moment(page: Page) -> None:
        for _ in range(rng.randint(2, MAX_CHANGES_PER_MOMENT)):
            resource = rng.choice(RESOURCES)
            kind = rng.choice(kinds)
            if kind == "create":
                changes.create(resource)
                continue
            if kind == "backwards":
                changes.create_then_delete_delivered_backwards(resource)
                continue
            index = random_live(changes, rng, resource, page, deleting=kind == "delete")
            if index is None:
                continue
            if kind == "delete":
                changes.delete(resource, index)
            elif kind == "out_of_order":
                changes.out_of_order(resource, index, rng.randint(2, 4), rng.randrange(1000))
            else:
                changes.update(resource, index, duplicate=kind == "duplicate")

    return moment


def random_script(changes: Changes, rng: random.Random, page_size: int) -> Script:
    """A few moments per resource, each with a handful of changes anywhere in the store."""
    moment = random_moment(changes, rng)
    script: Script = {}
    for resource in RESOURCES:
        # Deletes ahead of the backfill shorten the run: stay clear of the pages that up to
        # MAX_DELETES of them could remove, so every scripted moment happens.
        pages = math.ceil(SIZES[resource] / page_size)
        last = max(1, pages - math.ceil(MAX_DELETES / page_size) - 1)
        for number in rng.sample(range(1, last + 1), k=min(3, last)):
            script[(resource, number)] = moment
    return script


def random_live(
    changes: Changes, rng: random.Random, resource: str, page: Page, *, deleting: bool
) -> int | None:
    """A live record already fetched, in the page being answered, or not fetched yet."""
    total = changes.store.resource(resource).total
    upto = page.fetched_upto[resource]
    zones = [(0, upto + 1), (upto + 1, total)]
    if page.resource == resource and page.indexes:
        zones = [
            (0, upto + 1),
            (page.indexes[0], page.indexes[-1] + 1),
            (page.indexes[-1] + 1, total),
        ]
    lo, hi = rng.choice([zone for zone in zones if zone[0] < zone[1]] or [(0, total)])
    usable = changes.deletable if deleting else changes.live
    for _ in range(20):
        index = rng.randrange(lo, hi)
        if usable(resource, index):
            return index
    return None


@pytest.mark.parametrize(("seed", "page_size"), [(1, 7), (2, 13), (3, 25)])
async def test_seeded_interleavings_converge_too(handoff, seed, page_size):
    rng = random.Random(seed)
    handoff.script = random_script(handoff.changes, rng, page_size)
    job, interleaver = await handoff.backfill(page_size=page_size)
    assert (job.status, job.error) == ("succeeded", None)
    assert sorted(interleaver.ran) == sorted(handoff.script)
    assert handoff.store.webhooks.counts["emitted"] > 0
    await assert_every_webhook_applied(handoff)
    await assert_database_is_the_store(handoff)


@pytest.mark.parametrize("seed", [4, 5])
async def test_a_bulk_backfill_racing_webhooks_converges_too(handoff, seed):
    """Bulk mode's file is a snapshot from the operation's start: every change made while it
    runs is newer than the file, so applying the file must refuse all of them."""
    moment = random_moment(handoff.changes, random.Random(seed))
    # The simulator completes an operation at its second poll: the first poll of each of the
    # three operations (customers, products, orders) happens between snapshot and download.
    handoff.script = {("bulk", 1): moment, ("bulk", 3): moment, ("bulk", 5): moment}
    job, interleaver = await handoff.backfill(page_size=250, mode="bulk")
    assert (job.status, job.error) == ("succeeded", None)
    assert interleaver.ran == list(handoff.script)
    await assert_every_webhook_applied(handoff)
    await assert_database_is_the_store(handoff)
