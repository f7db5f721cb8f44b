"""The `shopify-receiver` command line, run for real as a subprocess against each backend.

Every command runs the installed console script in a scratch working directory with its
configuration in the environment, exactly as an operator would run it. Deliveries go over real
HTTP to the app served on loopback; outcomes are checked in the database, not only exit codes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text, update

from handlers import handled_topics
from models import (
    Base,
    ComplianceRequest,
    Customer,
    Order,
    Product,
    SecretBox,
    Tenant,
    WebhookEvent,
    utcnow,
)
from models import migrate as migrations
from receiver.samples import sample_payload
from receiver.tenants import access_token, webhook_secrets
from tests.conftest import APP_SECRET, TEST_ENCRYPTION_KEY, Backend, ServedApp
from tests.factories import OTHER_SHOP, SHOP, create_tenant, delivery

CLI = Path(sys.executable).with_name("shopify-receiver")
RECEIVER_VARIABLES = (
    "DATABASE_URL",
    "SHOPIFY_API_SECRET",
    "SECRET_KEY",
    "ENCRYPTION_KEYS",
    "SHOPIFY_API_VERSION",
    "SHOPIFY_ADMIN_BASE_URL",
    "WEBHOOK_MAX_BODY_BYTES",
    "ALLOW_RLS_BYPASS",
    "METRICS_TOKEN",
    "PROMETHEUS_MULTIPROC_DIR",
    "PUBLIC_URL",
)
COMMAND_TIMEOUT = 60
STRANGER_SHOP = "stranger-store.myshopify.com"
# Rejected by the handler (Shopify ids are 64-bit signed): stored `failed`, replayable.
UNSTORABLE_ID = 2**64

ORDER_ID = sample_payload("orders/create")["id"]
ORDER_NAME = sample_payload("orders/create")["name"]
CUSTOMER_ID = sample_payload("customers/create")["id"]
CUSTOMER_EMAIL = sample_payload("customers/create")["email"]
PRODUCT_ID = sample_payload("products/create")["id"]


# --- running the command line ----------------------------------------------------------------


def cli_env(database_url: str | None, **overrides: str) -> dict[str, str]:
    """This process's environment without any receiver setting, plus the test configuration."""
    env = {key: value for key, value in os.environ.items() if key not in RECEIVER_VARIABLES}
    env.update(
        SHOPIFY_API_SECRET=APP_SECRET,
        SECRET_KEY="cli-test-session-key",
        ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(overrides)
    return env


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"shopify-receiver {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


class Cli:
    """`shopify-receiver ...` in `cwd` with `env` (nothing is written into the repository)."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    async def __call__(self, *args: str, **env_overrides: str) -> Result:
        process = await asyncio.create_subprocess_exec(
            str(CLI),
            *args,
            cwd=self.cwd,
            env=self.env | env_overrides,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.communicate()
            raise AssertionError(f"shopify-receiver {' '.join(args)} hung") from None
        return Result(args, process.returncode or 0, stdout.decode(), stderr.decode())

    async def ok(self, *args: str, **env_overrides: str) -> Result:
        result = await self(*args, **env_overrides)
        assert result.code == 0, str(result)
        assert "Traceback" not in result.output, str(result)
        return result

    async def fails(self, *args: str, code: int | None = None, **env_overrides: str) -> Result:
        """A refusal: non-zero exit with a one-line error, never a traceback."""
        result = await self(*args, **env_overrides)
        assert result.code != 0, str(result)
        if code is not None:
            assert result.code == code, str(result)
        assert "Traceback" not in result.output, str(result)
        assert "Error:" in result.stderr, str(result)
        return result

    async def send(self, served: ServedApp, topic: str, *options: str) -> tuple[str, dict]:
        """`send-test-webhook`; returns the receiver's answer as (status code, JSON body)."""
        result = await self.ok("send-test-webhook", topic, "--url", served.webhook_url, *options)
        code, _, body = result.stdout.strip().partition(" ")
        return code, json.loads(body)


@pytest.fixture
def cli(backend: Backend, tmp_path: Path) -> Cli:
    return Cli(tmp_path, cli_env(backend.url))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(process: subprocess.Popen[bytes], base: str, seconds: float = 60) -> None:
    """Until `serve` (started as `process`) answers /healthz at `base`; with several workers
    the first to answer is ready."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, "serve exited"
        assert time.monotonic() < deadline, "serve did not come up"
        time.sleep(0.1)


# --- reading the database --------------------------------------------------------------------


async def count(backend: Backend, model: type, *where: object) -> int:
    async with backend.sessions() as session:
        query = select(func.count()).select_from(model)
        if where:
            query = query.where(*where)
        return await session.scalar(query) or 0


async def event(backend: Backend, event_id: int) -> WebhookEvent | None:
    async with backend.sessions() as session:
        return await session.get(WebhookEvent, event_id)


async def event_statuses(backend: Backend) -> dict[int, str]:
    async with backend.sessions() as session:
        rows = await session.execute(select(WebhookEvent.id, WebhookEvent.status))
        return dict(rows.all())


async def tenants(backend: Backend) -> list[Tenant]:
    async with backend.sessions() as session:
        return list(await session.scalars(select(Tenant).order_by(Tenant.id)))


async def post(http: httpx.AsyncClient, served: ServedApp, topic: str, **options) -> dict:
    """One signed delivery straight over HTTP (setup that is not the subject of a test)."""
    body, headers = delivery(topic, **options)
    response = await http.post(served.webhook_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def event_lines(output: str) -> dict[int, list[str]]:
    """`events list` lines by event id: [received_at, status, shop, topic, error...]."""
    lines = {}
    for line in output.splitlines():
        fields = line.split()
        if fields:
            lines[int(fields[0])] = fields[1:]
    return lines


def unstorable_order() -> dict:
    return sample_payload("orders/create", SHOP) | {"id": UNSTORABLE_ID}


# --- tenants ---------------------------------------------------------------------------------


async def test_tenants_add_and_list_never_reveal_credentials(backend, cli):
    secret, token, new_secret = "whsec_plain_7f3a9c", "shpat_plain_token_91c2e4", "whsec_new_b81d"
    added = await cli.ok(
        "tenants", "add", "--shop", SHOP, "--webhook-secret", secret, "--access-token", token
    )
    assert f"added {SHOP}" in added.stdout
    listed = await cli.ok("tenants", "list")
    rows = [line.split() for line in listed.stdout.splitlines() if SHOP in line]
    [stored] = await tenants(backend)
    assert rows == [[str(stored.id), SHOP, "active", "yes", "yes"]], str(listed)

    # Adding again (any capitalisation) updates the one row, reactivates it, rotates secrets.
    async with backend.sessions() as session, session.begin():
        await session.execute(update(Tenant).values(status="uninstalled"))
    readded = await cli.ok(
        "tenants",
        "add",
        "--shop",
        SHOP.replace("alpha", "ALPHA"),
        "--webhook-secret",
        new_secret,
        "--webhook-secret",
        secret,
    )
    assert f"updated {SHOP} (tenant {stored.id})" in readded.stdout, str(readded)
    [tenant] = await tenants(backend)
    assert (tenant.id, tenant.shop_domain, tenant.status) == (stored.id, SHOP, "active")

    # Stored encrypted: readable with the key, absent from every raw column.
    box = SecretBox([TEST_ENCRYPTION_KEY])
    assert webhook_secrets(box, tenant) == [new_secret, secret]
    assert access_token(box, tenant) == token  # not given again: kept
    async with backend.engine.connect() as connection:
        raw_rows = (await connection.execute(text("SELECT * FROM tenants"))).all()
    raw = " ".join(str(value) for row in raw_rows for value in row)
    for plaintext in (secret, token, new_secret):
        assert plaintext not in raw
        for result in (added, listed, readded):
            assert plaintext not in result.output


async def test_tenants_add_refuses_an_invalid_shop_domain(backend, cli):
    result = await cli.fails("tenants", "add", "--shop", "evil.example.com", code=2)
    assert "'evil.example.com' is not a NAME.myshopify.com domain" in result.stderr
    assert await tenants(backend) == []


# --- send-test-webhook -----------------------------------------------------------------------


async def test_send_test_webhook_orders_create_lands_in_the_database(backend, served, cli):
    tenant_id = await create_tenant(backend.sessions)
    code, answer = await cli.send(served, "orders/create", "--shop", SHOP)
    assert (code, answer["status"]) == ("200", "processed")
    async with backend.sessions() as session:
        order = (await session.scalars(select(Order))).one()
        stored_event = (await session.scalars(select(WebhookEvent))).one()
    assert (order.tenant_id, order.shopify_id, order.name) == (tenant_id, ORDER_ID, ORDER_NAME)
    assert (stored_event.id, stored_event.status) == (answer["event"], "processed")
    assert stored_event.payload == sample_payload("orders/create", SHOP)


async def test_send_test_webhook_signs_with_the_store_secret(backend, served, cli, http):
    await cli.ok("tenants", "add", "--shop", SHOP, "--webhook-secret", "alpha-own-secret")
    wrong = "shpss_not_the_app_secret"
    # The served app does not accept the wrong app secret (a store without a secret: 401)...
    await create_tenant(backend.sessions, OTHER_SHOP)
    body, headers = delivery("orders/create", shop=OTHER_SHOP, secret=wrong)
    assert (await http.post(served.webhook_url, content=body, headers=headers)).status_code == 401
    # ...so a 200 with the wrong app secret configured proves the CLI signed with the store's.
    result = await cli.ok(
        "send-test-webhook",
        "orders/create",
        "--shop",
        SHOP,
        "--url",
        served.webhook_url,
        SHOPIFY_API_SECRET=wrong,
    )
    assert result.stdout.startswith("200 "), str(result)
    assert await count(backend, Order, Order.shopify_id == ORDER_ID) == 1
    assert await event_statuses(backend) == {json.loads(result.stdout[4:])["event"]: "processed"}


def topic_rank(topic: str) -> tuple[int, str]:
    """Creates, then updates, then deletes; then compliance, uninstall and shop redact last."""
    last = ("customers/data_request", "customers/redact", "app/uninstalled", "shop/redact")
    if topic in last:
        return 3 + last.index(topic), topic
    action = topic.split("/", 1)[1]
    return {"create": 0, "delete": 2}.get(action, 1), topic


async def test_every_handled_topic_sample_is_processed(backend, served, cli):
    """Each sample is valid for its handler. Resources run side by side (as Shopify does),
    each in a sensible order; the store-wide topics go last, one at a time."""
    tenant_id = await create_tenant(backend.sessions)
    topics = sorted(handled_topics(), key=topic_rank)
    chains: dict[str, list[str]] = {}
    for topic in topics:
        if topic_rank(topic)[0] < 3:
            chains.setdefault(topic.split("/")[0], []).append(topic)
    finale = [topic for topic in topics if topic_rank(topic)[0] >= 3]
    chained = [topic for chain in chains.values() for topic in chain]
    assert sorted(chained + finale) == sorted(handled_topics())
    answered: dict[str, int] = {}

    async def deliver(topic: str) -> None:
        code, answer = await cli.send(served, topic, "--shop", SHOP)
        assert (topic, code, answer["status"]) == (topic, "200", "processed"), answer
        stored_event = await event(backend, answer["event"])
        assert stored_event is not None
        assert (stored_event.topic, stored_event.status, stored_event.error) == (
            topic,
            "processed",
            None,
        )
        answered[topic] = answer["event"]

    async def run_chain(chain: Iterable[str]) -> None:
        for topic in chain:
            await deliver(topic)

    await asyncio.gather(*(run_chain(chain) for chain in chains.values()))
    assert await count(backend, Order, Order.deleted_at.is_not(None)) == 1
    assert await count(backend, Customer, Customer.deleted_at.is_not(None)) == 1
    assert await count(backend, Product, Product.deleted_at.is_not(None)) == 1
    for topic in finale:
        await deliver(topic)
        if topic == "app/uninstalled":
            [tenant] = await tenants(backend)
            assert tenant.status == "uninstalled"

    assert set(answered) == set(handled_topics())
    [tenant] = await tenants(backend)
    assert tenant.status == "redacted"
    # The samples' made-up shop id was not sent, so the store did not learn it as its own.
    assert tenant.shopify_shop_id is None
    for model in (Order, Customer, Product):
        assert await count(backend, model, model.tenant_id == tenant_id) == 0
    # shop/redact removed the shop's inbox too, except its own record.
    assert await event_statuses(backend) == {answered["shop/redact"]: "processed"}


async def test_send_test_webhook_sends_the_shop_id_we_hold(backend, served, cli):
    tenant_id = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        (await session.get_one(Tenant, tenant_id)).shopify_shop_id = 4242
    code, answer = await cli.send(served, "customers/data_request", "--shop", SHOP)
    assert (code, answer["status"]) == ("200", "processed")
    assert (await event(backend, answer["event"])).payload["shop_id"] == 4242


async def test_send_test_webhook_posts_the_payload_file(backend, served, cli, tmp_path):
    await create_tenant(backend.sessions)
    payload = sample_payload("orders/create", SHOP) | {"id": 4242424242, "name": "#FILE-1"}
    payload_file = tmp_path / "order.json"
    payload_file.write_text(json.dumps(payload, indent=2))
    code, answer = await cli.send(
        served, "orders/create", "--shop", SHOP, "--payload", str(payload_file)
    )
    assert (code, answer["status"]) == ("200", "processed")
    async with backend.sessions() as session:
        order = (await session.scalars(select(Order))).one()
    assert (order.shopify_id, order.name) == (4242424242, "#FILE-1")
    stored_event = await event(backend, answer["event"])
    assert stored_event is not None
    assert stored_event.payload == payload


async def test_send_test_webhook_unknown_topic_needs_a_payload(backend, served, cli):
    await create_tenant(backend.sessions)
    result = await cli.fails(
        "send-test-webhook",
        "orders/teleported",
        "--shop",
        SHOP,
        "--url",
        served.webhook_url,
    )
    assert "no sample for orders/teleported" in result.stderr
    assert "orders/create" in result.stderr  # it says which topics have samples
    assert await count(backend, WebhookEvent) == 0


async def test_send_test_webhook_unreachable_url_is_a_clear_error(backend, cli):
    await create_tenant(backend.sessions)
    url = f"http://127.0.0.1:{free_port()}/webhooks/shopify"
    result = await cli.fails("send-test-webhook", "orders/create", "--shop", SHOP, "--url", url)
    assert f"could not reach {url}" in result.stderr
    assert await count(backend, WebhookEvent) == 0


# --- events ----------------------------------------------------------------------------------


async def test_failed_event_is_listed_and_replay_keeps_it_failed(
    backend, served, cli, http, tmp_path
):
    await create_tenant(backend.sessions)
    broken_file = tmp_path / "broken.json"
    broken_file.write_text(json.dumps(unstorable_order()))
    code, answer = await cli.send(
        served, "orders/create", "--shop", SHOP, "--payload", str(broken_file)
    )
    assert (code, answer["status"]) == ("200", "failed")
    failed_id = answer["event"]
    processed_id = (await post(http, served, "orders/create"))["event"]
    ignored_id = (await post(http, served, "orders/create", shop=STRANGER_SHOP))["event"]
    assert await event_statuses(backend) == {
        failed_id: "failed",
        processed_id: "processed",
        ignored_id: "ignored",
    }

    everything, only_failed = await asyncio.gather(
        cli.ok("events", "list"), cli.ok("events", "list", "--status", "failed")
    )
    listed = event_lines(everything.stdout)
    assert {event_id: fields[1] for event_id, fields in listed.items()} == {
        failed_id: "failed",
        processed_id: "processed",
        ignored_id: "ignored",
    }, str(everything)
    assert list(listed) == sorted(listed, reverse=True)  # newest first
    assert listed[ignored_id][2:4] == [STRANGER_SHOP, "orders/create"]
    failed_lines = event_lines(only_failed.stdout)
    assert list(failed_lines) == [failed_id], str(only_failed)
    assert failed_lines[failed_id][1:4] == ["failed", SHOP, "orders/create"]
    assert "64-bit" in only_failed.stdout

    replay = await cli("events", "replay", "--status", "failed")
    assert replay.code != 0, str(replay)
    assert "Traceback" not in replay.output
    assert event_lines(replay.stdout.split("replayed")[0])[failed_id][0] == "failed"
    assert "replayed 1 event(s)" in replay.stdout
    stored = await event(backend, failed_id)
    assert stored is not None
    assert (stored.status, stored.attempts) == ("failed", 2)
    assert "64-bit" in (stored.error or "")
    assert await event_statuses(backend) == {
        failed_id: "failed",
        processed_id: "processed",
        ignored_id: "ignored",
    }
    assert await count(backend, Order) == 1


async def test_replay_by_id_applies_an_event_once_its_store_is_added(backend, served, cli, http):
    answer = await post(http, served, "orders/create", shop=STRANGER_SHOP)
    stored = await event(backend, answer["event"])
    assert stored is not None
    assert (stored.status, stored.tenant_id) == ("ignored", None)
    tenant_id = await create_tenant(backend.sessions, STRANGER_SHOP)

    replay = await cli.ok("events", "replay", "--id", str(stored.id))
    assert event_lines(replay.stdout.split("replayed")[0]) == {stored.id: ["processed"]}
    assert "replayed 1 event(s)" in replay.stdout
    replayed = await event(backend, stored.id)
    assert replayed is not None
    assert (replayed.status, replayed.tenant_id, replayed.error) == ("processed", tenant_id, None)
    async with backend.sessions() as session:
        order = (await session.scalars(select(Order))).one()
    assert (order.tenant_id, order.shopify_id, order.name) == (tenant_id, ORDER_ID, ORDER_NAME)


async def test_events_prune_deletes_only_old_settled_events(backend, served, cli, http):
    await create_tenant(backend.sessions)
    ids = {
        "processed_old": (await post(http, served, "orders/create"))["event"],
        "processed_29d": (await post(http, served, "products/create"))["event"],
        "processed_new": (await post(http, served, "customers/create"))["event"],
        "ignored_old": (await post(http, served, "orders/create", shop=STRANGER_SHOP))["event"],
        "failed_old": (await post(http, served, "orders/create", payload=unstorable_order()))[
            "event"
        ],
        "failed_new": (await post(http, served, "orders/create", payload=unstorable_order()))[
            "event"
        ],
    }
    assert sorted((await event_statuses(backend)).values()) == [
        "failed",
        "failed",
        "ignored",
        "processed",
        "processed",
        "processed",
    ]
    ages = {"processed_old": 40, "processed_29d": 29, "ignored_old": 31, "failed_old": 365}
    async with backend.sessions() as session, session.begin():
        for name, days in ages.items():
            await session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == ids[name])
                .values(received_at=utcnow() - timedelta(days=days))
            )

    bad = await cli.fails("events", "prune", "--older-than", "30x", code=2)
    assert "'30x'" in bad.stderr
    assert "30d" in bad.stderr  # says what a valid age looks like
    assert len(await event_statuses(backend)) == 6

    pruned = await cli.ok("events", "prune", "--older-than", "30d")
    assert "pruned 2 event(s)" in pruned.stdout, str(pruned)
    kept = {"processed_29d", "processed_new", "failed_old", "failed_new"}
    assert set(await event_statuses(backend)) == {ids[name] for name in kept}

    pruned = await cli.ok("events", "prune", "--older-than", "30d", "--include-failed")
    assert "pruned 1 event(s)" in pruned.stdout, str(pruned)
    kept.remove("failed_old")
    assert set(await event_statuses(backend)) == {ids[name] for name in kept}
    # Pruning the inbox never touches the records the events produced.
    assert await count(backend, Order) == 1
    assert await count(backend, Product) == 1
    assert await count(backend, Customer) == 1


# --- compliance ------------------------------------------------------------------------------


async def test_compliance_export_prints_the_customer_and_completes_the_request(
    backend, served, cli, http
):
    tenant_id = await create_tenant(backend.sessions)
    await post(http, served, "customers/create")
    await post(http, served, "orders/create")
    someone_else = copy.deepcopy(sample_payload("orders/create", SHOP))
    someone_else.update(id=555000111, name="#2002", email="other@example.com")
    someone_else["customer"].update(id=444000222, email="other@example.com")
    await post(http, served, "orders/create", payload=someone_else)
    request_event = (await post(http, served, "customers/data_request"))["event"]
    async with backend.sessions() as session:
        [request] = await session.scalars(select(ComplianceRequest))
    assert request.completed_at is None

    exported, unknown = await asyncio.gather(
        cli.ok("compliance", "export", "--shop", SHOP, "--customer", str(CUSTOMER_ID)),
        cli.fails(
            "compliance", "export", "--shop", "nobody.myshopify.com", "--customer", "1", code=1
        ),
    )
    data = json.loads(exported.stdout)
    assert data["customer"]["shopify_id"] == CUSTOMER_ID
    assert data["customer"]["tenant_id"] == tenant_id
    assert data["customer"]["email"] == CUSTOMER_EMAIL
    assert [order["shopify_id"] for order in data["orders"]] == [ORDER_ID]
    assert data["orders"][0]["name"] == ORDER_NAME
    [exported_request] = data["compliance_requests"]
    assert exported_request["topic"] == "customers/data_request"
    assert exported_request["customer_shopify_id"] == CUSTOMER_ID
    assert exported_request["completed_at"]
    assert request_event in [row["id"] for row in data["webhook_events"]]
    assert "unknown store nobody.myshopify.com" in unknown.stderr
    assert unknown.stdout == ""

    async with backend.sessions() as session:
        [request] = await session.scalars(select(ComplianceRequest))
    assert request.completed_at is not None


# --- migrate and serve -----------------------------------------------------------------------


def sqlite_rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


async def test_migrate_creates_the_schema_on_a_fresh_sqlite_file(tmp_path):
    database = tmp_path / "fresh.db"
    cli = Cli(tmp_path, cli_env(f"sqlite+aiosqlite:///{database}"))
    result = await cli.ok("migrate")
    assert f"schema at {migrations.head_revision()}" in result.stdout
    tables = {name for (name,) in sqlite_rows(database, "SELECT name FROM sqlite_master")}
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    assert sqlite_rows(database, "SELECT version_num FROM alembic_version") == [
        (migrations.head_revision(),)
    ]


async def wait_until_healthy(base_url: str, server: asyncio.subprocess.Process) -> None:
    """Readiness polling with a deadline: the server must answer /healthz or the test fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            assert server.returncode is None, "serve exited before it was healthy"
            try:
                if (await http.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert loop.time() < deadline, "serve was not healthy within 30 s"
            await asyncio.sleep(0.1)


async def stop(server: asyncio.subprocess.Process) -> str:
    """SIGTERM, then wait (bounded) for a graceful exit; returns everything it logged."""
    if server.returncode is None:
        server.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = await asyncio.wait_for(server.communicate(), 20)
    except TimeoutError:
        server.kill()
        await server.communicate()
        raise AssertionError("serve did not stop within 20 s of SIGTERM") from None
    return (stdout + stderr).decode()


async def test_serve_migrates_the_embedded_default_and_receives_webhooks(tmp_path):
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = cli_env(None)  # DATABASE_URL unset: the embedded ./var/receiver.db
    database = tmp_path / "var" / "receiver.db"
    assert not database.exists()
    server = await asyncio.create_subprocess_exec(
        str(CLI),
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until_healthy(base_url, server)
        async with httpx.AsyncClient(timeout=5) as http:
            ready = await http.get(f"{base_url}/readyz")
        assert ready.status_code == 200, ready.text
        cli = Cli(tmp_path, env)
        await cli.ok("tenants", "add", "--shop", SHOP)
        sent = await cli.ok(
            "send-test-webhook",
            "orders/create",
            "--shop",
            SHOP,
            "--url",
            f"{base_url}/webhooks/shopify",
        )
        assert sent.stdout.startswith("200 "), str(sent)
        assert json.loads(sent.stdout[4:])["status"] == "processed"
    except BaseException:
        print(await stop(server))  # shown under "Captured stdout" when the test fails
        raise
    server_log = await stop(server)
    # uvicorn re-raises the signal after a graceful shutdown.
    assert server.returncode in (0, -signal.SIGTERM), server_log
    assert "Application shutdown complete" in server_log, server_log
    assert sqlite_rows(database, "SELECT shopify_id, name FROM orders") == [(ORDER_ID, ORDER_NAME)]
    assert sqlite_rows(database, "SELECT shop_domain, topic, status FROM webhook_events") == [
        (SHOP, "orders/create", "processed")
    ]
