"""A store's webhook batches in flight are shared among the web processes `serve` starts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from receiver.app import WEB_PROCESSES_ENV, create_app, served_web_processes
from receiver.settings import SettingsError
from receiver.webhooks import WEBHOOK_BATCHES_PER_STORE
from tests.conftest import Backend, settings_for


async def _batches_in_flight(database_url: str, web_processes: int) -> int:
    """How many of one store's batches a process serving the app runs at once, read from the
    state its lifespan started (the ASGI lifespan protocol, as uvicorn drives it)."""
    app = create_app(settings_for(database_url), web_processes=web_processes)
    state: dict[str, Any] = {}
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await received.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}
    running = asyncio.create_task(app(scope, received.get, sent.put))  # type: ignore[arg-type]
    try:
        assert (await sent.get())["type"] == "lifespan.startup.complete"
        return int(state["services"].webhook_batches.concurrency)
    finally:
        await received.put({"type": "lifespan.shutdown"})
        await running


@pytest.mark.parametrize("web_processes", [1, 2, 3])
async def test_a_stores_batches_in_flight_are_shared_among_the_web_processes(
    backend: Backend, web_processes: int
) -> None:
    running = await _batches_in_flight(backend.url, web_processes)
    if backend.name == "sqlite":
        assert running == 1  # one writer
    else:
        # Each process its share, at least one: two batches with one process, one each with
        # two or more.
        assert running == max(1, WEBHOOK_BATCHES_PER_STORE // web_processes)
        assert running * web_processes >= WEBHOOK_BATCHES_PER_STORE


def test_each_served_process_knows_how_many_serve_started(monkeypatch) -> None:
    monkeypatch.delenv(WEB_PROCESSES_ENV, raising=False)
    assert served_web_processes() == 1
    monkeypatch.setenv(WEB_PROCESSES_ENV, "3")
    assert served_web_processes() == 3


@pytest.mark.parametrize("given", ["two", "0", "-1", "1.5"])
def test_a_hand_set_process_count_that_is_not_one_is_refused_in_one_line(
    monkeypatch, given: str
) -> None:
    monkeypatch.setenv(WEB_PROCESSES_ENV, given)
    with pytest.raises(SettingsError) as refused:
        served_web_processes()
    assert WEB_PROCESSES_ENV in str(refused.value)
    assert "\n" not in str(refused.value)
