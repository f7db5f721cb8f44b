"""The SQL twins of the parse functions (handlers/sql_fields.py) against the Python normalisers,
on real PostgreSQL: wherever the SQL reading says `ok`, Python accepts the same document and
reads every column to the same value; wherever Python refuses, the SQL reading is not `ok`."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import Text

from handlers import normalize_children
from handlers.json_text import loads_json
from handlers.normalize import Field, PayloadError
from handlers.normalize_children import LINE_ITEM_FIELDS, TRANSACTION_FIELDS, child_record
from handlers.sql_fields import SQL_TWINS, Reading, child_reading, has_exponent
from tests.conftest import Backend

FUZZ = settings(
    max_examples=120,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Every child declaration whose columns all have SQL twins.
DECLARATIONS = {
    name: fields
    for name, fields in vars(normalize_children).items()
    if name.endswith("_FIELDS")
    and isinstance(fields, tuple)
    and all(field.parse in SQL_TWINS for field in fields if field.node is not None)
}

GIDS_SAMPLES = [
    "gid://shopify/LineItem/1",
    "gid://shopify/Order/5000000000001",
    "gid://shopify/Order/0012",
    "gid://shopify/Order/0",
    "gid://shopify/Order/000",
    "gid://shopify/Order/",
    "gid://shopify/Order/12?x=1",
    "gid://shopify/Order/999999999999999999",
    "gid://shopify/Order/9223372036854775807",
    "gid://shopify/Order/99999999999999999999",
    "gid://shopify/Order/0000000000000000001",
    "gid://x/1/2",
    "gid://\n/7",
    "gid://shopify/Order/１２",
    "gid:/shopify/Order/1",
    "12",
]
AMOUNTS_SAMPLES = [
    "12.34", "-0.00", "0.00", "-12.50", "1E+2", "12.3", "12.345", "0001.00", "1_000.00",
    " 5.00", "999999999999999.99", "9999999999999999.99", "", "abc", "1e5",
]  # fmt: skip
TIMES_SAMPLES = [
    "2024-03-01T10:20:30Z",
    "2024-02-29T23:59:59Z",
    "2023-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T00:00:60Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-01-01T00:00:00+01:00",
    "2024-01-01 00:00:00Z",
    "2024-01-01T00:00:00.123Z",
    "2024-01-01T00:00:00z",
    "",
]
WORDS_SAMPLES = ["PAID", "sale", "Success", "İ", "ǅ", "ß", "", "a b", "SKU-1", "é"]
GIDS, AMOUNTS, TIMES, WORDS = map(
    st.sampled_from, (GIDS_SAMPLES, AMOUNTS_SAMPLES, TIMES_SAMPLES, WORDS_SAMPLES)
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([0, 1, 7, 10**17, 10**18, 2**63 - 1, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    GIDS,
    AMOUNTS,
    TIMES,
    WORDS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(st.sampled_from(["id", "x"]), inner, max_size=2),
    ),
    max_leaves=4,
)


GID_NUMBERS = st.integers(min_value=1, max_value=10**18 - 1)
VALID_GIDS = st.builds(lambda n, kind: f"gid://shopify/{kind}/{n}", GID_NUMBERS, WORDS)
VALID_TIMES = st.builds(
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
)
VALID_AMOUNTS = st.builds(
    lambda cents: f"{'-' if cents < 0 else ''}{abs(cents) // 100}.{abs(cents) % 100:02d}",
    st.integers(min_value=-(10**17) + 1, max_value=10**17 - 1),
)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
# What Shopify sends for a column of each parse function, all of it for the SQL path.
VALID = {
    "gid_or_id": st.one_of(st.none(), st.builds(lambda gid: {"id": gid}, VALID_GIDS)),
    "parse_money": st.one_of(st.none(), st.just(""), VALID_AMOUNTS),
    "parse_timestamp": st.one_of(st.none(), st.just(""), VALID_TIMES),
    "parse_count": st.one_of(st.none(), st.integers(min_value=0, max_value=10**18 - 1)),
    "parse_bool": st.one_of(st.none(), st.booleans()),
    "optional_text": st.one_of(st.none(), ANY_TEXT),
    "lower_enum": st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126))),
}
# ... and what else a payload may hold there.
ODD = {
    "gid_or_id": st.one_of(GIDS, st.builds(lambda gid: {"id": gid}, GIDS)),
    "parse_money": AMOUNTS,
    "parse_timestamp": TIMES,
    "parse_count": st.integers(min_value=-2, max_value=2**64),
    "optional_text": WORDS,
    "lower_enum": WORDS,
}


def _put(document: dict[str, Any], parts: list[str], value: Any) -> None:
    for part in parts[:-1]:
        document = document.setdefault(part, {})
        if not isinstance(document, dict):
            return
    document[parts[-1]] = value


@st.composite
def documents(draw: st.DrawFn, fields: tuple[Field, ...]) -> dict[str, Any]:
    """A node as Shopify sends it, with at most two things changed: a value of another
    shape, a key missing, or a null on the way."""
    paths = [("id", None), ("updatedAt", None), ("createdAt", None)] + [
        (field.node, field.parse.__name__) for field in fields if field.node is not None
    ]
    changed = draw(st.sets(st.sampled_from(paths), max_size=2))
    document: dict[str, Any] = {}
    for path, parse in paths:
        parts = path.split(".")
        valid = VALID_GIDS if path == "id" else VALID.get(parse or "parse_timestamp", VALUES)
        if (path, parse) not in changed:
            _put(document, parts, draw(valid))
            continue
        shape = draw(st.integers(0, 3))
        if shape == 0:
            continue  # absent
        if shape == 1:
            _put(document, parts[: draw(st.integers(1, len(parts)))], None)  # null on the way
        elif shape == 2:
            _put(document, parts[: draw(st.integers(1, len(parts)))], draw(VALUES))
        else:
            odd = GIDS if path == "id" else ODD.get(parse or "parse_timestamp", VALUES)
            _put(document, parts, draw(odd))
    return document


def _python(body: bytes, fields: tuple[Field, ...]) -> dict[str, Any] | None:
    node = loads_json(body)
    try:
        return child_record(node, fields, "child", graphql=True)
    except PayloadError:
        return None


def _query(reading: Reading) -> Any:
    source = "SELECT d.t::jsonb AS doc, d.n FROM unnest(:texts) WITH ORDINALITY AS d(t, n)"
    return text(f"{reading.select(source, keep=('n',))} ORDER BY n").bindparams(
        bindparam("texts", type_=ARRAY(Text))
    )


async def _sql(backend: Backend, reading: Reading, bodies: list[bytes]) -> list[Any]:
    """Each document's row, or None where PostgreSQL raised (a cast that failed, which sends
    the batch to Python)."""
    texts = [body.decode() for body in bodies]
    async with backend.engine.connect() as connection:
        try:
            return list((await connection.execute(_query(reading), {"texts": texts})).mappings())
        except DBAPIError:
            await connection.rollback()
        rows: list[Any] = []
        for one in texts:
            try:
                rows.extend(
                    (await connection.execute(_query(reading), {"texts": [one]})).mappings()
                )
            except DBAPIError:
                await connection.rollback()
                rows.append(None)
        return rows


def _same(python: Any, sql: Any) -> bool:
    if isinstance(python, Decimal) and isinstance(sql, Decimal):
        return str(python) == str(sql)  # the same digits and places, not only the same number
    if isinstance(python, datetime):
        return python == sql
    return type(python) is type(sql) and python == sql


async def _check(
    backend: Backend, fields: tuple[Field, ...], nodes: list[dict[str, Any]], *, created: bool
) -> int:
    reading = child_reading("doc", fields, created=created)
    reads = reading.reads
    # json.dumps: orjson refuses integers past 64 bits, which a body may carry.
    bodies = [json.dumps(node, ensure_ascii=False).encode() for node in nodes]
    accepted = 0
    for body, row in zip(bodies, await _sql(backend, reading, bodies), strict=True):
        python = _python(body, fields)
        if row is None or not row["ok"] or has_exponent(body):
            continue
        accepted += 1
        assert python is not None, f"SQL accepted what Python refuses: {body!r}"
        assert set(python) == set(reads), body
        for name in reads:
            if name == "raw":
                stored = row[name]
                assert (json.loads(stored) if isinstance(stored, str) else stored) == python[
                    "raw"
                ], body
            else:
                assert _same(python[name], row[name]), (name, python[name], row[name], body)
    return accepted


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
@FUZZ
@given(data=st.data())
async def test_sql_reads_what_python_reads_or_leaves_it_to_python(pg, name, data):
    fields = DECLARATIONS[name]
    nodes = data.draw(st.lists(documents(fields), min_size=1, max_size=12))
    accepted = await _check(pg, fields, nodes, created=data.draw(st.booleans()))
    event(f"{name}: {'some' if accepted else 'none'} read in SQL")


def _line_item(number: int) -> dict[str, Any]:
    money = {"shopMoney": {"amount": "19.90", "currencyCode": "EUR"}}
    return {
        "id": f"gid://shopify/LineItem/{number}",
        "product": {"id": "gid://shopify/Product/7"},
        "variant": None,
        "sku": "SKU-1",
        "title": "Hat",
        "variantTitle": None,
        "vendor": "Acme",
        "quantity": 2,
        "currentQuantity": 2,
        "originalUnitPriceSet": money,
        "totalDiscountSet": {"shopMoney": {"amount": "0.00", "currencyCode": "EUR"}},
        "taxable": True,
        "requiresShipping": True,
        "isGiftCard": False,
        "unfulfilledQuantity": 0,
    }


def _transaction(number: int) -> dict[str, Any]:
    return {
        "id": f"gid://shopify/OrderTransaction/{number}",
        "createdAt": "2024-03-01T10:20:30Z",
        "kind": "SALE",
        "status": "SUCCESS",
        "gateway": "bogus",
        "amountSet": {"shopMoney": {"amount": "39.80", "currencyCode": "EUR"}},
        "parentTransaction": None,
        "processedAt": "2024-03-01T10:20:31Z",
        "errorCode": None,
        "test": False,
    }


@pytest.mark.parametrize(
    ("fields", "node"), [(LINE_ITEM_FIELDS, _line_item), (TRANSACTION_FIELDS, _transaction)]
)
async def test_shopify_shaped_nodes_are_read_in_sql(pg, fields, node):
    """The path is for what Shopify sends: nodes shaped as its bulk lines, grouped, are all
    read in SQL (a twin too strict to take them would send every batch to Python)."""
    nodes = [node(number) for number in range(1, 6)]
    created = "createdAt" in nodes[0]
    assert await _check(pg, fields, nodes, created=created) == len(nodes)


# Every value the strategies above draw from, and more, through every twin.
SAMPLES: list[Any] = [
    *GIDS_SAMPLES,
    *AMOUNTS_SAMPLES,
    *TIMES_SAMPLES,
    *WORDS_SAMPLES,
    None, True, False, 0, 1, -1, 7, 1.5, 100.0, -0.0, 10**18 - 1, 10**18, 2**63 - 1, 2**63,
    2**64, -(2**63), "12", "0", "-3", "1.50", "true", "TRUE", {"id": "gid://shopify/X/9"},
    {"id": None}, {"id": 9}, {}, {"x": 1}, [], ["a"], [{"id": "gid://shopify/X/9"}],
]  # fmt: skip


@pytest.mark.parametrize("parse", list(SQL_TWINS), ids=lambda parse: parse.__name__)
async def test_each_twin_reads_each_value_as_python_or_leaves_it(pg, parse):
    reading = Reading("v")
    reading.parsed("value", parse, "v")
    texts = [json.dumps(value) for value in SAMPLES]
    statement = text(
        reading.select("SELECT d.t::jsonb AS v FROM unnest(:texts) AS d(t)")
    ).bindparams(bindparam("texts", type_=ARRAY(Text)))
    async with pg.engine.connect() as connection:
        rows: list[Any] = []
        for one in texts:  # one at a time: a cast that fails leaves that value to Python
            try:
                rows.extend((await connection.execute(statement, {"texts": [one]})).mappings())
            except DBAPIError:
                await connection.rollback()
                rows.append(None)
    read_in_sql = 0
    for value, body, row in zip(SAMPLES, texts, rows, strict=True):
        if row is None or not row["ok"] or has_exponent(body.encode()):
            continue
        read_in_sql += 1
        try:
            expected = parse(loads_json(body.encode()), "value")
        except PayloadError:
            pytest.fail(f"{parse.__name__}: SQL reads {value!r}, which Python refuses")
        assert _same(expected, row["value"]), (value, expected, row["value"])
    assert read_in_sql >= 3  # null, and the shapes Shopify sends


def test_the_fuzzed_declarations_include_the_bulk_children():
    assert {"LINE_ITEM_FIELDS", "TRANSACTION_FIELDS", "REFUND_LINE_ITEM_FIELDS"} <= set(
        DECLARATIONS
    )


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"a": 1e2}', True),
        (b'{"a": 2.5E-3}', True),
        (b'{"a": "2.5"}', False),
        (b'{"e1": 1}', False),
    ],
)
def test_exponents_are_found_in_the_text(body, found):
    assert has_exponent(body) is found
