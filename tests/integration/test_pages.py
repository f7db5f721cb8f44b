"""The dashboard pages and /api/stats over real HTTP: sign-in gates, per-store visibility,
exact numbers, replay and backfill buttons, escaping."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models import Customer, Order, Product, SyncJob, User, UserTenant, WebhookEvent, utcnow
from receiver.auth import hash_password
from receiver.samples import sample_payload
from tests.factories import OTHER_SHOP, SHOP, create_tenant

PASSWORD = "correct horse battery staple"
ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET_ORDER = "#OTHER-STORE-9001"
SECRET_TOTAL = "777.77"

SignIn = Callable[[str], Awaitable[httpx.AsyncClient]]


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


async def create_user(backend, email: str, *, admin: bool = False, tenants: tuple[int, ...] = ()):
    async with backend.sessions() as session, session.begin():
        user = User(email=email, password_hash=password_hash(), is_admin=admin)
        session.add(user)
        await session.flush()
        for tenant_id in tenants:
            session.add(UserTenant(user_id=user.id, tenant_id=tenant_id))


@pytest.fixture
async def sign_in(served) -> AsyncIterator[SignIn]:
    """A cookie-keeping client per user, signed in through the real login form."""
    clients: list[httpx.AsyncClient] = []

    async def open_as(email: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=served.base_url, follow_redirects=False, timeout=10)
        clients.append(client)
        page = await client.get("/login")
        match = CSRF.search(page.text)
        assert match, page.text
        response = await client.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf_token": match.group(1)}
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        return client

    yield open_as
    for client in clients:
        await client.aclose()


async def csrf_of(client: httpx.AsyncClient) -> str:
    page = await client.get("/")
    match = CSRF.search(page.text)
    assert match
    return match.group(1)


async def add_order(
    backend,
    tenant_id: int,
    shopify_id: int,
    *,
    total: str,
    currency: str = "USD",
    name: str | None = None,
    processed_at: datetime | None = None,
    created_at: datetime | None = None,
    cancelled: bool = False,
    deleted: bool = False,
) -> None:
    async with backend.sessions() as session, session.begin():
        session.add(
            Order(
                tenant_id=tenant_id,
                shopify_id=shopify_id,
                name=name or f"#{shopify_id}",
                currency=currency,
                total_price=Decimal(total),
                financial_status="paid",
                processed_at=processed_at,
                shopify_created_at=created_at,
                cancelled_at=utcnow() if cancelled else None,
                deleted_at=utcnow() if deleted else None,
            )
        )


async def add_event(
    backend,
    tenant_id: int | None,
    key: str,
    *,
    topic: str = "orders/create",
    status: str = "processed",
    shop: str = SHOP,
    received_at: datetime | None = None,
    triggered_at: datetime | None = None,
    error: str | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    async with backend.sessions() as session, session.begin():
        event = WebhookEvent(
            tenant_id=tenant_id,
            shop_domain=shop,
            topic=topic,
            dedupe_key=key,
            status=status,
            received_at=received_at or utcnow(),
            triggered_at=triggered_at,
            error=error,
            attempts=1,
            payload=payload if payload is not None else {},
        )
        session.add(event)
        await session.flush()
        return event.id


async def two_stores(backend) -> tuple[int, int]:
    """Our store and another one holding data a viewer of ours must never see."""
    ours = await create_tenant(backend.sessions, SHOP)
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    await add_order(
        backend,
        theirs,
        9001,
        total=SECRET_TOTAL,
        currency="GBP",
        name=SECRET_ORDER,
        processed_at=utcnow() - timedelta(hours=2),
    )
    await add_event(backend, theirs, "theirs-1", shop=OTHER_SHOP, status="failed", error="theirs")
    return ours, theirs


# -- sign-in gates -----------------------------------------------------------------------


async def test_pages_without_a_session_redirect_to_login(backend, served, http):
    await create_tenant(backend.sessions)
    for path in ("/", "/stores/x", f"/stores/{SHOP}"):
        response = await http.get(f"{served.base_url}{path}", follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login"
    stats = await http.get(f"{served.base_url}/api/stats", params={"shop": SHOP})
    assert stats.status_code == 401
    assert stats.json()["error"]
    for path in (f"/stores/{SHOP}/sync", f"/stores/{SHOP}/events/1/replay"):
        response = await http.post(f"{served.base_url}{path}", follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login"
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(SyncJob)) == 0


# -- who sees what -----------------------------------------------------------------------


async def test_admin_sees_every_store_on_home(backend, sign_in):
    await two_stores(backend)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert f'href="/stores/{SHOP}"' in page.text
    assert f'href="/stores/{OTHER_SHOP}"' in page.text
    assert ADMIN in page.text  # the sign-out form shows who is signed in
    assert 'action="/logout"' in page.text


async def test_viewer_sees_only_their_stores(backend, sign_in):
    ours, _ = await two_stores(backend)
    await add_order(backend, ours, 1, total="5.00", processed_at=utcnow())
    await create_user(backend, VIEWER, tenants=(ours,))
    client = await sign_in(VIEWER)
    page = await client.get("/")
    assert page.status_code == 200
    assert SHOP in page.text
    assert OTHER_SHOP not in page.text
    own = await client.get(f"/stores/{SHOP}")
    assert own.status_code == 200
    assert SECRET_ORDER not in own.text
    stats = await client.get("/api/stats", params={"shop": SHOP})
    assert stats.status_code == 200
    assert stats.json()["counts"]["orders"] == 1
    assert [row["currency"] for row in stats.json()["sales"]["by_currency"]] == ["USD"]


async def test_viewer_gets_nothing_of_another_store(backend, sign_in):
    ours, _ = await two_stores(backend)
    await create_user(backend, VIEWER, tenants=(ours,))
    client = await sign_in(VIEWER)
    page = await client.get(f"/stores/{OTHER_SHOP}")
    assert page.status_code == 404
    unknown = await client.get("/stores/nobody-here.myshopify.com")
    assert unknown.status_code == 404
    # Not-yours and does-not-exist look the same, so a viewer cannot map the installed stores.
    assert page.text.replace(OTHER_SHOP, "") == unknown.text.replace(
        "nobody-here.myshopify.com", ""
    )
    stats = await client.get("/api/stats", params={"shop": OTHER_SHOP})
    no_stats = await client.get("/api/stats", params={"shop": "nobody-here.myshopify.com"})
    assert stats.status_code == no_stats.status_code == 404
    assert stats.json() == {"error": f"no store {OTHER_SHOP}"}
    assert no_stats.json() == {"error": "no store nobody-here.myshopify.com"}
    for response in (page, stats):
        assert SECRET_ORDER not in response.text
        assert SECRET_TOTAL not in response.text
        assert "theirs" not in response.text
    assert "GBP" not in stats.text


async def test_unknown_or_malformed_shop(backend, sign_in):
    await create_tenant(backend.sessions)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    for path in ("/stores/unknown.myshopify.com", "/stores/not%20a%20shop", "/stores/x"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "No such store" in response.text
    unknown = await client.get("/api/stats", params={"shop": "unknown.myshopify.com"})
    assert unknown.status_code == 404
    assert "no store" in unknown.json()["error"]
    for params in ({}, {"shop": ""}, {"shop": "not a shop"}):
        bad = await client.get("/api/stats", params=params)
        assert bad.status_code == 400, params
        assert bad.json()["error"]


# -- the numbers -------------------------------------------------------------------------


async def test_stats_match_what_is_stored(backend, sign_in):
    ours, _ = await two_stores(backend)
    now = utcnow()
    async with backend.sessions() as session, session.begin():
        session.add_all(
            [
                Customer(tenant_id=ours, shopify_id=1, email="a@example.com"),
                Customer(tenant_id=ours, shopify_id=2, email="b@example.com"),
                Customer(tenant_id=ours, shopify_id=3, deleted_at=now),
                Product(tenant_id=ours, shopify_id=1, title="Tee"),
                Product(tenant_id=ours, shopify_id=2, title="Gone", deleted_at=now),
            ]
        )
    order_times = {
        1: now - timedelta(hours=1),
        2: now - timedelta(days=2),  # processed_at missing: falls back to created_at
        3: now - timedelta(days=10),
        4: now - timedelta(days=45),
        5: now - timedelta(days=5),
        6: now - timedelta(days=20),
        7: now - timedelta(days=1),  # cancelled
    }
    await add_order(backend, ours, 1, total="100.00", processed_at=order_times[1])
    await add_order(backend, ours, 2, total="50.50", created_at=order_times[2])
    await add_order(backend, ours, 3, total="20.25", processed_at=order_times[3])
    await add_order(backend, ours, 4, total="1000.00", processed_at=order_times[4])
    await add_order(backend, ours, 5, total="10.10", currency="EUR", processed_at=order_times[5])
    await add_order(backend, ours, 6, total="7.00", currency="EUR", processed_at=order_times[6])
    await add_order(backend, ours, 7, total="999.99", processed_at=order_times[7], cancelled=True)
    await add_order(backend, ours, 8, total="555.55", processed_at=now, deleted=True)

    # Ten events with trigger-to-receipt lags of 100 ms .. 1000 ms, one without a trigger time,
    # one older than a day (outside every 24 h number), and one of another store's.
    for index in range(10):
        received = now - timedelta(minutes=index + 1)
        topic, status = [
            ("orders/create", "processed"),
            ("products/update", "ignored"),
            ("orders/updated", "failed"),
        ][0 if index < 6 else 1 if index < 9 else 2]
        await add_event(
            backend,
            ours,
            f"lag-{index}",
            topic=topic,
            status=status,
            received_at=received,
            triggered_at=received - timedelta(milliseconds=100 * (index + 1)),
            error="KeyError: 'line_items'" if status == "failed" else None,
        )
    await add_event(backend, ours, "no-trigger", received_at=now - timedelta(minutes=30))
    old_failure = await add_event(
        backend,
        ours,
        "old",
        status="failed",
        error="old failure",
        received_at=now - timedelta(days=2),
        triggered_at=now - timedelta(days=2, seconds=99),
    )
    await create_user(backend, VIEWER, tenants=(ours,))
    client = await sign_in(VIEWER)

    response = await client.get("/api/stats", params={"shop": SHOP.upper()})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    stats = response.json()
    assert stats["shop"] == SHOP
    assert stats["counts"] == {"customers": 2, "products": 1, "orders": 7, "locations": 0}
    # The default range, the last 30 UTC days: cancelled orders count as placed, not as sold.
    assert stats["sales"]["by_currency"] == [
        {"currency": "EUR", "orders": 2, "gross": "17.10", "refunds": "0.00", "net": "17.10"},
        {"currency": "USD", "orders": 4, "gross": "170.75", "refunds": "0.00", "net": "170.75"},
    ]

    generated = datetime.fromisoformat(stats["generated_at"])
    today = generated.astimezone(UTC).date()
    expected_days = [(today - timedelta(days=29 - offset)).isoformat() for offset in range(30)]
    per_day: dict[str, int] = {}
    for shopify_id, moment in order_times.items():
        if shopify_id != 4:
            day = moment.date().isoformat()
            per_day[day] = per_day.get(day, 0) + 1
    assert stats["sales"]["buckets"] == expected_days
    series = [currency["orders"] for currency in stats["sales"]["series"]]
    charted = [sum(counts) for counts in zip(*series, strict=True)]
    assert charted == [per_day.get(day, 0) for day in expected_days]
    assert sum(charted) == 6

    assert stats["webhooks_24h"] == {
        "total": 11,
        "by_status": {"failed": 1, "ignored": 3, "processed": 7},
        "by_topic": [
            {"topic": "orders/create", "total": 7, "by_status": {"processed": 7}},
            {"topic": "orders/updated", "total": 1, "by_status": {"failed": 1}},
            {"topic": "products/update", "total": 3, "by_status": {"ignored": 3}},
        ],
    }
    assert stats["lag_ms"] == {"samples": 10, "p50": 500, "p95": 1000}
    assert [(e["topic"], e["error"]) for e in stats["failed_events"]] == [
        ("orders/updated", "KeyError: 'line_items'"),
        ("orders/create", "old failure"),
    ]
    assert stats["failed_events"][1]["id"] == old_failure
    assert [order["name"] for order in stats["recent_orders"]][:2] == ["#1", "#7"]
    assert stats["sync_jobs"] == []
    assert "GBP" not in response.text
    assert SECRET_ORDER not in response.text

    page = await client.get(f"/stores/{SHOP}")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    html = page.text
    assert re.search(r'id="count-orders" data-stat="counts.orders">7<', html)
    assert re.search(r'id="count-customers" data-stat="counts.customers">2<', html)
    assert re.search(r'id="lag-p50" data-stat="lag_ms.p50">500<', html)
    assert re.search(r'id="lag-p95" data-stat="lag_ms.p95">1000<', html)
    # The default range (30 days): gross per currency with separators and the currency.
    assert ">170.75 USD<" in html
    assert ">17.10 EUR<" in html
    assert "data-stats='{" in html
    for window, amounts in {"7d": ("150.50 USD", "10.10 EUR"), "all": ("1,170.75 USD",)}.items():
        ranged = (await client.get(f"/stores/{SHOP}", params={"range": window})).text
        for amount in amounts:
            assert f">{amount}<" in ranged, (window, amount)
    assert "KeyError: &#39;line_items&#39;" in html
    # Viewers get no admin buttons.
    assert "Replay</button>" not in html
    assert "Run backfill" not in html
    assert SECRET_ORDER not in html


async def test_revenue_is_summed_exactly(backend, sign_in):
    """0.10 + 0.20 is 0.30000000000000004 in floating point; money must never go through one."""
    ours = await create_tenant(backend.sessions)
    for shopify_id, total in enumerate(["0.10", "0.20", "0.0005", "123456789.99"], start=1):
        await add_order(
            backend, ours, shopify_id, total=total, currency="CAD", processed_at=utcnow()
        )
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    stats = (await client.get("/api/stats", params={"shop": SHOP})).json()
    assert stats["sales"]["by_currency"] == [
        {
            "currency": "CAD",
            "orders": 4,
            "gross": "123456790.2905",
            "refunds": "0.00",
            "net": "123456790.2905",
        }
    ]


async def test_store_page_has_no_inline_script_and_serves_its_js(backend, sign_in):
    await create_tenant(backend.sessions)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    html = (await client.get(f"/stores/{SHOP}")).text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts, "the store page loads dashboard.js"
    for attributes, body in scripts:
        assert 'src="' in attributes
        assert " defer" in attributes
        assert body.strip() == ""
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers either
    assert f'data-shop="{SHOP}"' in html
    src = re.search(r'<script src="([^"]+dashboard\.js)"', html)
    assert src
    script = await client.get(src.group(1))
    assert script.status_code == 200
    assert "/api/stats?shop=" in script.text


async def test_store_page_escapes_stored_text(backend, sign_in):
    ours = await create_tenant(backend.sessions)
    attack = "<script>alert(1)</script>"
    await add_order(backend, ours, 1, total="1.00", name=attack, processed_at=utcnow())
    await add_event(backend, ours, "xss", status="failed", error='<img src=x onerror="alert(2)">')
    async with backend.sessions() as session, session.begin():
        session.add(Product(tenant_id=ours, shopify_id=1, title=attack))
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    html = (await client.get(f"/stores/{SHOP}")).text
    assert attack not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in html


# -- replay ------------------------------------------------------------------------------


async def failed_order_event(backend, tenant_id: int, key: str = "failed-1") -> int:
    return await add_event(
        backend,
        tenant_id,
        key,
        topic="orders/create",
        status="failed",
        error="OperationalError: the database hiccupped",
        payload=sample_payload("orders/create", SHOP),
    )


async def event_status(backend, event_id: int) -> str:
    async with backend.sessions() as session:
        return (await session.get_one(WebhookEvent, event_id)).status


async def test_admin_replays_a_failed_event(backend, sign_in):
    ours = await create_tenant(backend.sessions)
    event_id = await failed_order_event(backend, ours)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    page = await client.get(f"/stores/{SHOP}")
    assert f'action="/stores/{SHOP}/events/{event_id}/replay"' in page.text
    response = await client.post(
        f"/stores/{SHOP}/events/{event_id}/replay", data={"csrf_token": await csrf_of(client)}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/stores/{SHOP}?replay=processed"
    assert await event_status(backend, event_id) == "processed"
    order_id = sample_payload("orders/create")["id"]
    async with backend.sessions() as session:
        order = await session.scalar(
            select(Order).where(Order.tenant_id == ours, Order.shopify_id == order_id)
        )
    assert order is not None
    after = await client.get(response.headers["location"])
    assert "Event replayed: processed." in after.text
    assert f"/events/{event_id}/replay" not in after.text


async def test_replay_needs_an_admin_a_form_token_and_the_right_store(backend, sign_in):
    ours, theirs = await two_stores(backend)
    event_id = await failed_order_event(backend, ours)
    their_event = await failed_order_event(backend, theirs, "failed-theirs")
    await create_user(backend, ADMIN, admin=True)
    await create_user(backend, VIEWER, tenants=(ours,))
    viewer = await sign_in(VIEWER)
    admin = await sign_in(ADMIN)
    url = f"/stores/{SHOP}/events/{event_id}/replay"

    refused = await viewer.post(url, data={"csrf_token": await csrf_of(viewer)})
    assert refused.status_code == 403
    assert (await admin.post(url)).status_code == 403
    assert (await admin.post(url, data={"csrf_token": "forged"})).status_code == 403
    token = await csrf_of(admin)
    assert (await viewer.post(url, data={"csrf_token": token})).status_code == 403
    # An event of another store cannot be replayed through this store's URL.
    wrong_store = await admin.post(
        f"/stores/{SHOP}/events/{their_event}/replay", data={"csrf_token": token}
    )
    assert wrong_store.status_code == 404
    for missing_id in ("99999", "99999999999999999999"):
        missing = await admin.post(
            f"/stores/{SHOP}/events/{missing_id}/replay", data={"csrf_token": token}
        )
        assert missing.status_code == 404, missing_id
    assert await event_status(backend, event_id) == "failed"
    assert await event_status(backend, their_event) == "failed"
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Order)) == 1  # theirs


# -- backfill ----------------------------------------------------------------------------


async def sync_jobs(backend) -> list[SyncJob]:
    async with backend.sessions() as session:
        return list(await session.scalars(select(SyncJob).order_by(SyncJob.id)))


async def test_run_backfill_is_offered_only_for_a_store_with_a_token(backend, sign_in):
    await create_tenant(backend.sessions, access_token="shpat_test")
    await create_tenant(backend.sessions, OTHER_SHOP)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    with_token = (await client.get(f"/stores/{SHOP}")).text
    assert "Run backfill" in with_token
    assert 'id="no-token"' not in with_token
    without = (await client.get(f"/stores/{OTHER_SHOP}")).text
    assert "Run backfill" not in without
    assert f"tenants add --shop {OTHER_SHOP} --access-token TOKEN" in without


async def test_admin_runs_a_backfill(backend, sign_in):
    ours = await create_tenant(backend.sessions)
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    response = await client.post(
        f"/stores/{SHOP}/sync",
        data={"csrf_token": await csrf_of(client), "mode": "full", "resources": "orders"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/stores/{SHOP}?sync=started"
    jobs = await sync_jobs(backend)
    assert len(jobs) == 1
    assert (jobs[0].tenant_id, jobs[0].mode, jobs[0].resources) == (ours, "full", ["orders"])
    # On PostgreSQL it waits for a worker; on SQLite the in-process runner may already have
    # tried it and failed for want of an access token.
    assert jobs[0].status in {"queued", "running", "failed"}
    stats = await client.get("/api/stats", params={"shop": SHOP})
    assert [job["job_id"] for job in stats.json()["sync_jobs"]] == [jobs[0].id]


async def test_backfill_already_running_is_a_notice(backend, sign_in):
    ours = await create_tenant(backend.sessions)
    async with backend.sessions() as session, session.begin():
        session.add(
            SyncJob(
                tenant_id=ours,
                mode="full",
                status="running",
                resources=["orders"],
                progress={"orders": {"count": 42, "cursor": "abc", "done": False}},
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
        )
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    response = await client.post(f"/stores/{SHOP}/sync", data={"csrf_token": await csrf_of(client)})
    assert response.status_code == 303
    assert response.headers["location"] == f"/stores/{SHOP}?sync=running"
    assert [job.status for job in await sync_jobs(backend)] == ["running"]
    page = await client.get(response.headers["location"])
    assert "already queued or running" in page.text
    assert "orders 42" in page.text


async def test_backfill_needs_an_admin_and_a_form_token(backend, sign_in):
    ours = await create_tenant(backend.sessions)
    await create_user(backend, ADMIN, admin=True)
    await create_user(backend, VIEWER, tenants=(ours,))
    viewer = await sign_in(VIEWER)
    admin = await sign_in(ADMIN)
    url = f"/stores/{SHOP}/sync"
    assert (await viewer.post(url, data={"csrf_token": await csrf_of(viewer)})).status_code == 403
    assert (await admin.post(url, data={"mode": "full"})).status_code == 403
    assert (await admin.post(url, data={"csrf_token": "forged"})).status_code == 403
    bad_mode = await admin.post(url, data={"csrf_token": await csrf_of(admin), "mode": "sideways"})
    assert bad_mode.status_code == 400
    assert await sync_jobs(backend) == []
