"""Password hashing runs off the event loop, at most HASH_CONCURRENCY at once; a sign-in that
cannot get a slot in time is refused instead of queueing without end."""

from __future__ import annotations

import asyncio

import pytest

from receiver import auth


async def test_a_hash_waits_for_a_slot_and_is_refused_when_none_frees_up(monkeypatch):
    monkeypatch.setattr(auth, "HASH_WAIT_SECONDS", 0.05)
    stored = auth.hash_password("correct horse")
    slots = auth._slots()
    for _ in range(auth.HASH_CONCURRENCY):
        await slots.acquire()
    try:
        with pytest.raises(auth.SignInBusy):
            await auth.check_password(stored, "correct horse")
        with pytest.raises(auth.SignInBusy):
            await auth.new_password_hash("another")
    finally:
        for _ in range(auth.HASH_CONCURRENCY):
            slots.release()
    # With the slots free again the same checks go through, and nothing leaked a slot.
    assert await auth.check_password(stored, "correct horse")
    assert not await auth.check_password(stored, "wrong")
    assert not slots.locked()


async def test_hashes_beyond_the_cap_wait_their_turn():
    stored = auth.hash_password("pw")
    slots = auth._slots()
    results = await asyncio.gather(
        *(auth.check_password(stored, "pw") for _ in range(auth.HASH_CONCURRENCY * 3))
    )
    assert results == [True] * (auth.HASH_CONCURRENCY * 3)
    assert not slots.locked()
