"""The settings of issue #7 as read from the environment."""

from __future__ import annotations

import pytest

from receiver.backfill_env import maintenance_for
from receiver.settings import Settings, SettingsError
from tests.conftest import TEST_ENCRYPTION_KEY

BASE = {"SECRET_KEY": "k" * 32, "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY}


def test_defaults_run_the_periodic_checks_without_a_public_url() -> None:
    settings = Settings.from_env(BASE)
    maintenance = maintenance_for(settings)
    assert maintenance is not None
    assert maintenance.webhook_url is None  # the watchdog skips; reconcile still runs
    assert maintenance.watchdog_interval.total_seconds() == 300
    assert maintenance.reconcile_interval.total_seconds() == 86400


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no"])
def test_periodic_checks_can_be_turned_off(value: str) -> None:
    settings = Settings.from_env(BASE | {"PERIODIC_CHECKS": value})
    assert settings.periodic_checks is False
    assert maintenance_for(settings) is None


def test_intervals_and_public_url_are_read() -> None:
    settings = Settings.from_env(
        BASE
        | {
            "PUBLIC_URL": "https://receiver.example.com/",
            "WATCHDOG_INTERVAL_SECONDS": "60",
            "RECONCILE_INTERVAL_SECONDS": "3600",
        }
    )
    assert settings.webhook_url == "https://receiver.example.com/webhooks/shopify"
    maintenance = maintenance_for(settings)
    assert maintenance is not None
    assert maintenance.webhook_url == settings.webhook_url
    assert maintenance.watchdog_interval.total_seconds() == 60
    assert maintenance.reconcile_interval.total_seconds() == 3600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PERIODIC_CHECKS", "sometimes"),
        ("PUBLIC_URL", "receiver.example.com"),
        ("PUBLIC_URL", "ftp://receiver.example.com"),
        ("WATCHDOG_INTERVAL_SECONDS", "0"),
        ("RECONCILE_INTERVAL_SECONDS", "soon"),
    ],
)
def test_bad_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(BASE | {name: value})
