"""DATABASE_URL as operators write it, read as the drivers this service runs on."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.engine import make_url

from receiver.errors import describe_operational_error
from receiver.settings import DEFAULT_DATABASE_URL, Settings, SettingsError
from tests.conftest import TEST_ENCRYPTION_KEY

BASE = {"SECRET_KEY": "k" * 32, "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY}
PASSWORD = "p%40ss%2Fword"  # a percent-encoded "@" and "/", kept as written


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (
            f"postgresql://app:{PASSWORD}@db.internal:6432/receiver",
            f"postgresql+asyncpg://app:{PASSWORD}@db.internal:6432/receiver",
        ),
        (
            f"postgres://app:{PASSWORD}@db.internal/receiver?sslmode=require",
            f"postgresql+asyncpg://app:{PASSWORD}@db.internal/receiver?sslmode=require",
        ),
        ("postgresql+psycopg://app@db/receiver", "postgresql+asyncpg://app@db/receiver"),
        ("POSTGRESQL+asyncpg://app@db/receiver", "postgresql+asyncpg://app@db/receiver"),
        ("sqlite:///var/receiver.db", "sqlite+aiosqlite:///var/receiver.db"),
        ("sqlite:////srv/receiver.db", "sqlite+aiosqlite:////srv/receiver.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_are_read_as_our_drivers(written: str, read: str) -> None:
    settings = Settings.from_env(BASE | {"DATABASE_URL": written})
    assert settings.database_url == read
    assert make_url(settings.database_url).password == make_url(written).password


def test_no_database_url_is_the_embedded_default() -> None:
    assert Settings.from_env(BASE).database_url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    "written", ["mysql://app:secret@db/receiver", "receiver.db", "://db/receiver"]
)
def test_other_databases_are_refused_without_quoting_the_password(written: str) -> None:
    with pytest.raises(SettingsError, match=r"^DATABASE_URL .*postgresql://USER") as refused:
        Settings.from_env(BASE | {"DATABASE_URL": written})
    assert "secret" not in str(refused.value)


def test_a_missing_sqlite_table_says_run_migrate() -> None:
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("SELECT * FROM tenants")
    except sqlite3.OperationalError as exc:
        described = describe_operational_error(exc, "sqlite+aiosqlite:///old/receiver.db")
    assert described is not None
    assert "SQLite file old/receiver.db is not migrated (no such table: tenants)" in described
    assert "run `shopify-receiver migrate`" in described


def test_a_bug_is_not_described_as_a_set_up_mistake() -> None:
    assert describe_operational_error(KeyError("orders"), DEFAULT_DATABASE_URL) is None
    assert describe_operational_error(OSError("disk on fire"), DEFAULT_DATABASE_URL) is None
