"""METAFIELD_NAMESPACES: parsing, the queries built from it, and how bodies are read."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from backfill.nested import BulkGrouper, overflow_query
from handlers import metafields
from handlers.resources import RESOURCES
from receiver.settings import Settings, SettingsError
from tests.fakeshop import FakeStore
from tests.fakeshop.schema import check_document

OWNERS = {"orders": "ORDER", "products": "PRODUCT", "customers": "CUSTOMER"}


@pytest.fixture
def namespaces() -> Iterator[None]:
    metafields.configure(["custom", "my-app_2"])
    try:
        yield
    finally:
        metafields.configure([])


def env(value: str) -> dict[str, str]:
    return {
        "SECRET_KEY": "k",
        "ENCRYPTION_KEYS": "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5IT0=",
        "METAFIELD_NAMESPACES": value,
    }


def test_namespaces_parse_trimmed_deduplicated_in_order() -> None:
    settings = Settings.from_env(env(" custom , my-app_2,custom,, "))
    assert settings.metafield_namespaces == ("custom", "my-app_2")
    assert Settings.from_env(env("")).metafield_namespaces == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ('custom,bad"ns', "bad\"ns'"),
        ("ab", "'ab'"),
        ("with space", "'with space'"),
        ("$app:things", "app--<app id>--<name>"),
        ("aaa,bbb,ccc,ddd", "at most 3"),
    ],
)
def test_bad_namespaces_are_refused_by_name(value: str, says: str) -> None:
    with pytest.raises(SettingsError, match="METAFIELD_NAMESPACES") as error:
        Settings.from_env(env(value))
    assert says in str(error.value)


def test_settings_apply_makes_them_the_process_namespaces() -> None:
    try:
        Settings.from_env(env("custom")).apply_metafields()
        assert metafields.configured() == ("custom",)
        assert [child.table for child in RESOURCES["orders"].children][-1] == "metafields"
    finally:
        metafields.configure([])
    assert "metafields" not in [child.table for child in RESOURCES["orders"].children]


def test_default_queries_ask_for_no_metafields() -> None:
    assert metafields.configured() == ()
    for resource in RESOURCES.values():
        assert "metafield" not in resource.page_query.lower()
        assert "metafield" not in resource.bulk_query().lower()


@pytest.mark.usefixtures("namespaces")
def test_queries_ask_for_each_namespace_under_an_alias() -> None:
    for name, resource in RESOURCES.items():
        page, bulk = resource.page_query, resource.bulk_query("updated_at:>'2024-01-01'")
        if name not in OWNERS:
            assert "metafield" not in page + bulk
            continue
        assert re.findall(
            r'(metafields\d): metafields\(first: \d+, namespace: "([^"]+)"\)', page
        ) == [
            ("metafields0", "custom"),
            ("metafields1", "my-app_2"),
        ]
        assert re.findall(r'(metafields\d): metafields\(namespace: "([^"]+)"\)', bulk) == [
            ("metafields0", "custom"),
            ("metafields1", "my-app_2"),
        ]
        # Both are documents of the real schema (a bulk query is one too).
        for document in (page, bulk):
            assert check_document(document).errors == (), document


def test_bulk_queries_stay_within_five_connections_at_the_most_namespaces() -> None:
    shop = FakeStore("limits.myshopify.com", seed=1, customers=1, products=1, orders=1)
    metafields.configure([f"ns{n}x" for n in range(metafields.MAX_NAMESPACES)])
    try:
        for name in OWNERS:
            query = RESOURCES[name].bulk_query()
            # Every connection, the root one included, selects `edges`.
            assert query.count("edges {") == 5
            # The simulator applies Shopify's bulk query rules (tests/fakeshop/bulk.py).
            found = shop.bulk._parse(query)
            assert not isinstance(found, list), found
    finally:
        metafields.configure([])


@pytest.mark.usefixtures("namespaces")
def test_overflow_query_pages_one_namespace_by_its_alias() -> None:
    child = RESOURCES["products"].children[-1]
    document, cost = overflow_query("Product", child)
    assert "metafields1: metafields(first: " in document
    assert 'after: $after, namespace: "my-app_2")' in document
    assert check_document(document).errors == ()
    assert cost > 1


REST_PRODUCT = {
    "id": 632910392,
    "metafields": [
        {
            "id": 1069228935,
            "namespace": "custom",
            "key": "material",
            "value": "cotton",
            "type": "single_line_text_field",
            "owner_id": 632910392,
            "owner_resource": "product",
            "created_at": "2026-01-01T10:00:00-05:00",
            "updated_at": "2026-01-02T10:00:00-05:00",
            "admin_graphql_api_id": "gid://shopify/Metafield/1069228935",
        },
        {
            "id": 1069228936,
            "namespace": "other_app",
            "key": "secret",
            "value": "x",
            "type": "single_line_text_field",
            "owner_id": 632910392,
            "owner_resource": "product",
            "created_at": "2026-01-01T10:00:00-05:00",
            "updated_at": "2026-01-02T10:00:00-05:00",
            "admin_graphql_api_id": "gid://shopify/Metafield/1069228936",
        },
        {
            "id": 1069228937,
            "namespace": "my-app_2",
            "key": "rating",
            "value": 4,
            "type": "number_integer",
            "owner_id": 632910392,
            "owner_resource": "product",
            "created_at": "2026-01-01T10:00:00-05:00",
            "updated_at": "2026-01-02T10:00:00-05:00",
            "admin_graphql_api_id": "gid://shopify/Metafield/1069228937",
        },
    ],
}


@pytest.mark.usefixtures("namespaces")
def test_a_rest_body_gives_each_set_its_own_namespace_only() -> None:
    sets = [c for c in RESOURCES["products"].children if c.table == "metafields"]
    read = [child.read(REST_PRODUCT, 632910392, graphql=False) for child in sets]
    assert all(found is not None and found.complete for found in read)
    rows = [
        {k: record[k] for k in ("shopify_id", "owner_type", "owner_shopify_id", "namespace",
                                "key", "type", "value")}
        for found in read if found is not None
        for record in found.records
    ]  # fmt: skip
    assert rows == [
        {
            "shopify_id": 1069228935,
            "owner_type": "PRODUCT",
            "owner_shopify_id": 632910392,
            "namespace": "custom",
            "key": "material",
            "type": "single_line_text_field",
            "value": "cotton",
        },
        {
            "shopify_id": 1069228937,
            "owner_type": "PRODUCT",
            "owner_shopify_id": 632910392,
            "namespace": "my-app_2",
            "key": "rating",
            "type": "number_integer",
            # a bare REST number is kept as Shopify's string form
            "value": "4",
        },
    ]


@pytest.mark.usefixtures("namespaces")
def test_bulk_lines_of_several_namespaces_go_under_their_own_alias() -> None:
    grouper = BulkGrouper(RESOURCES["customers"].children)
    lines = [
        {"id": "gid://shopify/Customer/1"},
        {"id": "gid://shopify/Metafield/7", "namespace": "my-app_2", "__parentId": "gid://shopify/Customer/1"},
        {"id": "gid://shopify/Metafield/8", "namespace": "custom", "__parentId": "gid://shopify/Customer/1"},
        {"id": "gid://shopify/Customer/2"},
    ]  # fmt: skip
    groups = [group for n, line in enumerate(lines) for group in grouper.feed(line, n)]
    node = groups[0].node
    assert [m["id"] for m in node["metafields0"]["nodes"]] == ["gid://shopify/Metafield/8"]
    assert [m["id"] for m in node["metafields1"]["nodes"]] == ["gid://shopify/Metafield/7"]
    with pytest.raises(ValueError, match="unexpected child type"):
        list(grouper.feed({"id": "gid://shopify/Metafield/9", "namespace": "nope",
                           "__parentId": "gid://shopify/Customer/2"}, 9))  # fmt: skip


def test_the_app_and_the_cli_make_their_settings_namespaces_the_process_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from receiver import cli
    from receiver.app import create_app

    try:
        create_app(Settings.from_env(env("reviews")))
        assert metafields.configured() == ("reviews",)
        for key, value in env("custom,reviews").items():
            monkeypatch.setenv(key, value)
        cli._settings()
        assert metafields.configured() == ("custom", "reviews")
    finally:
        metafields.configure([])


def test_redaction_empties_metafield_values_in_rest_bodies_and_graphql_nodes() -> None:
    node = {
        "id": "gid://shopify/Customer/1",
        "note": "kept here",
        "metafields0": {
            "nodes": [{"id": "gid://shopify/Metafield/2", "key": "fit", "value": "secret"}],
            "pageInfo": {"hasNextPage": False},
        },
    }
    body = {"id": 1, "metafields": [{"id": 2, "namespace": "x", "value": "secret"}]}
    assert metafields.without_values(node) == {
        **node,
        "metafields0": {
            "nodes": [{"id": "gid://shopify/Metafield/2", "key": "fit", "value": None}],
            "pageInfo": {"hasNextPage": False},
        },
    }
    assert metafields.without_values(body) == {
        "id": 1,
        "metafields": [{"id": 2, "namespace": "x", "value": None}],
    }
    assert body["metafields"][0]["value"] == "secret"  # a copy: the input is left alone
