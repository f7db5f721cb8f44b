"""Hostile input against the served app over real HTTP, on PostgreSQL and SQLite.

Properties (DESIGN.md, "Webhook responses"; "Never a 500 for anything a client sends"):
(a) without a valid signature the answer is 401 (413 for an oversized body, which is refused
    before it can be verified) and nothing at all is stored, whatever the headers and body;
(b) correctly signed, the answer is 200, 400 or 413, never a server error; a 400 or 413 stores
    nothing and a 200 stores exactly one inbox row (none for a reported duplicate).

The `backend` fixture empties the database once per test, not per example, so each example
counts rows before and after its own request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models import ComplianceRequest, Customer, Order, Product, Tenant, WebhookEvent
from receiver.samples import sample_payload
from tests.conftest import APP_SECRET, OLD_APP_SECRET, TEST_BODY_LIMIT, Backend, ServedApp
from tests.factories import SHOP, create_tenant

STORE_SECRET = "alpha-store-own-secret"
COUNTED = (WebhookEvent, Order, Customer, Product, ComplianceRequest, Tenant)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    # No explain phase: it reruns each failing example under a tracer, which is slow here.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def reference_sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def counts(backend: Backend) -> dict[str, int]:
    """Rows in every table a request could write to, in one round trip."""
    query = select(
        *[select(func.count()).select_from(model).scalar_subquery() for model in COUNTED]
    )
    async with backend.sessions() as session:
        row = (await session.execute(query)).one()
    return {model.__tablename__: value for model, value in zip(COUNTED, row, strict=True)}


async def post(
    http: httpx.AsyncClient, served: ServedApp, body: bytes, headers: list[tuple[str, str]]
) -> httpx.Response:
    raw = [(name.encode("ascii"), value.encode("latin-1")) for name, value in headers]
    response = await http.post(served.webhook_url, content=body, headers=raw)
    if response.status_code >= 500:
        # Barrier, not a wait: Starlette sends its 500 before uvicorn logs the traceback, and
        # the server's event loop answers nothing else until that logging is done. Without it,
        # the failure report formatted here races the server thread's traceback formatting,
        # which on CPython 3.11 corrupts the ast module's shared recursion counter (pytest
        # INTERNALERROR). A fresh connection: uvicorn closes the one that got the 500.
        async with httpx.AsyncClient(timeout=10) as barrier:
            await barrier.get(f"{served.base_url}/healthz")
    return response


class LastFramesOnly(logging.Filter):
    """Server tracebacks cut to their last frames: a RecursionError has a thousand, logged
    once per shrinking step, which would bury the failure report under a million lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            formatted = traceback.format_exception(record.exc_info[1], limit=-12)
            record.exc_text = "".join(formatted).rstrip()
        return True


@pytest.fixture(autouse=True)
def short_server_tracebacks() -> Iterator[None]:
    logger = logging.getLogger("uvicorn.error")
    only_last = LastFramesOnly()
    logger.addFilter(only_last)
    yield
    logger.removeFilter(only_last)


@pytest.fixture
async def store(backend: Backend) -> Backend:
    """An active store with its own webhook secret, so the store-secret path runs too."""
    await create_tenant(backend.sessions, SHOP, webhook_secrets=[STORE_SECRET])
    return backend


# --- strategies: headers --------------------------------------------------------------------

SUFFIXES = (
    "Topic",
    "Hmac-Sha256",
    "Shop-Domain",
    "API-Version",
    "Webhook-Id",
    "Event-Id",
    "Triggered-At",
    "Name",
    "Sub-Topic",
)
HEADER_SUFFIXES = tuple(suffix for suffix in SUFFIXES if suffix != "Hmac-Sha256")
HANDLED_TOPICS = [
    "orders/create",
    "orders/updated",
    "orders/paid",
    "orders/cancelled",
    "orders/fulfilled",
    "orders/partially_fulfilled",
    "orders/edited",
    "orders/delete",
    "customers/create",
    "customers/update",
    "customers/delete",
    "customers/enable",
    "customers/disable",
    "products/create",
    "products/update",
    "products/delete",
    "refunds/create",
    "order_transactions/create",
    "fulfillments/create",
    "fulfillments/update",
    "inventory_items/create",
    "inventory_items/update",
    "inventory_items/delete",
    "inventory_levels/update",
    "inventory_levels/connect",
    "inventory_levels/disconnect",
    "app/uninstalled",
    "customers/data_request",
    "customers/redact",
    "shop/redact",
]

# What h11 lets a client put in a header value: visible ASCII and obs-text (latin-1), with
# inner spaces. No control characters, no leading or trailing whitespace.
header_chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
short_text = st.text(header_chars, max_size=80).map(str.strip)
long_text = st.text(header_chars, min_size=1, max_size=12).map(lambda s: (s * 8192)[:8192].strip())
any_text = st.one_of(short_text, long_text)

long_topics = st.from_regex(r"[a-z0-9_]{1,150}(/[a-z0-9_]{1,150}){1,3}", fullmatch=True)
PLAUSIBLE: dict[str, st.SearchStrategy[str]] = {
    "Topic": st.one_of(
        st.sampled_from(HANDLED_TOPICS),
        st.sampled_from(HANDLED_TOPICS).map(str.upper),
        st.sampled_from(["collections/update", "shop/update", "bulk_operations/finish"]),
        long_topics,
    ),
    "Shop-Domain": st.sampled_from(
        [SHOP, SHOP.upper(), "Alpha-Store.MyShopify.com", "stranger.myshopify.com", "evil.com"]
    ),
    "API-Version": st.sampled_from(["2026-10", "2025-01", "unstable", "x" * 33]),
    "Webhook-Id": st.one_of(st.uuids().map(str), st.just("w" * 255), st.just("w" * 256)),
    "Event-Id": st.one_of(st.uuids().map(str), st.just("e" * 255), st.just("e" * 256)),
    "Triggered-At": st.sampled_from(
        [
            "2023-03-29T18:00:27.877041743Z",
            "2026-11-20T10:15:03-05:00",
            "2023-03-29T18:00:27",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "not a time",
        ]
    ),
    "Name": st.sampled_from(["my-subscription", ""]),
    "Sub-Topic": st.sampled_from(["order", ""]),
    "Hmac-Sha256": st.sampled_from(["", "garbage==", "A" * 44]),
}


@st.composite
def spelled(draw: st.DrawFn, suffix: str) -> str:
    """A Shopify header name: prefixed or not, in any letter case."""
    name = draw(st.sampled_from(["X-Shopify-", "Shopify-"])) + suffix
    style = draw(st.sampled_from(["as-is", "lower", "upper", "mixed"]))
    if style == "lower":
        return name.lower()
    if style == "upper":
        return name.upper()
    if style == "mixed":
        flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
        return "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True))
    return name


def header_value(suffix: str, plausible_weight: int = 1) -> st.SearchStrategy[str]:
    return st.one_of(*[PLAUSIBLE[suffix]] * plausible_weight, any_text)


@st.composite
def random_headers(draw: st.DrawFn, suffixes: tuple[str, ...]) -> list[tuple[str, str]]:
    """Any subset of the headers, a name possibly twice in different spellings."""
    headers: list[tuple[str, str]] = []
    for suffix in suffixes:
        for _ in range(draw(st.integers(min_value=0, max_value=2))):
            headers.append((draw(spelled(suffix)), draw(header_value(suffix))))
    return draw(st.permutations(headers))


VALID: dict[str, st.SearchStrategy[str]] = {
    "Topic": st.one_of(
        st.sampled_from(HANDLED_TOPICS),
        st.sampled_from(HANDLED_TOPICS).map(str.upper),
        st.sampled_from(["collections/update", "shop/update"]),
    ),
    "Shop-Domain": st.sampled_from(
        [SHOP, SHOP.upper(), "Alpha-Store.MyShopify.com", "stranger.myshopify.com"]
    ),
    "API-Version": st.sampled_from(["2026-10", "unstable"]),
    "Webhook-Id": st.uuids().map(str),
    "Event-Id": st.uuids().map(str),
    "Triggered-At": st.sampled_from(
        ["2023-03-29T18:00:27.877041743Z", "2026-11-20T10:15:03-05:00", "not a time"]
    ),
    "Name": any_text,
    "Sub-Topic": any_text,
}


@st.composite
def signed_headers(draw: st.DrawFn, hostile: frozenset[str]) -> dict[str, tuple[str, str]]:
    """At most one spelling per header, so the test knows which one the app reads. Headers in
    `hostile` may be absent or hold anything; the others are well-formed, topic and shop
    always present."""
    headers: dict[str, tuple[str, str]] = {}
    for suffix in SUFFIXES:
        if suffix == "Hmac-Sha256":
            continue
        if suffix in hostile:
            required = suffix in ("Topic", "Shop-Domain")
            if draw(st.sampled_from([True] * (6 if required else 1) + [False])):
                value = draw(header_value(suffix, plausible_weight=3))
                headers[suffix] = (draw(spelled(suffix)), value)
        elif suffix in ("Topic", "Shop-Domain") or draw(st.booleans()):
            headers[suffix] = (draw(spelled(suffix)), draw(VALID[suffix]))
    return headers


# --- strategies: bodies ---------------------------------------------------------------------

# Any character, plus the ones storage chokes on: NUL and unpaired surrogates.
hostile_chars = st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\udc00"]))
hostile_text = st.text(hostile_chars, max_size=20)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(hostile_text, children, max_size=5),
    ),
    max_leaves=25,
)
SAMPLE_TOPICS = [
    "orders/create",
    "orders/paid",
    "orders/delete",
    "orders/edited",
    "customers/create",
    "customers/delete",
    "products/create",
    "products/delete",
    "customers/redact",
    "customers/data_request",
    "app/uninstalled",
    "refunds/create",
    "fulfillments/update",
    "inventory_items/update",
    "inventory_levels/update",
    "inventory_levels/disconnect",
]
MUTABLE_FIELDS = [
    "id",
    "updated_at",
    "created_at",
    "total_price",
    "customer",
    "email",
    "tags",
    "line_items",
    "orders_to_redact",
    "order_edit",
    "order_id",
    "refund_line_items",
    "transactions",
    "variant_gids",
    "inventory_item_id",
    "location_id",
    "available",
    "admin_graphql_api_id",
]


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: surrogates travel as \udXXX escapes


def nested(depth: int, brackets: tuple[bytes, bytes]) -> bytes:
    opener, closer = brackets
    return b'{"deep": ' + opener * depth + b"1" + closer * depth + b"}"


nesting = st.builds(
    nested,
    st.one_of(
        st.integers(min_value=1, max_value=3000),
        st.sampled_from([100, 400, 500, 600, 800, 1000, 2000]),
    ),
    st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]),
)
sample_bodies = st.sampled_from(SAMPLE_TOPICS).map(lambda topic: dumps(sample_payload(topic, SHOP)))
mutated_samples = st.builds(
    lambda topic, field, value: dumps(sample_payload(topic, SHOP) | {field: value}),
    st.sampled_from(SAMPLE_TOPICS),
    st.sampled_from(MUTABLE_FIELDS),
    json_values,
)
object_bodies = st.one_of(
    sample_bodies,
    mutated_samples,
    st.dictionaries(hostile_text, json_values, max_size=8).map(dumps),
    nesting,
    nesting,
    st.integers(min_value=1, max_value=6000).map(lambda n: b'{"id": ' + b"9" * n + b"}"),
    st.sampled_from(
        [
            b'{"x": NaN}',
            b'{"x": Infinity}',
            b'{"x": -Infinity}',
            b'{"x": 1e999}',
            b'{"x": -1e999}',
            b'{"x": 1e308, "y": 5e-324, "z": -0.0}',
            b'{"id": 1, "note": "\\u0000\\ud800\\udfff"}',
            b'{"\\u0000": "\\u0000", "\\udc00": ["\\ud800"]}',
            b'{"a": 1, "a": 2}',
            b"{}",
            b"\xef\xbb\xbf{}",
        ]
    ),
)
other_bodies = st.one_of(
    st.binary(max_size=400),
    json_values.map(dumps),
    st.sampled_from([b"", b"null", b"[]", b'"{}"', b"{", b"\xff\xfe{}"]),
    st.integers(min_value=TEST_BODY_LIMIT + 1, max_value=TEST_BODY_LIMIT * 2).map(
        lambda n: b'{"pad": "' + b"x" * n + b'"}'
    ),
)
bodies = st.one_of(object_bodies, other_bodies)


# --- (a) without a valid signature ----------------------------------------------------------


@st.composite
def wrong_signatures(draw: st.DrawFn, body: bytes) -> str | None:
    kind = draw(
        st.sampled_from(
            ["missing", "empty", "text", "wrong-secret", "hex", "other-body", "store-secret-hex"]
        )
    )
    if kind == "missing":
        return None
    if kind == "empty":
        return ""
    if kind == "text":
        return draw(any_text)
    if kind == "wrong-secret":
        return reference_sign(body, draw(st.sampled_from(["", "shpss_wrong", APP_SECRET + "x"])))
    if kind == "hex":
        return hmac.new(APP_SECRET.encode(), body, hashlib.sha256).hexdigest()
    if kind == "store-secret-hex":
        return hmac.new(STORE_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return reference_sign(body + b" ", APP_SECRET)


@FUZZ
@given(data=st.data(), body=bodies)
async def test_unsigned_or_wrongly_signed_requests_are_401_and_store_nothing(
    store, served, http, data, body
):
    headers = list(data.draw(random_headers(HEADER_SUFFIXES)))
    signature = data.draw(wrong_signatures(body))
    if signature is not None:
        position = data.draw(st.integers(min_value=0, max_value=len(headers)))
        headers.insert(position, (data.draw(spelled("Hmac-Sha256")), signature))
    for secret in (APP_SECRET, OLD_APP_SECRET, STORE_SECRET):
        assert signature != reference_sign(body, secret)  # the test's own premise

    before = await counts(store)
    response = await post(http, served, body, headers)
    after = await counts(store)

    allowed = {401, 413} if len(body) > TEST_BODY_LIMIT else {401}
    assert response.status_code in allowed, response.text[:500]
    event(f"signature {'absent' if signature is None else 'present'}")
    assert "error" in response.json()
    assert after == before


# --- (b) correctly signed -------------------------------------------------------------------


# app/uninstalled turns later deliveries into `ignored` (and lets a shop/redact delete the
# shop's inbox rows): it changes what the next example sees, so the row accounting below skips
# it (the compliance tests cover it; property (a) still sends it). The store stays active, so
# shop/redact is never applied here.
STATEFUL_TOPICS = frozenset({"app/uninstalled"})


def expected_dedupe_key(chosen: dict[str, tuple[str, str]], body: bytes) -> str:
    for suffix in ("Event-Id", "Webhook-Id"):
        if suffix in chosen and chosen[suffix][1].strip():
            return chosen[suffix][1].strip()
    return f"sha256:{hashlib.sha256(body).hexdigest()}"


MODES = [
    "hostile body",
    "hostile body",
    "deep body",
    "one hostile header",
    "hostile headers",
    "both",
]


@FUZZ
@given(data=st.data(), mode=st.sampled_from(MODES))
async def test_signed_hostile_requests_never_fail_and_store_consistently(
    store, served, http, data, mode
):
    if mode == "one hostile header":
        hostile = frozenset([data.draw(st.sampled_from(HEADER_SUFFIXES), label="hostile")])
    else:
        hostile = frozenset(HEADER_SUFFIXES if mode in ("hostile headers", "both") else ())
    chosen = data.draw(signed_headers(hostile), label="headers")
    topic = chosen["Topic"][1].strip().lower() if "Topic" in chosen else None
    assume(topic not in STATEFUL_TOPICS)
    if mode in ("hostile body", "both"):
        body = data.draw(st.one_of(object_bodies, object_bodies, other_bodies), label="body")
    elif mode == "deep body":
        body = data.draw(nesting, label="body")
    else:
        body = data.draw(st.one_of(sample_bodies, mutated_samples), label="body")
    for suffix in ("Event-Id", "Webhook-Id"):
        if suffix in chosen and suffix not in hostile:
            # Hypothesis repeats its uuids: tie a well-formed id to the body it came with, so
            # most deliveries are new and reach the handlers (repeats still test dedupe).
            name, value = chosen[suffix]
            chosen[suffix] = (name, f"{value}-{hashlib.sha256(body).hexdigest()[:12]}")
    secret = data.draw(st.sampled_from([APP_SECRET, OLD_APP_SECRET]), label="secret")
    signature = (data.draw(spelled("Hmac-Sha256")), reference_sign(body, secret))
    headers = data.draw(st.permutations([*chosen.values(), signature]), label="sent")

    before = await counts(store)
    response = await post(http, served, body, headers)
    after = await counts(store)

    assert response.status_code in {200, 400, 413}, response.text[:500]
    answer = response.json()
    event(f"{response.status_code} {answer.get('status', '')}")  # --hypothesis-show-statistics
    if response.status_code != 200:
        assert "error" in answer
        assert after == before
        return
    assert "Topic" in chosen, "accepted without a topic"
    assert "Shop-Domain" in chosen, "accepted without a shop"
    shop = chosen["Shop-Domain"][1].strip().lower()
    dedupe_key = expected_dedupe_key(chosen, body)
    if answer.get("status") == "duplicate":
        # Only a delivery already in the inbox may be called a duplicate.
        assert after["webhook_events"] == before["webhook_events"]
        async with store.sessions() as session:
            earlier = await session.scalar(
                select(func.count())
                .select_from(WebhookEvent)
                .where(
                    WebhookEvent.shop_domain == shop,
                    WebhookEvent.topic == topic,
                    WebhookEvent.dedupe_key == dedupe_key,
                )
            )
        assert earlier == 1
        return
    assert after["webhook_events"] == before["webhook_events"] + 1
    async with store.sessions() as session:
        row = await session.get(WebhookEvent, answer["event"])
    assert row is not None
    assert row.status == answer["status"]
    assert row.status in {"processed", "ignored", "failed"}
    assert (row.topic, row.shop_domain, row.dedupe_key) == (topic, shop, dedupe_key)
    if row.payload is None:
        # Only a topic we do not handle is acknowledged with a body that is not a JSON object.
        assert topic not in HANDLED_TOPICS
        assert row.status == "ignored"
        assert "body not stored" in (row.error or "")
    else:
        assert isinstance(row.payload, dict)


# --- the failures the fuzzing above turned up, pinned as plain examples ---------------------


def signed(body: bytes, **extra: str) -> list[tuple[str, str]]:
    headers = {
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Shop-Domain": SHOP,
        "X-Shopify-Hmac-Sha256": reference_sign(body, APP_SECRET),
    } | extra
    return list(headers.items())


async def assert_answered_consistently(
    store: Backend, response: httpx.Response, before: dict[str, int]
) -> None:
    after = await counts(store)
    assert response.status_code in {200, 400}, (response.status_code, response.text[:300])
    if response.status_code == 400:
        assert after == before
    else:
        assert after["webhook_events"] == before["webhook_events"] + 1


@pytest.mark.parametrize("triggered_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
async def test_signed_delivery_with_out_of_range_triggered_at(store, served, http, triggered_at):
    """Valid ISO-8601 that datetime cannot hold once converted to UTC."""
    body = dumps(sample_payload("orders/create", SHOP))
    before = await counts(store)
    response = await post(
        http, served, body, signed(body, **{"X-Shopify-Triggered-At": triggered_at})
    )
    await assert_answered_consistently(store, response, before)


@pytest.mark.parametrize("brackets", [(b"[", b"]"), (b'{"a":', b"}")])
async def test_signed_deeply_nested_body(store, served, http, brackets):
    """600 levels: json.loads accepts it; the answer must still be a 200 or a 400."""
    body = nested(600, brackets)
    before = await counts(store)
    response = await post(http, served, body, signed(body))
    await assert_answered_consistently(store, response, before)


async def test_signed_delivery_with_an_overlong_topic(store, served, http):
    """A topic that matches the topic pattern but is longer than the column holds."""
    body = b'{"id": 1}'
    topic = "a" * 200 + "/b"
    before = await counts(store)
    response = await post(http, served, body, signed(body, **{"X-Shopify-Topic": topic}))
    await assert_answered_consistently(store, response, before)
