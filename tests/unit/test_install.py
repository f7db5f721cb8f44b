"""The install flow's pure parts: Shopify's query signature, the scopes asked for and missed,
and the settings of issue #15 as read from the environment."""

from __future__ import annotations

from backfill.subscriptions import app_scopes
from receiver.install import missing_scopes, query_hmac, query_signed, requested_scopes
from receiver.settings import Settings
from tests.conftest import TEST_ENCRYPTION_KEY

BASE = {"SECRET_KEY": "k" * 32, "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY}
# Shopify's documented example (shopify.dev, authorization code grant, "Verify a request").
EXAMPLE = [
    ("code", "0907a61c0c8d55e99db179b68161bc00"),
    ("hmac", "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"),
    ("shop", "some-shop.myshopify.com"),
    ("state", "0.6784241404160823"),
    ("timestamp", "1337178173"),
]


def test_shopify_documented_signature_verifies() -> None:
    assert query_hmac(EXAMPLE, "hush") == EXAMPLE[1][1]
    assert query_signed(EXAMPLE, ["old-secret", "hush"])
    assert not query_signed(EXAMPLE, ["not-hush"])


def test_a_query_with_no_or_two_hmacs_is_not_signed() -> None:
    without = [pair for pair in EXAMPLE if pair[0] != "hmac"]
    assert not query_signed(without, ["hush"])
    assert not query_signed([*EXAMPLE, ("hmac", EXAMPLE[1][1])], ["hush"])


def test_defaults_ask_for_what_the_topics_and_backfill_need() -> None:
    settings = Settings.from_env(BASE)
    assert settings.oauth_base_url == "https://{shop}/admin/oauth"
    assert settings.after_install_url is None
    assert requested_scopes(settings) == sorted(app_scopes())


def test_install_settings_are_read() -> None:
    settings = Settings.from_env(
        BASE
        | {
            "SHOPIFY_SCOPES": " read_all_orders , read_discounts,",
            "SHOPIFY_OAUTH_BASE_URL": "http://127.0.0.1:8080/{shop}/admin/oauth/",
            "AFTER_INSTALL_URL": "https://app.example.com/welcome",
        }
    )
    assert settings.extra_scopes == ("read_all_orders", "read_discounts")
    assert settings.oauth_base_url == "http://127.0.0.1:8080/{shop}/admin/oauth"
    assert settings.after_install_url == "https://app.example.com/welcome"
    assert requested_scopes(settings) == sorted(
        {*app_scopes(), "read_all_orders", "read_discounts"}
    )


def test_a_write_scope_grants_its_read_scope() -> None:
    assert missing_scopes(["read_orders", "read_products"], ["write_orders"]) == ["read_products"]
    assert missing_scopes(["read_orders"], None) == []
