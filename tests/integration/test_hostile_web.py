"""Hostile input against the web surface (sign-in, `/api/*`, the dashboard pages) over real
HTTP, on PostgreSQL and SQLite, as a stranger, a viewer of one store and an admin.

Properties, for every request:
- never a 5xx, and no traceback, source path or template internals in any body;
- no leak: a viewer never sees a byte of the other store's data (seeded with a canary that
  appears nowhere else), and the login form never lets anyone in;
- no template injection: `{{7*7}}` comes back as written, never as 49, and reflected markup is
  escaped in HTML;
- nothing stored: no request here adds or removes a row (the stranger, the viewer and the
  admin alike: both stores already have a queued backfill, so even the admin's valid sync
  requests are refused with 409).

Fixtures set up once per test (not per example): two stores, a viewer and an admin with
signed-in sessions; each example counts rows before and after its own request. Requests go
out through a raw HTTP/1.1 client, so paths, header sizes and bodies are exactly as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import secrets
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import httpx
import itsdangerous
import markupsafe
import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from models import (
    ApiToken,
    ComplianceRequest,
    Customer,
    LoginThrottle,
    Order,
    Product,
    SyncJob,
    Tenant,
    User,
    UserSession,
    UserTenant,
    WebhookEvent,
    utcnow,
)
from receiver.auth import hash_password, token_digest
from tests.conftest import Backend, ServedApp, settings_for
from tests.factories import OTHER_SHOP, SHOP, create_tenant

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Everything of the other store's that could show up on a page carries this: a viewer must
# never see it anywhere.
CANARY = "canary7f3e91"
COUNTED = (
    SyncJob,
    User,
    UserTenant,
    ApiToken,
    WebhookEvent,
    Tenant,
    Order,
    Customer,
    Product,
    ComplianceRequest,
)

FUZZ = settings(
    max_examples=100,
    deadline=None,
    # No explain phase: it reruns failing examples under a tracer, which is slow here.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# A sign-in that reaches the password check costs an argon2 verification (a few tenths of a
# second here): fewer examples.
LOGIN_FUZZ = settings(FUZZ, max_examples=50)


# -- the world: two stores, a viewer of one, an admin ------------------------------------


@dataclass
class Principal:
    name: str
    cookie: str | None = None  # the Cookie header of a signed-in session; None: a stranger
    csrf: str | None = None


@dataclass
class World:
    backend: Backend
    served: ServedApp
    ours: int
    theirs: int
    our_job: int
    their_job: int
    our_event: int
    their_event: int
    principals: dict[str, Principal] = field(default_factory=dict)


async def seed_store(backend: Backend, tenant_id: int, shop: str, mark: str) -> tuple[int, int]:
    """An order, a customer, a failed event and a queued backfill, all named with `mark`.
    Returns the job's and the event's ids."""
    now = utcnow()
    async with backend.sessions() as session, session.begin():
        session.add(
            Order(
                tenant_id=tenant_id,
                shopify_id=9001,
                name=f"#{mark}-order",
                email=f"{mark}@example.net",
                currency="GBP",
                total_price=Decimal("777.77"),
                financial_status="paid",
                processed_at=now,
            )
        )
        session.add(
            Customer(
                tenant_id=tenant_id, shopify_id=9002, email=f"{mark}@example.net", first_name=mark
            )
        )
        event = WebhookEvent(
            tenant_id=tenant_id,
            shop_domain=shop,
            topic="orders/create",
            dedupe_key=f"{mark}-event",
            status="failed",
            error=f"{mark} failed",
            attempts=1,
            received_at=now,
            payload={"name": f"#{mark}-order"},
        )
        job = SyncJob(
            tenant_id=tenant_id,
            mode="full",
            status="queued",
            resources=["orders"],
            progress={"orders": {"cursor": mark, "count": 1}},
            attempts=0,
            created_at=now,
        )
        session.add_all([event, job])
        await session.flush()
        return job.id, event.id


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


def signed_in(email: str, user_id: int, sid: str) -> Principal:
    """A signed-in session, exactly as the login form starts one (receiver.auth.start_session,
    with its user_sessions row added by the caller) and SessionMiddleware signs it: signing in
    for real costs two argon2 hashes per test, and the login form has its own fuzzing below
    and its own tests in test_auth.py."""
    csrf = secrets.token_urlsafe(32)
    session = {"uid": user_id, "sid": sid, "csrf": csrf}
    signer = itsdangerous.TimestampSigner(settings_for("sqlite://").secret_key.reveal())
    cookie = signer.sign(b64encode(json.dumps(session).encode())).decode()
    return Principal(email, f"receiver_session={cookie}", csrf)


@pytest.fixture
async def world(backend: Backend, served: ServedApp) -> World:
    async with httpx.AsyncClient(timeout=10) as probe:
        # Answered only once the app's startup ran: an in-process runner resuming queued jobs
        # on start will not see the two seeded below.
        assert (await probe.get(f"{served.base_url}/healthz")).status_code == 200
    ours = await create_tenant(backend.sessions, SHOP)
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    our_job, our_event = await seed_store(backend, ours, SHOP, "ours4a1b2c")
    their_job, their_event = await seed_store(backend, theirs, OTHER_SHOP, CANARY)
    world = World(backend, served, ours, theirs, our_job, their_job, our_event, their_event)
    world.principals["stranger"] = Principal("stranger")
    async with backend.sessions() as session, session.begin():
        for email, admin in ((VIEWER, False), (ADMIN, True)):
            user = User(email=email, password_hash=password_hash(), is_admin=admin)
            session.add(user)
            await session.flush()
            if not admin:
                session.add(UserTenant(user_id=user.id, tenant_id=ours))
            sid = secrets.token_urlsafe(32)
            session.add(
                UserSession(
                    user_id=user.id,
                    token_sha256=token_digest(sid),
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
            world.principals["admin" if admin else "viewer"] = signed_in(email, user.id, sid)
    # The premises: both sessions are signed in, and the canary is there to be leaked (the
    # admin sees it on the other store's page; the viewer sees their own store's data).
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as probe:
        for who, shop, mark in (("viewer", SHOP, "ours4a1b2c"), ("admin", OTHER_SHOP, CANARY)):
            cookie = world.principals[who].cookie
            assert cookie is not None
            page = await probe.get(f"/stores/{shop}", headers={"Cookie": cookie})
            assert page.status_code == 200, "the session is not signed in"
            assert mark in page.text
    return world


async def counts(backend: Backend) -> dict[str, int]:
    query = select(
        *[select(func.count()).select_from(model).scalar_subquery() for model in COUNTED]
    )
    async with backend.sessions() as session:
        row = (await session.execute(query)).one()
    return {model.__tablename__: value for model, value in zip(COUNTED, row, strict=True)}


async def forget_failed_logins(backend: Backend) -> None:
    """Failed sign-ins are recorded by design; clear them so every example reaches the password
    check instead of the lockout."""
    async with backend.sessions() as session, session.begin():
        await session.execute(delete(LoginThrottle))


# -- a raw HTTP/1.1 client: request targets exactly as written, any header size ----------

# The largest body sent (and what bodies are cut to).
BODY_CEILING = 2 * 1024 * 1024


@dataclass
class Answer:
    status: int | None  # None: the server closed the connection without answering
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def read_answer(reader: asyncio.StreamReader, method: str) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    status = int(status_line.split(" ")[1])
    if method == "HEAD" or status in (204, 304):
        return Answer(status, headers, b"")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size + 2))
        return Answer(status, headers, b"".join(chunk[:-2] for chunk in chunks))
    if "content-length" in headers:
        return Answer(status, headers, await reader.readexactly(int(headers["content-length"])))
    return Answer(status, headers, await reader.read())


async def raw_request(
    served: ServedApp,
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    body: bytes = b"",
) -> Answer:
    """One request on a fresh connection, kept alive until the answer is read.

    Keep-alive matters: a server that answers before reading the whole body (a refused form, a
    page that ignores its body) and then closed the connection with body bytes still unread
    would make its kernel reset the connection, destroying the answer in flight."""
    host, port = served.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=4 * 1024 * 1024)
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())

    async def send() -> None:
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        answer = await read_answer(reader, method)
    except (asyncio.IncompleteReadError, ConnectionError):
        answer = Answer(None, {}, b"")
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if answer.status is None or answer.status >= 500:
        # Barrier, not a wait (see test_hostile_input.post): the server logs the traceback of
        # a 500 after sending it; let it finish before this test formats a failure report.
        async with httpx.AsyncClient(timeout=10) as barrier:
            await barrier.get(f"{served.base_url}/healthz")
    return answer


# -- what every answer must satisfy --------------------------------------------------------

TEMPLATE_PROBE = "q{{7*7}}q"
TEMPLATE_RESULT = "q49q"
MARKUP_PROBE = "<script>alert('x7')</script>"
LEAKS = ("Traceback", 'File "/', '.py", line', "jinja2.exceptions", "sqlalchemy.exc")


def check(
    world: World, principal: Principal, status: int | None, headers: dict[str, str], text: str
) -> None:
    assert status is not None, "the server hung up without answering"
    assert status < 500, (status, text[:500])
    for leak in LEAKS:
        assert leak not in text, (status, leak, text[:500])
    assert TEMPLATE_RESULT not in text, text[:500]
    assert "'filters':" not in text  # Jinja's {% debug %} output
    if headers.get("content-type", "").startswith("text/html"):
        assert MARKUP_PROBE not in text, text[:500]
        assert headers.get("content-security-policy", "").startswith("default-src 'self'")
    if principal.name != ADMIN:
        assert CANARY not in text.lower(), (principal.name, status, text[:500])


async def assert_nothing_stored(world: World, before: dict[str, int]) -> None:
    assert await counts(world.backend) == before


# -- hostile strings -----------------------------------------------------------------------


class Blob(bytes):
    """Bytes that print short in a failure report."""

    def __repr__(self) -> str:
        if len(self) <= 300:
            return bytes.__repr__(self)
        return f"Blob({bytes(self[:150])!r} + ... {len(self) - 150} more bytes)"


class Long(str):
    """A string that prints short in a failure report."""

    __slots__ = ()

    def __repr__(self) -> str:
        if len(self) <= 300:
            return str.__repr__(self)
        return f"Long({str(self[:150])!r} + ... {len(self) - 150} more characters)"


INJECTIONS = [
    "' OR 1=1 --",
    "' OR '1'='1",
    f"{ADMIN}' --",
    f"{VIEWER}'/*",
    '"; DROP TABLE users; --',
    "1; SELECT pg_sleep(0) --",
    TEMPLATE_PROBE,
    "{% debug %}",
    "{% raw %}{% debug %}{% endraw %}",
    "{{ config }}",
    "{{ self.__init__.__globals__ }}",
    "{{ request.app.state }}",
    "${7*7}",
    "#{7*7}",
    MARKUP_PROBE,
    '"><img src=x onerror=alert(1)>',
    "\x00",
    "%00",
    "../../../../etc/passwd",
    "\u202e",
    "\ud800",
    "Ａｄｍｉｎ@example.com",
    "аdmin@example.com",  # Cyrillic а
    OTHER_SHOP,
]
hostile_text = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8).map(
        lambda s: Long((s * 3000)[:6000])
    ),
    st.tuples(st.sampled_from(INJECTIONS), st.text(max_size=10), st.sampled_from(INJECTIONS)).map(
        "".join
    ),
)


def capped(body: bytes) -> Blob:
    return Blob(body[:BODY_CEILING])


def form_encode(fields: list[tuple[str, str]]) -> bytes:
    """urlencoded, surrogates included (as the invalid UTF-8 they become)."""
    return "&".join(
        quote_plus(name.encode("utf-8", "surrogatepass"))
        + "="
        + quote_plus(value.encode("utf-8", "surrogatepass"))
        for name, value in fields
    ).encode("ascii")


URLENCODED = "application/x-www-form-urlencoded"
FORM_TYPES = [
    URLENCODED,
    "application/x-www-form-urlencoded; charset=utf-16",
    "APPLICATION/X-WWW-FORM-URLENCODED",
    "application/x-www-form-urlencodedjunk",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/json",
    "text/plain",
    "",
]

huge_headers = st.one_of(
    st.just([]),
    st.just([]),
    st.integers(min_value=4_000, max_value=200_000).map(lambda n: [(b"X-Padding", Blob(b"p" * n))]),
    st.integers(min_value=4_000, max_value=100_000).map(lambda n: [(b"Referer", Blob(b"r" * n))]),
    st.integers(min_value=1, max_value=300).map(
        lambda n: [(f"X-Many-{i}".encode(), b"v" * 64) for i in range(n)]
    ),
)


@st.composite
def login_bodies(draw: st.DrawFn, csrf: str) -> tuple[str, bytes]:
    """A content type and a body for POST /login: well-formed forms with hostile fields, cut
    forms, oversized forms, raw bytes, other encodings."""
    fields: list[tuple[str, str]] = []
    real = {"csrf_token": csrf, "email": VIEWER, "password": "not the password"}
    for name in ("csrf_token", "email", "password"):
        weight = 6 if name == "csrf_token" else 1  # mostly past the form token, into sign_in
        choice = draw(st.sampled_from(["real"] * weight + ["hostile", "hostile", "absent", "both"]))
        if choice in ("real", "both"):
            fields.append((name, real[name]))
        if choice in ("hostile", "both"):
            fields.append((name, draw(hostile_text)))
    fields += draw(st.lists(st.tuples(hostile_text, hostile_text), max_size=3))
    fields = draw(st.permutations(fields))
    shape = draw(st.sampled_from(["form"] * 6 + ["cut", "many", "oversized", "bytes", "json"]))
    body = form_encode(fields)
    if shape == "cut":
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    elif shape == "many":
        body = form_encode(fields + [(f"f{i}", "x") for i in range(25)])
    elif shape == "oversized":
        size = draw(st.integers(min_value=16 * 1024, max_value=BODY_CEILING // 2))
        body = body + b"&email=" + b"a" * size
    elif shape == "bytes":
        body = draw(st.binary(max_size=300))
    elif shape == "json":
        body = json.dumps(dict(fields)).encode()
    return draw(st.sampled_from([URLENCODED] * 6 + FORM_TYPES)), capped(body)


# -- sign-in -------------------------------------------------------------------------------


@LOGIN_FUZZ
@given(data=st.data())
async def test_hostile_sign_ins_never_fail_never_let_anyone_in_and_store_nothing(world, data):
    served = world.served
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
        page = await client.get("/login")
        csrf = CSRF.search(page.text)
        assert csrf
        content_type, body = data.draw(login_bodies(csrf.group(1)), label="body")
        headers = [(b"Cookie", f"receiver_session={client.cookies['receiver_session']}".encode())]
        if content_type:
            headers.append((b"Content-Type", content_type.encode()))
        headers += data.draw(huge_headers, label="extra headers")
        await forget_failed_logins(world.backend)
        before = await counts(world.backend)
        answer = await raw_request(served, "POST", b"/login", headers, body)
    stranger = world.principals["stranger"]
    check(world, stranger, answer.status, answer.headers, answer.text)
    event(f"login {answer.status}")
    assert answer.status in {400, 401, 403, 413, 429, 431}, (answer.status, answer.text[:300])
    await assert_nothing_stored(world, before)


# -- /api/* --------------------------------------------------------------------------------

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 2),
    st.floats(),
    hostile_text,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=15,
)


@st.composite
def sync_bodies(draw: st.DrawFn, world: World) -> bytes:
    kind = draw(st.sampled_from(["fields", "fields", "fields", "any json", "bytes", "huge", "cut"]))
    if kind == "fields":
        document: dict[str, Any] = {}
        store = st.one_of(
            st.sampled_from([world.ours, world.theirs]),
            st.sampled_from([0, -1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30]),
            json_leaves,
        )
        if draw(st.booleans()):
            document["tenantId"] = draw(store)
        if draw(st.booleans()):
            shops = [SHOP, OTHER_SHOP, OTHER_SHOP.upper(), f" {OTHER_SHOP}\n"]
            document["shop"] = draw(st.one_of(st.sampled_from(shops), json_values))
        if draw(st.booleans()):
            document["mode"] = draw(st.one_of(st.sampled_from(["full", "bulk"]), json_values))
        if draw(st.booleans()):
            names = st.sampled_from(["orders", "customers", "products"])
            document["resources"] = draw(st.one_of(st.lists(names), json_values))
        return json.dumps(document).encode()
    if kind == "any json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "huge":
        size = draw(st.integers(min_value=64 * 1024, max_value=BODY_CEILING // 2))
        return Blob(b'{"tenantId": 1, "pad": "' + b"x" * size + b'"}')
    text = json.dumps({"tenantId": world.ours, "mode": "full", "resources": ["orders"]})
    return text[: draw(st.integers(min_value=0, max_value=len(text) - 1))].encode()


id_texts = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(
        [
            "0",
            "00000000000000000001",
            "9223372036854775807",
            "9223372036854775808",
            "1" * 400,
            "1.0",
            "1e3",
            "0x1",
            "%31",
            "1%00",
            "1%2f..%2f..%2fetc%2fpasswd",
            "..%2f..%2fetc%2fpasswd",
            "%2e%2e",
            "%252e%252e%252f",
            "%D9%A1",  # Arabic-Indic digit one
            "%EF%BC%91",  # fullwidth digit one
            "1;DROP%20TABLE%20sync_jobs",
            "1%20OR%201=1",
        ]
    ),
)


def query_string(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(
        [(k.encode("utf-8", "surrogatepass"), v.encode("utf-8", "surrogatepass")) for k, v in pairs]
    ).encode("ascii")


shop_values = st.one_of(
    st.sampled_from(
        [
            SHOP,
            OTHER_SHOP,
            OTHER_SHOP.upper(),
            f" {OTHER_SHOP} ",
            f"{OTHER_SHOP}\x00",
            f"{OTHER_SHOP}.evil.com",
            "beta-store.myshopify.com/../alpha-store.myshopify.com",
            "bеta-store.myshopify.com",  # Cyrillic е
            "ｂｅｔａ-store.myshopify.com",
            "x" * 300 + ".myshopify.com",
            "",
        ]
    ),
    hostile_text,
)


@st.composite
def api_requests(draw: st.DrawFn, world: World, principal: Principal) -> tuple[str, bytes, bytes]:
    """Method, target and body of a request to /api/*."""
    query = draw(st.lists(st.tuples(hostile_text, hostile_text), max_size=3))
    route = draw(st.sampled_from(["sync", "status", "status", "stats", "stats", "trick"]))
    if route == "sync":
        target = b"/api/sync"
        if query:
            target += b"?" + query_string(query)
        return "POST", target, draw(sync_bodies(world))
    if route == "status":
        job = draw(st.one_of(st.sampled_from([world.our_job, world.their_job]).map(str), id_texts))
        target = f"/api/sync/{job}".encode()
        if query:
            target += b"?" + query_string(query)
        return "GET", target, b""
    if route == "stats":
        shops = draw(st.lists(shop_values, max_size=3))
        pairs = [("shop", shop) for shop in shops] + query
        pairs = draw(st.permutations(pairs))
        return "GET", b"/api/stats?" + query_string(pairs), b""
    trick = draw(
        st.sampled_from(
            [
                b"/api/stats/../sync/1",
                b"/api/stats/..%2f..%2fetc%2fpasswd",
                b"/api//stats?shop=" + OTHER_SHOP.encode(),
                b"/api/stats%00?shop=" + OTHER_SHOP.encode(),
                b"/api/stats;shop=" + OTHER_SHOP.encode(),
                b"/api/%73tats?shop=" + OTHER_SHOP.encode(),
                b"/API/STATS?shop=" + OTHER_SHOP.encode(),
                b"/api/stats?shop=" + quote(OTHER_SHOP, safe="").encode() + b"%00",
                b"/api/stats?shop=" + OTHER_SHOP.encode() + b"&shop=" + SHOP.encode(),
                b"/api/stats?shop=" + SHOP.encode() + b"&shop=" + OTHER_SHOP.encode(),
                b"/api/sync/" + str(world.their_job).encode() + b"/../" + b"1",
                b"/api/sync/%2e%2e/" + str(world.their_job).encode(),
                b"http://127.0.0.1/api/stats?shop=" + OTHER_SHOP.encode(),
                b"*",
            ]
        )
    )
    return draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"])), trick, b""


API_TYPES = [
    "application/json",
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "application/json; charset=latin-1",
    "",
]


@st.composite
def credentials(draw: st.DrawFn, principal: Principal) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    if principal.cookie is not None:
        headers.append((b"Cookie", principal.cookie.encode()))
        csrf = draw(st.sampled_from(["real", "real", "absent", "wrong"]))
        if csrf == "real":
            assert principal.csrf is not None
            headers.append((b"X-CSRF-Token", principal.csrf.encode()))
        elif csrf == "wrong":
            headers.append((b"X-CSRF-Token", draw(hostile_text).encode("utf-8", "replace")))
    else:
        kind = draw(st.sampled_from(["none", "none", "bearer", "cookie", "csrf"]))
        value = (
            draw(hostile_text).encode("utf-8", "replace").replace(b"\r", b"").replace(b"\n", b"")
        )
        if kind == "bearer":
            prefix = draw(st.sampled_from([b"Bearer ", b"bearer srk_", b"Basic ", b""]))
            headers.append((b"Authorization", prefix + value))
        elif kind == "cookie":
            headers.append((b"Cookie", b"receiver_session=" + value))
        elif kind == "csrf":
            headers.append((b"X-CSRF-Token", value))
    return headers


def clean(value: bytes) -> bytes:
    """No CR or LF: they would end the header line (request splitting, not input)."""
    return value.replace(b"\r", b"").replace(b"\n", b"")


PRINCIPALS = ["stranger", "viewer", "admin"]
SERVER_REFUSALS = frozenset({"Invalid HTTP request received.", "Request head too large"})


@FUZZ
@given(data=st.data(), who=st.sampled_from(PRINCIPALS))
async def test_hostile_api_requests_never_fail_leak_or_store(world, data, who):
    principal = world.principals[who]
    method, target, body = data.draw(api_requests(world, principal), label="request")
    headers = [(name, clean(value)) for name, value in data.draw(credentials(principal))]
    content_type = data.draw(st.sampled_from(API_TYPES), label="content type")
    if content_type:
        headers.append((b"Content-Type", content_type.encode()))
    headers += data.draw(huge_headers, label="extra headers")

    before = await counts(world.backend)
    answer = await raw_request(world.served, method, target, headers, body)
    event(f"{who} {method} {answer.status}")
    check(world, principal, answer.status, answer.headers, answer.text)
    assert answer.status != 202, "a sync started although one is queued for every store"
    is_json = answer.headers.get("content-type") == "application/json" and method != "HEAD"
    if is_json and answer.status >= 400:  # type: ignore[operator]
        assert "error" in json.loads(answer.body)
    if who == "stranger":
        # 401 once the app sees the request, whatever else is wrong with it; a 404 or 405 for
        # what no route serves (an id that cannot exist included); a 400 only from the HTTP
        # server itself, for a request it cannot parse (a NUL in a header, say).
        assert answer.status in {400, 401, 404, 405}, answer.text[:300]
        if answer.status == 400 and method == "HEAD":
            # No body to read: the server's own refusal is the one without our app's headers.
            assert "content-security-policy" not in {key.lower() for key in answer.headers}
        elif answer.status == 400:
            # uvicorn's refusal of an unparsable request, or ours of a head over 64 KiB.
            assert answer.text in SERVER_REFUSALS, answer.text[:300]
    if who == "viewer" and is_json and answer.status == 200:
        assert json.loads(answer.body).get("tenant_id") == world.ours
    await assert_nothing_stored(world, before)


# -- pages ---------------------------------------------------------------------------------

SHOP_TRICKS = [
    "..%2f..%2fetc%2fpasswd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fstores%2f" + OTHER_SHOP,
    "%252e%252e%252fetc%252fpasswd",
    "%252e%252e%252f" + OTHER_SHOP,
    "..",
    ".",
    "%00",
    OTHER_SHOP + "%00",
    OTHER_SHOP + "%00" + SHOP,
    SHOP + "%00" + OTHER_SHOP,
    OTHER_SHOP + "%0a",
    "%20" + OTHER_SHOP,
    OTHER_SHOP.upper(),
    quote("bеta-store.myshopify.com"),  # Cyrillic е
    quote("ｂｅｔａ-store.myshopify.com"),
    quote("beta-store.myshopify.com\u200b"),
    quote("beta\u2010store.myshopify.com"),  # Unicode hyphen
    OTHER_SHOP + "%2f..%2f" + SHOP,
    SHOP + "%2f..%2f" + OTHER_SHOP,
    SHOP + "%3f.." + OTHER_SHOP,
    "a" * 5000 + ".myshopify.com",
    "a" * 201 + ".myshopify.com",
    "a" * 100_000,
    quote(TEMPLATE_PROBE, safe=""),
    quote(MARKUP_PROBE, safe=""),
    OTHER_SHOP,
    SHOP,
]
shop_segments = st.one_of(
    st.sampled_from(SHOP_TRICKS),
    hostile_text.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
)
PAGE_TRICKS = [
    b"/",
    b"//",
    b"/login",
    b"/stores",
    b"/stores/",
    b"/stores//" + OTHER_SHOP.encode(),
    b"/./stores/" + OTHER_SHOP.encode(),
    b"/stores/" + OTHER_SHOP.encode() + b"/",
    b"/stores/" + SHOP.encode() + b"/../" + OTHER_SHOP.encode(),
    b"/static/../pages.py",
    b"/static/..%2fpages.py",
    b"/static/%2e%2e/web.py",
    b"/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
    b"/static/..%5cweb.py",
    b"/static/%252e%252e/web.py",
    b"/static/app.css%00.py",
    b"/static//etc/passwd",
    b"/static/",
    b"/%2e%2e/%2e%2e/etc/passwd",
    b"/logout",
]


@st.composite
def page_requests(draw: st.DrawFn, world: World, principal: Principal) -> tuple[str, bytes, bytes]:
    kind = draw(st.sampled_from(["store", "store", "store", "trick", "sync", "replay"]))
    # Often a real store, so the checks behind the store lookup run too.
    real = st.sampled_from([SHOP, OTHER_SHOP, OTHER_SHOP.upper()])
    shop = draw(st.one_of(real, shop_segments)).encode("ascii")
    if kind == "trick":
        return draw(st.sampled_from(["GET", "POST"])), draw(st.sampled_from(PAGE_TRICKS)), b""
    fields = draw(st.lists(st.tuples(hostile_text, hostile_text), max_size=3))
    if kind == "store":
        query = fields + [
            (k, draw(hostile_text)) for k in draw(st.sets(st.sampled_from(["sync", "replay"])))
        ]
        target = b"/stores/" + shop
        if query:
            target += b"?" + query_string(query)
        return "GET", target, b""
    csrf = draw(st.sampled_from(["real", "real", "absent", "hostile"]))
    if csrf == "real" and principal.csrf is not None:
        fields.append(("csrf_token", principal.csrf))
    elif csrf == "hostile":
        fields.append(("csrf_token", draw(hostile_text)))
    if kind == "sync":
        for name, choices in (
            ("mode", ["full", "incremental", "bulk"]),
            ("resources", ["orders", "customers,products", ""]),
        ):
            if draw(st.booleans()):
                fields.append((name, draw(st.one_of(st.sampled_from(choices), hostile_text))))
        return "POST", b"/stores/" + shop + b"/sync", capped(form_encode(fields))
    event_id = draw(
        st.one_of(st.sampled_from([world.our_event, world.their_event]).map(str), id_texts)
    )
    return (
        "POST",
        b"/stores/" + shop + b"/events/" + event_id.encode() + b"/replay",
        capped(form_encode(fields)),
    )


@FUZZ
@given(data=st.data(), who=st.sampled_from(PRINCIPALS))
async def test_hostile_page_requests_never_fail_leak_or_store(world, data, who):
    principal = world.principals[who]
    method, target, body = data.draw(page_requests(world, principal), label="request")
    headers: list[tuple[bytes, bytes]] = []
    if principal.cookie is not None:
        headers.append((b"Cookie", principal.cookie.encode()))
    if body:
        content_type = data.draw(st.sampled_from([URLENCODED] * 6 + FORM_TYPES), label="type")
        if content_type:
            headers.append((b"Content-Type", content_type.encode()))
    headers += data.draw(huge_headers, label="extra headers")
    if target == b"/logout":
        headers = [(name, value) for name, value in headers if name != b"Cookie"]

    before = await counts(world.backend)
    answer = await raw_request(world.served, method, target, headers, body)
    event(f"{who} {method} {answer.status}")
    check(world, principal, answer.status, answer.headers, answer.text)
    assert "import " not in answer.text, "a source file was served"
    assert "[project]" not in answer.text
    assert "root:x:0:0" not in answer.text
    if who == "stranger" and answer.status == 200:
        # Only the sign-in page and static files are open to strangers.
        assert target.startswith((b"/login", b"/static/")), target
    if who == "viewer" and answer.status == 200 and target.startswith(b"/stores/"):
        assert f'data-shop="{SHOP}"' in answer.text
    await assert_nothing_stored(world, before)


# -- pinned examples: what the fuzzing above turned up, and the limits it rarely reaches ----


async def test_a_nul_in_the_sign_in_email_is_a_failed_sign_in(world):
    """PostgreSQL text cannot hold NUL: the lookup of such an email must not reach it (found
    by the sign-in fuzzing: 503 "database unavailable" on PostgreSQL)."""
    async with httpx.AsyncClient(base_url=world.served.base_url, timeout=10) as client:
        page = await client.get("/login")
        csrf = CSRF.search(page.text)
        assert csrf
        before = await counts(world.backend)
        for email in ("\x00", f"{VIEWER}\x00", f"\x00{ADMIN}"):
            response = await client.post(
                "/login", data={"email": email, "password": PASSWORD, "csrf_token": csrf.group(1)}
            )
            assert response.status_code == 401, (email, response.status_code, response.text)
        await assert_nothing_stored(world, before)


async def test_out_of_range_tenant_ids_are_a_404_for_an_admin(world):
    """BIGINT ids: a larger number names no store (and must not reach the driver, which
    refuses to bind it: 503 on PostgreSQL, an unhandled OverflowError and a 500 on SQLite)."""
    admin = world.principals["admin"]
    assert admin.cookie is not None
    assert admin.csrf is not None
    headers = [
        (b"Cookie", admin.cookie.encode()),
        (b"X-CSRF-Token", admin.csrf.encode()),
        (b"Content-Type", b"application/json"),
    ]
    before = await counts(world.backend)
    answers = {}
    for tenant_id in (2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, -1, 0):
        body = json.dumps({"tenantId": tenant_id}).encode()
        answer = await raw_request(world.served, "POST", b"/api/sync", headers, body)
        answers[tenant_id] = (answer.status, answer.text)
    assert {key: value for key, value in answers.items() if value[0] != 404} == {}
    await assert_nothing_stored(world, before)


async def test_strangers_get_401_from_the_sync_api_whatever_the_body(world):
    """DESIGN.md: /api/* without a session or token answers 401, whatever else is wrong."""
    bodies = [b"", b"{", b"[]", b"\xff", b'{"tenantId": "x"}', b'{"mode": "sideways"}']
    answers = {}
    async with httpx.AsyncClient(base_url=world.served.base_url, timeout=10) as client:
        before = await counts(world.backend)
        for body in [*bodies, b"x" * 70_000]:
            response = await client.post(
                "/api/sync", content=body, headers={"Content-Type": "application/json"}
            )
            answers[body[:20]] = (response.status_code, response.text)
        await assert_nothing_stored(world, before)
    assert {key: value for key, value in answers.items() if value[0] != 401} == {}


async def test_out_of_range_ids_in_paths(world):
    targets = [
        "/api/sync/0",
        "/api/sync/9223372036854775808",
        "/api/sync/" + "9" * 400,
        f"/stores/{SHOP}/events/9223372036854775808/replay",
        f"/stores/{SHOP}/events/{'9' * 400}/replay",
    ]
    before = await counts(world.backend)
    for target in targets:
        for who in PRINCIPALS:
            principal = world.principals[who]
            headers = [(b"Cookie", principal.cookie.encode())] if principal.cookie else []
            method = "POST" if target.endswith("/replay") else "GET"
            body = b""
            if method == "POST" and principal.csrf:
                headers.append((b"Content-Type", URLENCODED.encode()))
                body = form_encode([("csrf_token", principal.csrf)])
            answer = await raw_request(world.served, method, target.encode(), headers, body)
            check(world, principal, answer.status, answer.headers, answer.text)
            # An id that cannot exist may be refused before the caller is identified.
            expected = {"stranger": {401, 404, 303}, "viewer": {404, 403}, "admin": {404}}[who]
            assert answer.status in expected, (who, target, answer.status, answer.text[:200])
    await assert_nothing_stored(world, before)


async def test_reflected_input_is_shown_as_written(world):
    """Where a page or an error repeats what was sent, template syntax stays text and markup
    is escaped: the login form's email, a refused backfill's mode, the API's shop error."""
    probes = [TEMPLATE_PROBE, "{% raw %}{% debug %}{% endraw %}", "{{ config }}", MARKUP_PROBE]
    async with httpx.AsyncClient(base_url=world.served.base_url, timeout=10) as client:
        page = await client.get("/login")
        csrf = CSRF.search(page.text)
        assert csrf
        for probe in probes:
            response = await client.post(
                "/login", data={"email": probe, "password": "x", "csrf_token": csrf.group(1)}
            )
            assert response.status_code == 401
            assert f'name="email" value="{markupsafe.escape(probe)}"' in response.text
        admin = world.principals["admin"]
        assert admin.cookie is not None
        assert admin.csrf is not None
        for probe in probes:
            response = await client.post(
                f"/stores/{SHOP}/sync",
                data={"mode": probe, "csrf_token": admin.csrf},
                headers={"Cookie": admin.cookie},
            )
            assert response.status_code == 400
            assert str(markupsafe.escape(repr(probe))) in response.text
            stats = await client.get(
                "/api/stats", params={"shop": probe}, headers={"Cookie": admin.cookie}
            )
            assert stats.status_code == 400
            assert repr(probe) in stats.json()["error"]
            check(world, admin, stats.status_code, dict(stats.headers), stats.text)


async def test_a_head_request_the_server_cannot_parse_is_its_own_bodiless_400(world):
    """Found by the fuzzer: a control character in a cookie, on HEAD, so no body to read."""
    answer = await raw_request(
        world.served, "HEAD", b"/api/stats/../sync/1", [(b"Cookie", b"receiver_session=\x1f")]
    )
    assert answer.status == 400
    assert answer.text == ""
    assert "content-security-policy" not in {key.lower() for key in answer.headers}
