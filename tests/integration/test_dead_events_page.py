"""Dead events and failed ones waiting for retry, on the store page, in /api/stats and as a
flag on the home page (test_pages style: the served app, a real sign-in)."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import update

from models import WebhookEvent, utcnow
from tests.factories import OTHER_SHOP, SHOP, create_tenant
from tests.integration.test_pages import ADMIN, add_event, create_user, sign_in

__all__ = ["sign_in"]  # the fixture, used by name


async def test_the_store_page_counts_dead_events_and_the_next_retry(backend, sign_in):
    ours = await create_tenant(backend.sessions, SHOP)
    await create_tenant(backend.sessions, OTHER_SHOP)
    soon = utcnow() + timedelta(minutes=4)
    waiting = [await add_event(backend, ours, f"failed-{n}", status="failed") for n in (1, 2)]
    dead = [await add_event(backend, ours, f"dead-{n}", status="dead") for n in (1, 2, 3)]
    async with backend.sessions() as session, session.begin():
        for event_id, offset in zip(waiting, (timedelta(0), timedelta(hours=1)), strict=True):
            await session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(next_attempt_at=soon + offset)
            )
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)

    stats = (await client.get("/api/stats", params={"shop": SHOP})).json()
    assert stats["retries"]["waiting"] == 2
    assert stats["retries"]["dead"] == 3
    assert stats["retries"]["next_attempt_at"][:16] == soon.isoformat()[:16]
    listed = {event["id"]: event for event in stats["failed_events"]}
    assert set(listed) == {*waiting, *dead}
    assert {listed[event_id]["status"] for event_id in dead} == {"dead"}
    assert all(listed[event_id]["next_attempt_at"] is None for event_id in dead)
    assert listed[waiting[0]]["next_attempt_at"][:16] == soon.isoformat()[:16]

    html = (await client.get(f"/stores/{SHOP}")).text
    assert re.search(r'data-stat="retries.dead" data-empty="0">3<', html)
    assert re.search(r'data-stat="retries.waiting" data-empty="0">2<', html)
    assert f">{soon.isoformat()[:16].replace('T', ' ')}<" in html
    assert 'id="dead-notice"' in html
    for event_id in dead:  # replayable by hand
        assert f'action="/stores/{SHOP}/events/{event_id}/replay"' in html

    home = (await client.get("/")).text
    cards = {
        match.group(1): match.group(2)
        for match in re.finditer(r'data-shop="([^"]+)">(.*?)</a>', home, re.S)
    }
    assert set(cards) == {SHOP, OTHER_SHOP}
    assert 'data-dead-events="3"' in cards[SHOP]
    assert "3 dead events" in cards[SHOP]
    assert "data-dead-events" not in cards[OTHER_SHOP]


async def test_a_store_without_dead_events_is_not_flagged(backend, sign_in):
    ours = await create_tenant(backend.sessions, SHOP)
    await add_event(backend, ours, "failed-1", status="failed")
    await create_user(backend, ADMIN, admin=True)
    client = await sign_in(ADMIN)
    assert "data-dead-events" not in (await client.get("/")).text
    html = (await client.get(f"/stores/{SHOP}")).text
    assert 'id="dead-notice"' not in html
    assert re.search(r'data-stat="retries.dead" data-empty="0">0<', html)
