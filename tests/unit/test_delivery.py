"""receiver.webhooks.parse_delivery (headers and body of a verified request) and
receiver.settings (typed settings from the environment, secrets that never print)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from receiver.settings import Secret, Settings, SettingsError
from receiver.webhooks import BadDelivery, batch_claims, parse_delivery

SHOP = "alpha-store.myshopify.com"
EVENT_ID = "9f1a2b3c-0d4e-4f5a-8b6c-7d8e9f0a1b2c"
WEBHOOK_ID = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
BODY = b'{"id": 820982911946154508, "name": "#1001"}'


def headers(prefix: str = "X-Shopify-", **values: str) -> Headers:
    names = {
        "topic": "Topic",
        "shop": "Shop-Domain",
        "event_id": "Event-Id",
        "webhook_id": "Webhook-Id",
        "api_version": "API-Version",
        "triggered_at": "Triggered-At",
    }
    defaults = {"topic": "orders/create", "shop": SHOP}
    return Headers({f"{prefix}{names[key]}": value for key, value in (defaults | values).items()})


def test_full_prefixed_delivery():
    delivery = parse_delivery(
        headers(
            event_id=EVENT_ID,
            webhook_id=WEBHOOK_ID,
            api_version="2026-10",
            triggered_at="2023-03-29T18:00:27.877041743Z",
        ),
        BODY,
    )
    assert delivery.shop_domain == SHOP
    assert delivery.topic == "orders/create"
    assert delivery.event_id == EVENT_ID
    assert delivery.webhook_id == WEBHOOK_ID
    assert delivery.api_version == "2026-10"
    assert delivery.triggered_at == datetime(2023, 3, 29, 18, 0, 27, 877041, tzinfo=UTC)
    assert delivery.payload == {"id": 820982911946154508, "name": "#1001"}
    assert delivery.body_sha256 == hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize("prefix", ["shopify-", "Shopify-", "SHOPIFY-"])
def test_unprefixed_events_spelling(prefix):
    delivery = parse_delivery(
        headers(prefix, event_id=EVENT_ID, webhook_id=WEBHOOK_ID, api_version="unstable"),
        BODY,
    )
    assert (delivery.shop_domain, delivery.topic) == (SHOP, "orders/create")
    assert (delivery.event_id, delivery.webhook_id, delivery.api_version) == (
        EVENT_ID,
        WEBHOOK_ID,
        "unstable",
    )


@pytest.mark.parametrize(
    ("topic_name", "shop_name"),
    [
        ("x-shopify-topic", "x-shopify-shop-domain"),
        ("X-SHOPIFY-TOPIC", "X-SHOPIFY-SHOP-DOMAIN"),
        ("x-ShOpIfY-tOpIc", "X-sHoPiFy-ShOp-DoMaIn"),
        ("shopify-topic", "X-Shopify-Shop-Domain"),  # spellings may even be mixed
    ],
)
def test_header_names_are_case_insensitive(topic_name, shop_name):
    delivery = parse_delivery(Headers({topic_name: "orders/paid", shop_name: SHOP}), BODY)
    assert (delivery.topic, delivery.shop_domain) == ("orders/paid", SHOP)


def test_raw_asgi_headers_with_both_spellings():
    raw = [(b"shopify-topic", b"products/update"), (b"shopify-shop-domain", SHOP.encode())]
    delivery = parse_delivery(Headers(raw=raw), b"{}")
    assert (delivery.topic, delivery.shop_domain) == ("products/update", SHOP)


@pytest.mark.parametrize(
    "shop",
    ["Alpha-Store.MyShopify.com", "ALPHA-STORE.MYSHOPIFY.COM", "  alpha-store.myshopify.com  "],
)
def test_shop_domain_is_normalised(shop):
    assert parse_delivery(headers(shop=shop), BODY).shop_domain == SHOP


def test_topic_is_lower_cased():
    assert parse_delivery(headers(topic="ORDERS/Create"), BODY).topic == "orders/create"


@pytest.mark.parametrize(
    "shop",
    [
        "alpha-store.example.com",
        "myshopify.com",
        ".myshopify.com",
        "-alpha.myshopify.com",
        "alpha_store.myshopify.com",
        "alpha.myshopify.com.evil.example",
        "evil.example/alpha.myshopify.com",
        "alpha.myshopify.com:443",
        "https://alpha.myshopify.com",
        "alpha store.myshopify.com",
        "ålpha.myshopify.com",
        "alpha.myshopify.com\x00",
        "a" * 300 + ".myshopify.com",
    ],
)
def test_malformed_shop_domain_is_a_bad_delivery(shop):
    with pytest.raises(BadDelivery):
        parse_delivery(headers(shop=shop), BODY)


@pytest.mark.parametrize(
    "topic",
    [
        "orders create",
        "orders/créate",
        "orders/\tcreate",
        "orders/create; drop table",
        "o" * 101,
    ],
)
def test_malformed_topic_is_a_bad_delivery(topic):
    """Only what a column and a log line hold: up to 100 printable ASCII characters."""
    with pytest.raises(BadDelivery):
        parse_delivery(headers(topic=topic), BODY)


@pytest.mark.parametrize(
    "topic",
    ["orders", "orders/create/", "a/b/c/d/e", "customer.tags_added", "../../etc/passwd"],
)
def test_any_other_printable_topic_is_a_delivery_of_a_topic_we_do_not_handle(topic):
    """Shopify deletes a subscription whose deliveries fail: an odd topic is stored (ignored),
    never refused; the topic is only ever a column value and a log field, never a path."""
    assert parse_delivery(headers(topic=topic), BODY).topic == topic


@pytest.mark.parametrize("missing", ["topic", "shop"])
@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_topic_or_shop_is_a_bad_delivery(missing, value):
    values = {"topic": "orders/create", "shop": SHOP}
    if value is None:
        del values[missing]
    else:
        values[missing] = value
    names = {"topic": "X-Shopify-Topic", "shop": "X-Shopify-Shop-Domain"}
    with pytest.raises(BadDelivery):
        parse_delivery(Headers({names[key]: text for key, text in values.items()}), BODY)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", "has spaces in it"),
        ("event_id", "é" * 4),
        ("event_id", "x" * 256),
        ("webhook_id", "<script>"),
        ("api_version", "2026-10; drop"),
        ("api_version", "v" * 33),
    ],
)
def test_malformed_optional_header_is_a_bad_delivery(name, value):
    with pytest.raises(BadDelivery):
        parse_delivery(headers(**{name: value}), BODY)


# --- dedupe key -----------------------------------------------------------------------------


def test_dedupe_key_prefers_the_event_id():
    delivery = parse_delivery(headers(event_id=EVENT_ID, webhook_id=WEBHOOK_ID), BODY)
    assert delivery.dedupe_key == EVENT_ID


def test_dedupe_key_falls_back_to_the_webhook_id():
    assert parse_delivery(headers(webhook_id=WEBHOOK_ID), BODY).dedupe_key == WEBHOOK_ID
    assert parse_delivery(headers(event_id="", webhook_id=WEBHOOK_ID), BODY).dedupe_key == (
        WEBHOOK_ID
    )


def test_batch_claims_keep_one_record_and_one_event_out_of_concurrent_batches():
    def claims(topic: str, body: bytes, event_id: str) -> set[tuple[str, ...]]:
        return set(batch_claims(parse_delivery(headers(topic=topic, event_id=event_id), body)))

    created = claims("orders/create", BODY, EVENT_ID)
    other_order = b'{"id": 820982911946154509, "name": "#1002"}'
    # The next version of the order, and a redelivery of the event, share a claim with it.
    assert created & claims("orders/updated", BODY, WEBHOOK_ID)
    assert created & claims("orders/create", other_order, EVENT_ID)
    # Another order, or a customer with the same number, does not.
    assert not created & claims("orders/updated", other_order, WEBHOOK_ID)
    assert not created & claims("customers/update", BODY, WEBHOOK_ID)


def test_dedupe_key_is_the_body_hash_without_ids():
    key = parse_delivery(headers(), BODY).dedupe_key
    assert key == "sha256:" + hashlib.sha256(BODY).hexdigest()
    # The hash is over the raw bytes, not the parsed JSON: same meaning, other bytes, other key.
    spaced = json.dumps(json.loads(BODY), indent=2).encode()
    assert parse_delivery(headers(), spaced).dedupe_key != key
    assert len(key) <= 255


# --- triggered-at ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-03-29T18:00:27.877041743Z", datetime(2023, 3, 29, 18, 0, 27, 877041, tzinfo=UTC)),
        ("2023-03-29T13:00:27-05:00", datetime(2023, 3, 29, 18, 0, 27, tzinfo=UTC)),
    ],
)
def test_triggered_at_is_parsed_to_utc(value, expected):
    assert parse_delivery(headers(triggered_at=value), BODY).triggered_at == expected


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2023-03-29T18:00:27",  # naive
        "1680112827",
        "2023-02-30T00:00:00Z",
        "",
        # Valid ISO-8601, but outside the datetime range once converted to UTC.
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_bad_triggered_at_is_ignored_not_fatal(value):
    delivery = parse_delivery(headers(triggered_at=value), BODY)
    assert delivery.triggered_at is None
    assert delivery.payload["name"] == "#1001"


# --- body -----------------------------------------------------------------------------------


def test_nul_characters_in_json_strings_are_replaced_and_the_payload_kept():
    body = b'{"id": 1, "note": "before\\u0000after", "key\\u0000": ["x\\u0000"]}'
    payload = parse_delivery(headers(), body).payload
    text = json.dumps(payload, ensure_ascii=False)
    assert "\x00" not in text
    assert "\\u0000" not in json.dumps(payload)
    assert payload["id"] == 1
    assert payload["note"].startswith("before")
    assert payload["note"].endswith("after")
    assert len(payload) == 3


def test_lone_surrogates_become_storable_utf8():
    body = b'{"id": 1, "note": "a\\ud800b", "pair": "\\ud83d\\ude00"}'
    payload = parse_delivery(headers(), body).payload
    encoded = json.dumps(payload, ensure_ascii=False).encode("utf-8")  # raises on a surrogate
    assert payload["pair"] == "😀"  # a proper pair is a real character, untouched
    assert payload["note"].startswith("a")
    assert payload["note"].endswith("b")
    assert b"\xed\xa0\x80" not in encoded


def test_raw_body_is_not_reencoded_before_hashing():
    body = '{"title": "Café ☕", "n": 1.50}'.encode()
    delivery = parse_delivery(headers(), body)
    assert delivery.payload == {"title": "Café ☕", "n": 1.5}
    assert delivery.body_sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    "body",
    [
        b'{"total": NaN}',
        b'{"total": Infinity}',
        b'{"total": -Infinity}',
        b'{"total": 1e999}',
        b'{"total": -1e999}',
        b'{"nested": [1, 2, {"x": 1E400}]}',
    ],
)
def test_non_finite_numbers_are_refused(body):
    with pytest.raises(BadDelivery):
        parse_delivery(headers(), body)


def test_big_integers_are_kept_exactly():
    body = b'{"id": 820982911946154508, "big": 123456789012345678901234567890}'
    payload = parse_delivery(headers(), body).payload
    assert payload["big"] == 123456789012345678901234567890
    assert payload["id"] == 820982911946154508


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"{not json",
        b"[1, 2]",
        b'"a string"',
        b"null",
        b"42",
        b"\xff\xfe{}",
        b'{"a": 1} trailing',
        b'{"a": "\xc3\x28"}',  # invalid UTF-8 inside a string
        b"{" * 100_000,
    ],
)
def test_body_that_is_not_a_json_object_is_a_bad_delivery(body):
    with pytest.raises(BadDelivery):
        parse_delivery(headers(), body)


@pytest.mark.parametrize("depth", [10, 200, 600, 5_000])
@pytest.mark.parametrize(("opener", "closer"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_deep_nesting_is_parsed_or_refused_but_never_crashes(depth, opener, closer):
    body = b'{"deep": ' + opener * depth + b"1" + closer * depth + b"}"
    try:
        delivery = parse_delivery(headers(), body)
    except BadDelivery:
        return
    level = delivery.payload["deep"]
    for _ in range(depth):
        level = level[0] if isinstance(level, list) else level["a"]
    assert level == 1


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.dictionaries(st.text(), JSON_VALUES, max_size=6), ascii_only=st.booleans())
def test_any_json_object_reads_as_json_loads_reads_it(payload, ascii_only):
    # The fast reader (orjson) and its fallback must read every body as json.loads does:
    # big integers exact, floats to the same double, escapes and non-ASCII alike.
    body = json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    expected = json.loads(body)
    if "\\u0000" in body.decode("utf-8", "surrogatepass") or any(
        0xD800 <= ord(c) <= 0xDFFF or c == "\x00" for c in json.dumps(expected, ensure_ascii=False)
    ):
        return  # made storable on purpose: the two tests above
    assert parse_delivery(headers(), body).payload == expected


def test_a_byte_order_mark_is_read_as_before():
    body = b"\xef\xbb\xbf" + BODY
    assert parse_delivery(headers(), body).payload == json.loads(BODY)


@pytest.mark.parametrize(("depth", "refused"), [(64, False), (65, True)])
def test_nesting_limit_is_exact(depth, refused):
    # The payload object is level 1; the innermost list holds a scalar.
    body = b'{"a":' + b"[" * (depth - 1) + b"1" + b"]" * (depth - 1) + b"}"
    if refused:
        with pytest.raises(BadDelivery, match="nests deeper"):
            parse_delivery(headers(), body)
    else:
        assert parse_delivery(headers(), body).payload["a"]


# --- settings -------------------------------------------------------------------------------

FERNET_KEY = "Zm9yLXRlc3RzLW9ubHktMzItYnl0ZXMtb2Yta2V5IT0="
OTHER_FERNET_KEY = "b3RoZXItdGVzdC1rZXktdGhpcnR5LXR3by1ieXRlcyE="


@pytest.fixture
def no_var_dir(tmp_path, monkeypatch):
    """Run in an empty directory and check afterwards that nothing was written to var/."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not (tmp_path / "var").exists(), "from_env wrote development secrets to var/"


def env(**values: str) -> dict[str, str]:
    return {"ENCRYPTION_KEYS": FERNET_KEY, "SECRET_KEY": "session-key-for-tests"} | values


@pytest.mark.parametrize("value", ["hunter2", "shpss_0123456789abcdef", "a,b"])
def test_secret_never_shows_its_value(value):
    secret = Secret(value)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert value not in shown
    assert secret.reveal() == value


def test_secret_equality_compares_values():
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"


def test_comma_separated_api_secrets_become_a_tuple(no_var_dir):
    settings = Settings.from_env(env(SHOPIFY_API_SECRET="current, previous ,,oldest,"))
    assert isinstance(settings.api_secrets, tuple)
    assert [secret.reveal() for secret in settings.api_secrets] == [
        "current",
        "previous",
        "oldest",
    ]


def test_single_api_secret_and_none(no_var_dir):
    assert [s.reveal() for s in Settings.from_env(env(SHOPIFY_API_SECRET="only")).api_secrets] == [
        "only"
    ]
    assert Settings.from_env(env()).api_secrets == ()


def test_values_from_env_are_used(no_var_dir):
    settings = Settings.from_env(
        env(
            DATABASE_URL="postgresql+asyncpg://app@db:5432/receiver",
            SHOPIFY_API_VERSION="2026-07",
            SHOPIFY_ADMIN_BASE_URL="http://127.0.0.1:9999/{shop}/{version}",
            WEBHOOK_MAX_BODY_BYTES="1024",
            ENCRYPTION_KEYS=f"{FERNET_KEY},{OTHER_FERNET_KEY}",
        )
    )
    assert settings.database_url == "postgresql+asyncpg://app@db:5432/receiver"
    assert settings.api_version == "2026-07"
    assert settings.admin_base_url == "http://127.0.0.1:9999/{shop}/{version}"
    assert settings.webhook_max_body_bytes == 1024
    assert [key.reveal() for key in settings.encryption_keys] == [FERNET_KEY, OTHER_FERNET_KEY]
    assert settings.secret_key.reveal() == "session-key-for-tests"


def test_defaults(no_var_dir):
    settings = Settings.from_env(env())
    assert settings.webhook_max_body_bytes == 10 * 1024 * 1024
    assert settings.database_url.startswith("sqlite+aiosqlite:")


def test_encryption_keys_rotate_first_encrypts_all_decrypt(no_var_dir):
    old = Settings.from_env(env(ENCRYPTION_KEYS=OTHER_FERNET_KEY)).secret_box()
    token = old.encrypt("shpat_token")
    rotated = Settings.from_env(env(ENCRYPTION_KEYS=f"{FERNET_KEY},{OTHER_FERNET_KEY}"))
    assert rotated.secret_box().decrypt(token) == "shpat_token"


@pytest.mark.parametrize("limit", ["ten", "", "1.5", "10MB", "0", "-1", " "])
def test_bad_webhook_body_limit_is_a_settings_error(no_var_dir, limit):
    with pytest.raises(SettingsError):
        Settings.from_env(env(WEBHOOK_MAX_BODY_BYTES=limit))


@pytest.mark.parametrize(
    "keys",
    [
        "not-a-fernet-key",
        "short",
        f"{FERNET_KEY},garbage",
        ",",
        FERNET_KEY[:-4],
    ],
)
def test_malformed_encryption_keys_are_a_settings_error(no_var_dir, keys):
    with pytest.raises(SettingsError):
        Settings.from_env(env(ENCRYPTION_KEYS=keys))


def test_settings_error_does_not_quote_the_key(no_var_dir):
    bad_key = "this-is-a-secret-but-not-a-key"
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env(ENCRYPTION_KEYS=f"{FERNET_KEY},{bad_key}"))
    assert bad_key not in str(raised.value)
    assert FERNET_KEY not in str(raised.value)


def test_repr_of_settings_shows_no_secret_value(no_var_dir):
    values = {
        "SHOPIFY_API_SECRET": "shpss_current_value,shpss_previous_value",
        "SECRET_KEY": "session-signing-key-value",
        "ENCRYPTION_KEYS": f"{FERNET_KEY},{OTHER_FERNET_KEY}",
    }
    settings = Settings.from_env(values)
    shown = repr(settings) + str(settings)
    for secret in [
        "shpss_current_value",
        "shpss_previous_value",
        "session-signing-key-value",
        FERNET_KEY,
        OTHER_FERNET_KEY,
    ]:
        assert secret not in shown
    assert repr(settings.secret_box()).find(FERNET_KEY) == -1


def test_repr_of_settings_does_not_show_the_database_password(no_var_dir):
    settings = Settings.from_env(
        env(DATABASE_URL="postgresql+asyncpg://receiver:s3cr3t-db-pass@db.internal:5432/shop")
    )
    assert "s3cr3t-db-pass" not in repr(settings)


def test_missing_keys_are_generated_into_var_for_development(tmp_path, monkeypatch):
    """The dev fallback: written once under var/ with owner-only permissions, then reused."""
    monkeypatch.chdir(tmp_path)
    first = Settings.from_env({})
    second = Settings.from_env({})
    assert first.secret_key == second.secret_key
    assert first.encryption_keys == second.encryption_keys
    for name in ("secret_key", "encryption_keys"):
        path = Path("var") / name
        assert path.exists()
        assert path.stat().st_mode & 0o077 == 0
