"""The retry schedule: growing waits with bounded jitter, and a last attempt."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from handlers.retries import BACKOFF, DEFAULT_MAX_ATTEMPTS, JITTER, backoff, next_attempt_at
from receiver.settings import Settings, SettingsError
from tests.conftest import TEST_ENCRYPTION_KEY

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("attempts", range(1, 12))
def test_each_wait_is_its_step_plus_at_most_the_jitter(attempts):
    step = BACKOFF[min(attempts, len(BACKOFF)) - 1]
    waits = [backoff(attempts, rng=random.Random(seed)) for seed in range(50)]
    assert all(step <= wait <= step * (1 + JITTER) for wait in waits)
    assert len(set(waits)) > 1  # jittered: events that failed together spread out


def test_waits_grow_and_the_last_attempt_has_no_next():
    assert list(BACKOFF) == sorted(BACKOFF)
    assert next_attempt_at(1, NOW) is not None
    assert next_attempt_at(DEFAULT_MAX_ATTEMPTS - 1, NOW) is not None
    assert next_attempt_at(DEFAULT_MAX_ATTEMPTS, NOW) is None
    assert next_attempt_at(2, NOW, max_attempts=2) is None


def test_event_max_attempts_setting():
    keys = {"ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY, "SECRET_KEY": "session-key-for-tests"}
    assert Settings.from_env(keys).event_max_attempts == DEFAULT_MAX_ATTEMPTS
    assert Settings.from_env(keys | {"EVENT_MAX_ATTEMPTS": "3"}).event_max_attempts == 3
    with pytest.raises(SettingsError):
        Settings.from_env(keys | {"EVENT_MAX_ATTEMPTS": "0"})
