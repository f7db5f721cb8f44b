"""The limits of issue #11 (slow and idle clients, unverified bytes, database timeouts) as read
from the environment and handed to uvicorn and the database engine."""

from __future__ import annotations

import pytest

from receiver.app import engine_options
from receiver.limits import LimitedHttpProtocol, server_config
from receiver.settings import Settings, SettingsError
from tests.conftest import TEST_ENCRYPTION_KEY

BASE = {
    "SECRET_KEY": "k" * 32,
    "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
    "DATABASE_URL": "postgresql+asyncpg://receiver@db/receiver",
}
LIMITS = {
    "HTTP_MAX_CONNECTIONS": "7",
    "HTTP_HEADER_TIMEOUT_SECONDS": "2.5",
    "HTTP_BODY_TIMEOUT_SECONDS": "1.5",
    "WEBHOOK_UNVERIFIED_BUDGET_BYTES": "1000000",
    "WEBHOOK_SMALL_BODY_BYTES": "2000",
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "1.25",
    "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "2",
}


def test_limits_reach_uvicorn_and_the_database_sessions() -> None:
    settings = Settings.from_env(BASE | LIMITS)
    config = server_config("receiver.app:create_app", settings, factory=True)
    assert config.http is LimitedHttpProtocol
    assert (config.limits.max_connections, config.limits.header_timeout_seconds) == (7, 2.5)
    assert (settings.http_body_timeout_seconds, settings.webhook_small_body_bytes) == (1.5, 2000)
    assert settings.webhook_unverified_budget_bytes == 1_000_000
    server_settings = engine_options(settings)["connect_args"]["server_settings"]
    assert server_settings == {
        "statement_timeout": "1250",
        "idle_in_transaction_session_timeout": "2000",
    }


def test_sqlite_has_no_server_settings() -> None:
    settings = Settings.from_env(BASE | {"DATABASE_URL": "sqlite+aiosqlite:///x.db"})
    assert engine_options(settings) == {}


@pytest.mark.parametrize("name", sorted(LIMITS))
@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_limit_must_be_a_positive_number(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(BASE | {name: value})
