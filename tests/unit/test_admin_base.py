"""backfill.admin_base: a store's own Admin API base (`tenants add --admin-url`), checked when
given, and the address every Admin API call of a store is sent to."""

from __future__ import annotations

import pytest

from backfill.admin_base import (
    SHOPIFY_ADMIN_BASE_URL,
    AdminBaseRefused,
    InvalidAdminBaseUrl,
    admin_address,
    check_store_admin_base_url,
)
from receiver.settings import DEFAULT_ADMIN_BASE_URL, Settings
from tests.conftest import TEST_ENCRYPTION_KEY

SHOP = "sim-store.myshopify.com"
SIMULATOR = "http://127.0.0.1:8081/{shop}/admin/api/{version}"


def test_the_default_is_the_one_settings_use() -> None:
    """What tells "the operator chose a base" from "Shopify's own" (the guard below)."""
    assert DEFAULT_ADMIN_BASE_URL == SHOPIFY_ADMIN_BASE_URL
    assert Settings.from_env(
        {"SECRET_KEY": "k", "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY}
    ).admin_base_url == (SHOPIFY_ADMIN_BASE_URL)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        (SIMULATOR, SIMULATOR),
        (f" {SIMULATOR}/ ", SIMULATOR),
        (
            "https://sim.example.test/admin/api/{version}",
            "https://sim.example.test/admin/api/{version}",
        ),
        ("http://[::1]:9000/{version}/{shop}", "http://[::1]:9000/{version}/{shop}"),
    ],
)
def test_a_simulator_template_is_kept(given: str, kept: str) -> None:
    assert check_store_admin_base_url(given) == kept


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("http://127.0.0.1:8081", "has no {version}"),
        ("http://127.0.0.1:8081/{shop}/admin", "has no {version}"),
        ("ftp://127.0.0.1/{version}", "not an http:// or https:// URL"),
        ("127.0.0.1:8081/{version}", "not an http:// or https:// URL"),
        ("http:///{version}", "not an http:// or https:// URL"),
        ("http://user:pw@127.0.0.1/{version}", "holds credentials"),
        ("http://token@127.0.0.1/{version}", "holds credentials"),
        ("http://127.0.0.1/{version}?token=1", "no ?query"),
        ("http://127.0.0.1:99999/{version}", "out of range"),
        ("http://[::1/{version}", "is not a URL template"),
        ("http://127.0.0.1/{version}/{token}", "only {shop} and {version}"),
        ("http://127.0.0.1/{version!r}", "only {shop} and {version}"),
        ("http://127.0.0.1/{version", "{version"),
        ("https://{shop}/admin/api/{version}", "is Shopify"),
        ("https://sim-store.myshopify.com/admin/api/{version}", "is Shopify"),
        ("https://admin.shopify.com/store/x/{version}", "is Shopify"),
    ],
)
def test_what_cannot_be_a_simulator_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(InvalidAdminBaseUrl, match=r".+") as refused:
        check_store_admin_base_url(given)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_store_with_its_own_base_goes_there_for_calls_and_token_refreshes() -> None:
    address = admin_address(SHOP, "2026-10", store_base=SIMULATOR, global_base="https://x/{shop}")
    assert address.endpoint == f"http://127.0.0.1:8081/{SHOP}/admin/api/2026-10/graphql.json"
    assert address.token_url == f"http://127.0.0.1:8081/{SHOP}/admin/oauth/access_token"


def test_a_store_without_one_goes_to_the_global_base() -> None:
    shopify = admin_address(SHOP, "2026-10", store_base=None, global_base=SHOPIFY_ADMIN_BASE_URL)
    assert shopify.endpoint == f"https://{SHOP}/admin/api/2026-10/graphql.json"
    assert shopify.token_url == f"https://{SHOP}/admin/oauth/access_token"
    chosen = admin_address(SHOP, "2026-10", store_base=None, global_base=SIMULATOR)
    assert chosen.endpoint == f"http://127.0.0.1:8081/{SHOP}/admin/api/2026-10/graphql.json"


def test_a_store_base_naming_shopify_is_never_called() -> None:
    """Only a hand-edited row can hold one: `tenants add` refuses it."""
    with pytest.raises(AdminBaseRefused, match="nothing for a simulated store goes to Shopify"):
        admin_address(
            SHOP, "2026-10", store_base=SHOPIFY_ADMIN_BASE_URL, global_base=SHOPIFY_ADMIN_BASE_URL
        )


def test_without_a_chosen_base_only_shopify_hosts_are_called() -> None:
    with pytest.raises(AdminBaseRefused, match="--admin-url"):
        admin_address(
            "127.0.0.1:8081", "2026-10", store_base=None, global_base=SHOPIFY_ADMIN_BASE_URL
        )
    # An operator who set SHOPIFY_ADMIN_BASE_URL chose where every such store goes.
    chosen = admin_address(
        "127.0.0.1:8081", "2026-10", store_base=None, global_base="http://{shop}/{version}"
    )
    assert chosen.endpoint == "http://127.0.0.1:8081/2026-10/graphql.json"


def test_an_unusable_global_template_is_a_backfill_error_not_a_crash() -> None:
    with pytest.raises(AdminBaseRefused, match="not usable"):
        admin_address(SHOP, "2026-10", store_base=None, global_base="http://h/{store}/{version}")


def test_credentials_in_a_base_are_not_repeated_in_the_error() -> None:
    with pytest.raises(InvalidAdminBaseUrl) as refused:
        check_store_admin_base_url("http://user:hunter2@127.0.0.1/{version}")
    assert "hunter2" not in str(refused.value)
