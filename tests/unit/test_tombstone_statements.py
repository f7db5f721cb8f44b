"""The combined tombstone statements (`handlers.children._tombstones_statement`) are built once
per shape and kept in a cache that cannot grow without end."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

from handlers import children
from handlers.resources import RESOURCES


def test_the_statement_cache_is_bounded_and_its_statements_survive_a_clear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(children, "_TOMBSTONE_STATEMENTS", {})
    monkeypatch.setattr(children, "_MAX_TOMBSTONE_STATEMENTS", 2)
    sets = [
        child
        for name in ("orders", "products", "customers")
        for child in RESOURCES[name].child_sets
    ]
    shapes = [[child] for child in sets[:4]]
    assert len(shapes) == 4
    built = [children._tombstones_statement(shape) for shape in shapes]
    assert len(children._TOMBSTONE_STATEMENTS) <= 2
    # The same shape again is the cached statement while it is held...
    assert children._tombstones_statement(shapes[-1]) is built[-1]
    # ...and an equal one once the cache let it go.
    again = children._tombstones_statement(shapes[0])
    dialect = postgresql.dialect()
    assert str(again.compile(dialect=dialect)) == str(built[0].compile(dialect=dialect))
    assert f"UPDATE {sets[0].table} " in str(again.compile(dialect=dialect))
