"""How webhook bodies and bulk lines are read: the value, and whether the body's own text can
be stored as the payload (PostgreSQL's jsonb reads it as the same value)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from handlers.json_text import loads_json, read_json


@pytest.mark.parametrize(
    ("number", "plain"),
    [
        ("12.50", True),
        ("1e5", True),
        ("1.5E+10", True),
        ("2.5e-7", True),
        ("1e-99", True),
        ("1e-400", False),
        ("1E-400", False),
        ("3.0e-0400", False),
        ("7e-16383", False),
        ("4503599627370497", True),
        ("18446744073709551616", False),  # past 64 bits: json.loads keeps it exact
        ("-92233720368547758090", False),
    ],
)
def test_a_body_is_stored_as_sent_only_when_jsonb_reads_it_alike(number: str, plain: bool) -> None:
    body = f'{{"id": 1, "note": "code e-000 in words", "x": {number}}}'.encode()
    value, as_sent = read_json(body)
    assert as_sent is plain
    expected = json.loads(body, parse_float=Decimal)["x"]
    if plain or ("." not in number and "e" not in number.lower()):
        # What is stored as sent is what was read; what is not, reads exactly where it can.
        assert Decimal(str(value["x"])) == expected
    assert loads_json(body) == value


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"x": 1e999}', "out of range"),
        (b'{"x": 3.0E+0400}', "out of range"),
        (b'{"x": NaN}', "NaN is not valid JSON"),
        (b"{", "Expecting property name"),
        (b'{"x": 1}}', "Extra data"),
    ],
)
def test_invalid_and_non_finite_bodies_are_refused_alike(body: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        read_json(body)
    with pytest.raises(ValueError, match=error):
        loads_json(body)
