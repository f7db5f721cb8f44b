"""JSON text as the service reads it, from Shopify (webhook bodies, bulk result lines)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


# A run of 19 digits may be an integer beyond 64 bits, which orjson reads as a float: such a
# body (rare: Shopify's ids have 13-16 digits) takes json.loads, which keeps it exact.
# (Found as 19 zeros once every digit reads as one: a regex search for a run costs as much
# as parsing the body.) The same pass writes an exponent's sign and letter one way.
_NUMBER_MARKS = bytes.maketrans(b"123456789E+", b"000000000e-")
_LONG_DIGITS = b"0" * 19


# An exponent of three digits or more: orjson reads 1e-400 as 0.0, where PostgreSQL's jsonb
# keeps it exactly (or refuses it past 1e-16383): a few such numbers would store a value that
# prints as megabytes. Such a body is parsed, but not stored as its own text. (In JSON an
# exponent follows a digit; one search with a literal prefix costs a sixth of six `in` tests.)
_LONG_EXPONENT = re.compile(rb"0e-?000")


def loads_json(body: bytes) -> Any:
    """JSON text parsed (`read_json`'s value, without the test only storing the text needs:
    a bulk result line is parsed, never stored as sent)."""
    value = _orjson_loads(body, body.translate(_NUMBER_MARKS))
    return _strict_loads(body) if value is _UNREAD else value


def read_json(body: bytes) -> tuple[Any, bool]:
    """JSON text parsed, and whether the text is plain UTF-8 JSON that PostgreSQL's jsonb
    reads as the same value (orjson read it, and no number has a long exponent). orjson is
    about six times faster than json.loads on a webhook body, for the texts both read alike;
    the rest (a byte order mark, lone surrogate escapes, integers beyond 64 bits, other
    encodings, invalid JSON) take json.loads, whose reading and errors stay the rule."""
    marks = body.translate(_NUMBER_MARKS)
    value = _orjson_loads(body, marks)
    if value is _UNREAD:
        return _strict_loads(body), False
    return value, _LONG_EXPONENT.search(marks) is None


_UNREAD = object()


def _orjson_loads(body: bytes, marks: bytes) -> Any:
    if _LONG_DIGITS in marks:
        return _UNREAD
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNREAD


def _strict_loads(body: bytes) -> Any:
    return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
