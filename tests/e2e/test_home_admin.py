"""The home page and the administration page in a real headless Chromium (Debian's): an
admin's first visit (no store yet), adding a store, a user and a token from the forms, a bad
input, and a viewer's home page with alerts; screenshots of each state in artifacts/."""

from __future__ import annotations

from datetime import timedelta

import httpx
from playwright.async_api import Browser, Page, expect

from models import SyncJob, User, UserTenant, utcnow
from receiver.auth import hash_password
from tests.conftest import ServedApp, settings_for
from tests.e2e.test_dashboard import ARTIFACTS, PASSWORD, browser, console_errors, page
from tests.factories import OTHER_SHOP, SHOP, create_tenant
from tests.integration.test_delivery_health import subscribe
from tests.integration.test_pages import add_event, add_order

__all__ = ["browser", "console_errors", "page"]  # fixtures, imported for their use here

ADMIN = "admin@example.com"
VIEWER = "viewer@example.com"
NEW_SHOP = "fresh-store.myshopify.com"
DESKTOP = {"width": 1280, "height": 900}


def served_on(pg, served_apps) -> ServedApp:
    if "postgresql-e2e" not in served_apps:
        served_apps["postgresql-e2e"] = ServedApp(settings_for(pg.url)).__enter__()
    return served_apps["postgresql-e2e"]


async def add_user(pg, email: str, *, admin: bool = False, tenants: tuple[int, ...] = ()) -> None:
    async with pg.sessions() as session, session.begin():
        user = User(email=email, password_hash=hash_password(PASSWORD), is_admin=admin)
        session.add(user)
        await session.flush()
        session.add_all(UserTenant(user_id=user.id, tenant_id=tid) for tid in tenants)


async def sign_in(page: Page, served: ServedApp, email: str) -> None:
    await page.goto(f"{served.base_url}/login")
    await page.fill("input[name=email]", email)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{served.base_url}/")


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_admin_starts_empty_then_adds_a_store_a_user_and_a_token(
    pg, served_apps, page: Page, console_errors: list[str]
):
    served = served_on(pg, served_apps)
    await add_user(pg, ADMIN, admin=True)
    await sign_in(page, served, ADMIN)

    empty = page.locator("#no-stores")
    await expect(empty).to_contain_text("No stores yet")
    await expect(empty).to_contain_text("tenants add --shop")
    await shot(page, "home-no-store-admin.png")

    await empty.get_by_role("link", name="administration page").click()
    await expect(page).to_have_url(f"{served.base_url}/admin#add-store")
    store_form = page.locator("#add-store form")

    # A mistyped domain: the form says so, keeps what was typed, and nothing is added.
    await store_form.locator("input[name=shop]").fill("fresh store")
    await store_form.get_by_role("button", name="Add store").click()
    await expect(page.locator("#store-error")).to_contain_text("NAME.myshopify.com")
    await expect(store_form.locator("input[name=shop]")).to_have_value("fresh store")
    await shot(page, "admin-store-error.png")
    # The browser reports the form's 400 itself; nothing else went wrong.
    assert [error for error in console_errors if "400 (Bad Request)" not in error] == []
    console_errors.clear()

    await store_form.locator("input[name=shop]").fill(NEW_SHOP)
    await store_form.locator("input[name=access_token]").fill("shpat_typed_in_the_form")
    await store_form.get_by_role("button", name="Add store").click()
    await expect(page.locator("#admin-notice")).to_have_text(f"Added store {NEW_SHOP}.")

    user_form = page.locator("#add-user form")
    await user_form.locator("input[name=email]").fill(VIEWER)
    await user_form.locator("input[name=password]").fill("another long password")
    await user_form.get_by_label(NEW_SHOP).check()
    await user_form.get_by_role("button", name="Add user").click()
    await expect(page.locator("#admin-notice")).to_contain_text(f"Added {VIEWER} (viewer of 1")
    viewer_row = page.locator(f"#user-rows tr[data-email='{VIEWER}']")
    await expect(viewer_row).to_contain_text(NEW_SHOP)

    token_form = page.locator("#create-token form")
    await token_form.locator("input[name=name]").fill("nightly-report")
    await token_form.get_by_label("Read-only").check()
    await token_form.get_by_role("button", name="Create token").click()
    token = await page.locator("#token-value").inner_text()
    assert token.startswith("srk_")
    await expect(page.locator("#token-rows")).to_contain_text("nightly-report")
    await shot(page, "admin-token-created.png")
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as script:
        stats = await script.get(
            "/api/stats", params={"shop": NEW_SHOP}, headers={"Authorization": f"Bearer {token}"}
        )
        assert stats.status_code == 200
    # Shown once: the page, visited again, does not have it any more.
    await page.goto(f"{served.base_url}/admin")
    await expect(page.locator("#token-value")).to_have_count(0)
    assert token not in await page.content()

    await page.get_by_role("link", name="Back to stores").click()
    card = page.locator(f".store-card[data-shop='{NEW_SHOP}']")
    await expect(card.locator("[data-alert=none]")).to_have_text("No alerts.")
    await expect(card.locator("[data-figure=sync]")).to_contain_text("never backfilled")
    await shot(page, "home-new-store.png")
    assert console_errors == []


async def test_viewer_home_with_and_without_alerts(
    pg, served_apps, browser: Browser, console_errors: list[str]
):
    served = served_on(pg, served_apps)
    now = utcnow()
    healthy = await create_tenant(pg.sessions, SHOP, access_token="shpat_ok")
    troubled = await create_tenant(pg.sessions, OTHER_SHOP)
    # Both today (UTC, as the home page counts): five minutes ago, unless that was yesterday.
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = max(now - timedelta(minutes=5), today)
    await add_order(pg, healthy, 1, total="5240764.97", processed_at=earlier)
    await add_order(pg, healthy, 2, total="1200.00", currency="EUR", processed_at=now)
    await add_event(pg, healthy, "ok-1", received_at=now - timedelta(minutes=3))
    await add_event(pg, troubled, "dead-1", status="dead", shop=OTHER_SHOP, error="boom")
    await subscribe(pg, troubled, "products/update")
    for hour in range(72, 120):
        await add_event(
            pg,
            troubled,
            f"pu-{hour}",
            topic="products/update",
            shop=OTHER_SHOP,
            received_at=now - timedelta(hours=hour),
        )
    async with pg.sessions() as session, session.begin():
        session.add(
            SyncJob(
                tenant_id=healthy,
                mode="bulk",
                status="running",
                resources=["orders"],
                progress={"orders": {"count": 20000}},
                attempts=1,
                started_at=now - timedelta(minutes=2),
            )
        )
    await add_user(pg, VIEWER, tenants=(healthy, troubled))

    for name, viewport in (("phone", None), ("desktop", DESKTOP)):
        context = await browser.new_context(viewport=viewport or {"width": 420, "height": 900})
        page = await context.new_page()
        page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
        await sign_in(page, served, VIEWER)
        good = page.locator(f".store-card[data-shop='{SHOP}']")
        await expect(good.locator("[data-figure=revenue-today] .amount")).to_have_text(
            ["EUR 1,200.00", "USD 5,240,764.97"]
        )
        await expect(good.locator("[data-figure=sync]")).to_contain_text("running bulk")
        await expect(good.locator("[data-figure=sync]")).to_contain_text("20,000 records")
        await expect(good.locator("[data-figure=sync]")).to_contain_text("started ")
        await expect(good.locator("[data-alert=none]")).to_be_visible()
        bad = page.locator(f".store-card[data-shop='{OTHER_SHOP}']")
        await expect(bad.locator("[data-alert=no_token]")).to_contain_text("No Admin API")
        await expect(bad.locator("[data-alert=dead_events]")).to_contain_text("1 dead event")
        await expect(bad.locator("[data-alert=silent_topics]")).to_contain_text("products/update")
        # Alerts are drawn as alerts: the stylesheet applied.
        color = await bad.locator(".alert").first.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        assert color == "rgb(253, 232, 230)"
        # A viewer has no way into administration.
        await expect(page.locator("#admin-link")).to_have_count(0)
        await shot(page, f"home-alerts-{name}.png")
        assert console_errors == []
        refused = await page.goto(f"{served.base_url}/admin")
        assert refused is not None
        assert refused.status == 403
        await expect(page.locator("main")).to_contain_text("needs an admin")
        await context.close()
        # The browser reports the 403 itself; nothing else went wrong.
        assert [error for error in console_errors if "403 (Forbidden)" not in error] == []
        console_errors.clear()
