"""The store page in Debian's headless Chromium, in each state a user meets: an empty store,
a backfill running, a store of 20,000 orders spread over three years, and one whose orders
are all older than the chosen range. Screenshots go to tests/e2e/artifacts/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from models import SyncJob, User, utcnow
from receiver.auth import hash_password
from tests.conftest import ServedApp, settings_for
from tests.e2e.store_data import product_revenue, seed_sales
from tests.e2e.test_dashboard import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, PASSWORD
from tests.factories import SHOP, create_tenant

ADMIN = "owner@example.com"


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    # A desktop window, US English and UTC, so money and dates read the same on any machine.
    context = await browser.new_context(
        viewport={"width": 1200, "height": 900}, locale="en-US", timezone_id="UTC"
    )
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
async def errors(page: Page) -> list[str]:
    # Async: Playwright subscribes inside the running loop. A plain fixture worked only
    # where an earlier test had left a loop current (not in a fresh xdist worker).
    """Console errors (a CSP violation is one) and uncaught exceptions."""
    seen: list[str] = []
    page.on("console", lambda message: message.type == "error" and seen.append(message.text))
    page.on("pageerror", lambda error: seen.append(f"uncaught: {error}"))
    return seen


@pytest.fixture
def served(pg, served_apps: dict[str, ServedApp]) -> ServedApp:
    if "postgresql-e2e" not in served_apps:
        served_apps["postgresql-e2e"] = ServedApp(settings_for(pg.url)).__enter__()
    return served_apps["postgresql-e2e"]


async def sign_in(pg, page: Page, served: ServedApp) -> None:
    async with pg.sessions() as session, session.begin():
        session.add(User(email=ADMIN, password_hash=hash_password(PASSWORD), is_admin=True))
    await page.goto(f"{served.base_url}/login")
    await page.fill("input[name=email]", ADMIN)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{served.base_url}/")


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_an_empty_store_says_why_nothing_shows(pg, served, page: Page, errors: list[str]):
    await create_tenant(pg.sessions)
    await sign_in(pg, page, served)
    await page.goto(f"{served.base_url}/stores/{SHOP}")
    empty = page.locator("#chart-empty")
    await expect(empty).to_be_visible()
    await expect(empty).to_have_text(re.compile(r"^No orders yet"))
    await expect(page.locator("#charts canvas")).to_have_count(0)
    await expect(page.locator("#sales-rows")).to_have_text("No sales in this range.")
    # No token: no button that would only queue a failing job, and the line says what to do.
    await expect(page.locator("text=Run backfill")).to_have_count(0)
    await expect(page.locator("#no-token")).to_contain_text("--access-token")
    await screenshot(page, "store-empty.png")
    assert errors == []


async def test_a_running_backfill_shows_progress_rate_eta_and_the_wait(
    pg, served, page: Page, errors: list[str]
):
    tenant_id = await create_tenant(pg.sessions, access_token="shpat_e2e")
    started = utcnow() - timedelta(seconds=100)
    async with pg.sessions() as session, session.begin():
        session.add(
            SyncJob(
                tenant_id=tenant_id,
                mode="full",
                status="running",
                resources=["customers", "orders"],
                progress={
                    "customers": {"count": 500, "total": 500, "done": True},
                    "orders": {
                        "count": 4500,
                        "total": 20000,
                        "done": False,
                        "throttled_until": (utcnow() + timedelta(seconds=30)).isoformat(),
                    },
                },
                attempts=1,
                started_at=started,
                heartbeat_at=utcnow(),
            )
        )
    await sign_in(pg, page, served)
    await page.goto(f"{served.base_url}/stores/{SHOP}")
    row = page.locator("#sync-rows tr").first
    bar = row.locator("progress")
    # 5,000 of 20,500 records: 24.4 %, at about 50 records/s, 15,500 to go.
    await expect(bar).to_have_attribute("value", "24.4")
    figures = row.locator(".job-figures")
    await expect(figures).to_contain_text("24.4% · 5,000 / 20,500 records")
    # After the first live refresh (the script's rendering, not the server's).
    await expect(figures).to_contain_text(re.compile(r"ETA \d+ min"), timeout=10_000)
    await expect(row.locator(".job-wait")).to_contain_text("Waiting for Shopify's rate limit")
    await expect(page.locator("text=Run backfill")).to_have_count(1)
    await screenshot(page, "store-backfill-running.png")
    assert errors == []


async def test_twenty_thousand_orders_over_three_years(pg, served, page: Page, errors: list[str]):
    tenant_id = await create_tenant(pg.sessions, access_token="shpat_e2e")
    now = utcnow()
    await seed_sales(
        pg.sessions,
        tenant_id,
        orders=20_000,
        newest=now - timedelta(hours=1),
        span=timedelta(days=3 * 365),
    )
    await sign_in(pg, page, served)
    await page.goto(f"{served.base_url}/stores/{SHOP}")
    # The default range is 30 days: about 20,000 / 1,095 * 30 orders.
    await expect(page.locator(".ranges a[aria-current=page]")).to_have_text("Last 30 days")
    in_month = int((await page.locator("#range-orders").text_content() or "0").replace(",", ""))
    assert 500 < in_month < 600
    # One chart per currency, drawn by uPlot on canvas, with both axes labelled.
    await expect(page.locator("#charts .chart-figure")).to_have_count(2)
    await expect(page.locator("#charts canvas")).to_have_count(2)
    usd = page.locator(".chart-figure[data-currency=USD]")
    await expect(usd.locator(".u-axis")).to_have_count(3)
    # Money with the currency and separators, localised by the browser.
    await expect(page.locator("#sales-rows tr[data-currency=USD] td").nth(2)).to_have_text(
        re.compile(r"^\$\d{1,3}(,\d{3})+\.\d{2}$")
    )
    await expect(page.locator("#sales-rows tr[data-currency=EUR] td").nth(2)).to_have_text(
        re.compile(r"^€\d{1,3}(,\d{3})*\.\d{2}$")
    )

    # All time: every order counted, charted by month, refunds subtracted.
    await page.click(".ranges a[data-range=all]")
    await expect(page).to_have_url(re.compile(r"range=all$"))
    await expect(page.locator("#range-orders")).to_have_text("20,000")
    usd_row = page.locator("#sales-rows tr[data-currency=USD] td")
    await expect(usd_row.nth(1)).to_have_text("18,000")
    # Every 25th order was refunded 5.00: 800 refunds, of which those of index % 50 (400)
    # are the EUR orders, the other 400 USD.
    await expect(usd_row.nth(3)).to_have_text("$2,000.00")
    usd = page.locator(".chart-figure[data-currency=USD]")
    await expect(usd.locator("figcaption")).to_have_text("USD: orders and revenue per month")
    # Hovering a month shows its values in the legend.
    await usd.locator(".u-over").hover()  # scrolled into view, the pointer at its middle
    legend = usd.locator(".u-legend .u-series")
    await expect(legend.nth(0).locator(".u-value")).to_have_text(re.compile(r"^\d{4}-\d{2}$"))
    await expect(legend.nth(1).locator(".u-value")).to_have_text(
        re.compile(r"^\$\d{1,3}(,\d{3})*\.\d{2}$")
    )
    await expect(legend.nth(2).locator(".u-value")).to_have_text(re.compile(r"^\d{3}$"))
    # Top products by revenue, top variants by units, and the two products running low.
    await expect(page.locator("#top-products tr")).to_have_count(10)
    (currency, best), revenue = max(product_revenue(20_000).items(), key=lambda kv: kv[1])
    assert currency == "USD"  # nine orders in ten
    first = page.locator("#top-products tr").first.locator("td")
    await expect(first.nth(0)).to_have_text(f"Product {best}")
    await expect(first.nth(2)).to_have_text(f"${revenue:,.2f}")
    await expect(page.locator("#low-stock tr")).to_have_count(4)
    await expect(page.locator("#low-stock tr").first.locator("td").nth(3)).to_have_text("1")
    await screenshot(page, "store-20000-orders-all-time.png")

    # The live refresh keeps the range: after a poll the figures still are all time's.
    async with page.expect_response(lambda r: "/api/stats" in r.url) as polled:
        pass
    assert "range=all" in (await polled.value).url
    await expect(page.locator("#range-orders")).to_have_text("20,000")
    assert errors == []


async def test_orders_older_than_the_range_say_when_the_newest_is(
    pg, served, page: Page, errors: list[str]
):
    tenant_id = await create_tenant(pg.sessions)
    newest = utcnow() - timedelta(days=400)
    await seed_sales(pg.sessions, tenant_id, orders=50, newest=newest, span=timedelta(days=300))
    await sign_in(pg, page, served)
    await page.goto(f"{served.base_url}/stores/{SHOP}?range=90d")
    empty = page.locator("#chart-empty")
    await expect(empty).to_contain_text(
        f"No orders in this range (last 90 days). The store's newest order is from "
        f"{newest.date().isoformat()}"
    )
    await expect(page.locator("#range-orders")).to_have_text("0")
    await screenshot(page, "store-orders-older-than-range.png")
    await empty.locator("a").click()
    await expect(page.locator("#range-orders")).to_have_text("50")
    await expect(page.locator("#chart-empty")).to_be_hidden()
    assert errors == []
