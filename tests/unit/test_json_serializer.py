"""JSONB text on PostgreSQL comes from orjson; whatever orjson would write differently or
refuse goes to json.dumps, so every value is stored as json.dumps stored it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.engine import dumps_json
from receiver.samples import sample_payload

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_any_json_value_reads_back_as_json_dumps_would_have_it(value: Any) -> None:
    assert json.loads(dumps_json(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    "value",
    [
        {"big": 2**70},  # beyond 64 bits: orjson refuses
        {"lone": "\ud800"},  # an unpaired surrogate: orjson refuses
        {1: "non-string key"},  # json.dumps writes "1"
    ],
)
def test_what_orjson_refuses_is_written_by_json_dumps(value: Any) -> None:
    assert dumps_json(value) == json.dumps(value)


def test_a_webhook_payload_round_trips() -> None:
    payload = sample_payload("orders/create")
    assert json.loads(dumps_json(payload)) == payload


def test_values_json_dumps_cannot_write_still_fail() -> None:
    with pytest.raises(TypeError):
        dumps_json({"when": object()})
