"""The dashboard in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from models import User, UserTenant
from receiver.auth import hash_password
from receiver.samples import sample_payload
from tests.conftest import ServedApp
from tests.factories import SHOP, create_tenant, delivery

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
PASSWORD = "a long enough password"
# The flags a headless browser needs in this sandbox: no GPU, no setuid sandbox as root, and
# no background calls to Google's services, which the closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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
    context = await browser.new_context(viewport={"width": 420, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


@pytest.fixture
async def console_errors(page: Page) -> list[str]:
    # Async: Playwright subscribes inside the running loop. A plain fixture worked only
    # where an earlier test had left a loop current (not in a fresh xdist worker).
    """Every console error and uncaught exception on the page, as text."""
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def csp_violations(errors: list[str]) -> list[str]:
    return [text for text in errors if "Content Security Policy" in text]


async def _viewer(pg, tenant_id: int) -> None:
    async with pg.sessions() as session, session.begin():
        user = User(email="viewer@example.com", password_hash=hash_password(PASSWORD))
        session.add(user)
        await session.flush()
        session.add(UserTenant(user_id=user.id, tenant_id=tenant_id))


async def test_sign_in_watch_an_order_arrive_and_sign_out(
    pg, served_apps, page: Page, console_errors: list[str]
):
    from tests.conftest import settings_for

    if "postgresql-e2e" not in served_apps:
        served_apps["postgresql-e2e"] = ServedApp(settings_for(pg.url)).__enter__()
    served = served_apps["postgresql-e2e"]
    tenant_id = await create_tenant(pg.sessions)
    await _viewer(pg, tenant_id)
    async with httpx.AsyncClient(timeout=10) as http:
        body, headers = delivery("orders/create")
        assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success

    first = await page.goto(f"{served.base_url}/stores/{SHOP}")
    await expect(page).to_have_url(f"{served.base_url}/login")
    assert first is not None
    assert "script-src 'self'" in (await first.all_headers())["content-security-policy"]
    await page.fill("input[name=email]", "viewer@example.com")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{served.base_url}/")
    await page.click(f"a[href='/stores/{SHOP}']")
    orders = page.locator("#count-orders")
    await expect(orders).to_have_text("1")

    # A new order arrives by webhook while the page is open: the count changes by itself.
    second = sample_payload("orders/create") | {"id": 1234567890123, "name": "#2002"}
    async with httpx.AsyncClient(timeout=10) as http:
        body, headers = delivery("orders/create", json.loads(json.dumps(second)))
        assert (await http.post(served.webhook_url, content=body, headers=headers)).is_success
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    await expect(orders).to_have_text("2", timeout=15_000)
    assert navigations == []  # updated in place, not by a reload
    # Delivery health follows too: the topic's row counts both deliveries.
    health_row = page.locator("#health-rows tr", has=page.locator("td", has_text="orders/create"))
    await expect(health_row.locator("td").nth(3)).to_have_text("2")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "store-page.png"), full_page=True)
    # The stylesheet applied (no inline style needed), and the page ran under its policy
    # without a single violation or script error.
    assert await orders.evaluate("el => getComputedStyle(el).fontWeight") == "700"
    assert console_errors == []

    # The policy is really enforced, and a violation would have been seen above: a script
    # injected inline is refused and reported.
    async with page.expect_console_message(
        lambda message: "Content Security Policy" in message.text
    ) as refused:
        await page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.textContent = "window.injected = true";
                document.body.appendChild(script);
            }"""
        )
    assert "inline script" in (await refused.value).text
    assert await page.evaluate("() => window.injected === undefined")
    assert len(csp_violations(console_errors)) == 1
    console_errors.clear()

    await page.click("form.logout button")
    await expect(page).to_have_url(f"{served.base_url}/login")
    await page.goto(f"{served.base_url}/stores/{SHOP}")
    await expect(page).to_have_url(f"{served.base_url}/login")
    assert console_errors == []
