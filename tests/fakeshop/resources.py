"""One resource (customers, products or orders) of a fake store: lazily generated records,
a small overlay of changes made by tests, and ordered, filtered iteration for paging and bulk
export.

Untouched record ``i`` occupies time slot ``i`` of the store's history, so its ``createdAt``
and ``updatedAt`` never decrease with ``i``: a ``updated_at:>=X`` filter binary-searches its
first index. Records a test created, changed or deleted ("special" records) are few and are
checked one by one.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from .clock import Clock
from .data import Node, draw, epoch, gid, iso
from .search import Search, parse_time

# Turns keyword arguments of update_*/create_* into GraphQL fields: snake_case names the
# tests find natural map to one or more camelCase fields (value -> {field: value}).
Alias = Callable[[Any], dict[str, Any]]
Builder = Callable[[int, int, int], Node]
# A place in a sort order: an index (id order) or (updatedAt, index) (UPDATED_AT order).
Position = int | tuple[int, int]

_CAMEL = re.compile(r"_([a-z])")


def step(position: Position, delta: int) -> Position:
    """The position ``delta`` indexes away (same updatedAt): with integer indexes, "at or
    past p" is "strictly past step(p, -1)"."""
    if isinstance(position, tuple):
        return (position[0], position[1] + delta)
    return position + delta


def camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


@dataclass(frozen=True)
class ResourceView:
    """An immutable snapshot of a resource: what one request or one bulk export sees."""

    resource: Resource
    total: int
    overrides: dict[int, dict[str, Any]]
    times: dict[int, tuple[int, int]]
    deleted: frozenset[int]
    # Every index whose record is not simply generated (changed, created or deleted), sorted.
    special: tuple[int, ...]
    # Facts derived from this snapshot alone, kept for the requests that read it again (what a
    # line item records of its product): a change makes a new snapshot, so none goes stale.
    derived: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    # -- single records --

    def exists(self, index: int) -> bool:
        return 0 <= index < self.total and index not in self.deleted

    def timestamps(self, index: int) -> tuple[int, int]:
        stamp = self.times.get(index)
        return stamp if stamp is not None else self.resource.generated_times(index)

    def node(self, index: int) -> Node | None:
        """Record ``index`` as the GraphQL API returns it, or None if absent or deleted."""
        if not self.exists(index):
            return None
        created, updated = self.timestamps(index)
        node = self.resource.build(index, created, updated)
        if self.overrides:
            override = self.overrides.get(index)
            if override:
                node.update(override)
        return node

    def index_of(self, numeric_id: int) -> int | None:
        index = numeric_id - self.resource.base_id
        return index if self.exists(index) else None

    # -- filtered, ordered iteration --

    def _generated_range(self, search: Search) -> tuple[int, int]:
        resource = self.resource
        lo, hi = 0, resource.generated
        for name, bound in search.bounds.items():
            if name == "id":
                if bound.lo is not None:
                    lo = max(lo, bound.lo - resource.base_id)
                if bound.hi is not None:
                    hi = min(hi, bound.hi - resource.base_id)
                continue
            pick = 0 if name == "created" else 1
            if bound.lo is not None:
                lo = max(lo, resource.first_index_at_or_after(bound.lo, pick))
            if bound.hi is not None:
                hi = min(hi, resource.first_index_at_or_after(bound.hi, pick))
        return lo, max(lo, hi)

    def _special_matches(self, search: Search) -> list[int]:
        base = self.resource.base_id
        matches = []
        for index in self.special:
            if index in self.deleted or index >= self.total:
                continue
            created, updated = self.timestamps(index)
            if search.matches(created, updated, base + index):
                matches.append(index)
        return matches

    def position(self, index: int, by_updated: bool = False) -> Position:
        """Where record ``index`` sits in a sort: its index in id order (which CREATED_AT and
        PROCESSED_AT equal for these records), ``(updatedAt, index)`` under UPDATED_AT."""
        return (self.timestamps(index)[1], index) if by_updated else index

    def iterate(
        self,
        search: Search,
        after: Position | None = None,
        descending: bool = False,
        by_updated: bool = False,
    ) -> Iterator[int]:
        """Indexes of live records matching ``search`` in id order (or ``(updatedAt, id)``
        order with ``by_updated``), strictly past the position ``after``."""
        if by_updated:
            return self._iterate_by_updated(search, after, descending)
        assert after is None or isinstance(after, int)
        lo, hi = self._generated_range(search)
        special = set(self.special)
        specials = self._special_matches(search)
        if not descending:
            start = lo if after is None else max(lo, after + 1)
            generated: Iterator[int] = (i for i in range(start, hi) if i not in special)
            extra = (i for i in specials if after is None or i > after)
            return heapq.merge(generated, extra)
        stop = hi if after is None else min(hi, after)
        generated = (i for i in range(stop - 1, lo - 1, -1) if i not in special)
        extra = (i for i in reversed(specials) if after is None or i < after)
        return heapq.merge(generated, extra, reverse=True)

    def _iterate_by_updated(
        self, search: Search, after: Position | None, descending: bool
    ) -> Iterator[int]:
        # Untouched records' updatedAt never decreases with the index, so they are already in
        # (updatedAt, index) order and a position is found by binary search; only the few
        # special records (changed, created) are sorted, and the two streams are merged.
        assert after is None or isinstance(after, tuple)
        lo, hi = self._generated_range(search)
        special = set(self.special)

        def key(index: int) -> tuple[int, int]:
            return (self.timestamps(index)[1], index)

        specials = sorted(self._special_matches(search), key=key)
        if not descending:
            start = lo if after is None else max(lo, self.resource.first_index_after(after))
            generated: Iterator[int] = (i for i in range(start, hi) if i not in special)
            extra = (i for i in specials if after is None or key(i) > after)
            return heapq.merge(generated, extra, key=key)
        # The first generated index at or past ``after`` is the first one past the position
        # just before it (indexes are integers: nothing sits between (u, i - 1) and (u, i)).
        stop = hi if after is None else min(hi, self.resource.first_index_after(step(after, -1)))
        generated = (i for i in range(stop - 1, lo - 1, -1) if i not in special)
        extra = (i for i in reversed(specials) if after is None or key(i) < after)
        return heapq.merge(generated, extra, key=key, reverse=True)

    def count(self, search: Search) -> int:
        lo, hi = self._generated_range(search)
        shadowed = bisect_left(self.special, hi) - bisect_left(self.special, lo)
        return (hi - lo) - shadowed + len(self._special_matches(search))

    def page(
        self,
        search: Search,
        size: int,
        after: Position | None,
        descending: bool,
        by_updated: bool = False,
    ) -> tuple[list[int], bool]:
        """Up to ``size`` indexes past ``after``, and whether more follow."""
        taken = list(islice(self.iterate(search, after, descending, by_updated), size + 1))
        return taken[:size], len(taken) > size


class Resource:
    """Live state of one resource; thread-safe (tests mutate while the server reads)."""

    def __init__(
        self,
        *,
        typename: str,
        key: int,
        base_id: int,
        count: int,
        history: tuple[int, int],
        build: Callable[[Resource, int, int, int], Node],
        fields: frozenset[str],
        aliases: dict[str, Alias],
        clock: Clock,
    ) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        self.typename = typename
        self.key = key
        self.base_id = base_id
        self.generated = count
        self.history_start, history_end = history
        self.history_span = max(1, history_end - self.history_start)
        self._build = build
        self.fields = fields
        self.aliases = aliases
        self.clock = clock
        self._lock = threading.RLock()
        self._total = count
        self._overrides: dict[int, dict[str, Any]] = {}
        self._times: dict[int, tuple[int, int]] = {}
        self._deleted: set[int] = set()
        self._version = 0
        self._view: ResourceView | None = None

    # -- generation --

    def build(self, index: int, created: int, updated: int) -> Node:
        return self._build(self, index, created, updated)

    def numeric_id(self, index: int) -> int:
        return self.base_id + index

    def gid(self, index: int) -> str:
        return gid(self.typename, self.base_id + index)

    def generated_times(self, index: int) -> tuple[int, int]:
        """(createdAt, updatedAt) of untouched record ``index``, both within its time slot,
        so both sequences are non-decreasing in ``index``."""
        n = max(1, self.generated)
        slot_start = self.history_start + (index * self.history_span) // n
        slot_end = self.history_start + ((index + 1) * self.history_span) // n
        value = draw(self.key, index, 0)
        width = slot_end - slot_start
        if width <= 0:
            return slot_start, slot_start
        created = slot_start + (value & 0xFFFFFFFF) % (width // 2 + 1)
        updated = created + (value >> 32) % (slot_end - created)
        return created, updated

    def first_index_after(self, position: tuple[int, int]) -> int:
        """The first generated index whose (updatedAt, index) is past ``position``: that pair
        rises strictly with the index, so this is a binary search."""
        lo, hi = 0, self.generated
        while lo < hi:
            mid = (lo + hi) // 2
            if (self.generated_times(mid)[1], mid) <= position:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def first_index_at_or_after(self, timestamp: int, pick: int) -> int:
        """The first generated index whose created (0) or updated (1) time is >= timestamp."""
        lo, hi = 0, self.generated
        while lo < hi:
            mid = (lo + hi) // 2
            if self.generated_times(mid)[pick] < timestamp:
                lo = mid + 1
            else:
                hi = mid
        return lo

    # -- snapshots --

    def view(self) -> ResourceView:
        with self._lock:
            if self._view is None:
                special = sorted(set(self._overrides) | set(self._times) | self._deleted)
                self._view = ResourceView(
                    resource=self,
                    total=self._total,
                    overrides={i: dict(v) for i, v in self._overrides.items()},
                    times=dict(self._times),
                    deleted=frozenset(self._deleted),
                    special=tuple(special),
                )
            return self._view

    def is_live(self, index: int) -> bool:
        # Lock-free on purpose: called for every generated order, and a set membership test
        # and an int read are atomic; a racing delete is seen by the next request.
        return 0 <= index < self._total and index not in self._deleted

    @property
    def count(self) -> int:
        """Live records (generated plus created, minus deleted)."""
        with self._lock:
            return self._total - len(self._deleted)

    @property
    def total(self) -> int:
        """Indexes in use, deleted ones included."""
        with self._lock:
            return self._total

    def node(self, index: int) -> Node | None:
        return self.view().node(index)

    # -- mutations --

    def _translate(self, fields: dict[str, Any]) -> dict[str, Any]:
        translated: dict[str, Any] = {}
        for name, value in fields.items():
            if name in self.aliases:
                translated.update(self.aliases[name](value))
                continue
            field = name if name in self.fields else camel(name)
            if field not in self.fields:
                raise ValueError(f"{self.typename} has no field {name!r} in the Admin API schema")
            translated[field] = value
        return translated

    def _stamp(self, value: Any) -> int:
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(parse_time(value))
        return epoch(value)

    def _changed(self) -> None:
        self._version += 1
        self._view = None

    def update(self, index: int, **fields: Any) -> Node:
        """Change record ``index``; ``updatedAt`` becomes the store clock's now unless given."""
        with self._lock:
            view = self.view()
            if not view.exists(index):
                raise KeyError(f"no live {self.typename} at index {index}")
            translated = self._translate(fields)
            created, _ = view.timestamps(index)
            if "createdAt" in translated:
                created = self._stamp(translated["createdAt"])
            updated = (
                self._stamp(translated["updatedAt"])
                if "updatedAt" in translated
                else max(created, epoch(self.clock.now()))
            )
            translated["createdAt"] = iso(created)
            translated["updatedAt"] = iso(updated)
            self._overrides.setdefault(index, {}).update(translated)
            self._times[index] = (created, updated)
            self._changed()
        node = self.node(index)
        assert node is not None
        return node

    def set_hidden(self, index: int, key: str, value: Any, *, touch: bool) -> None:
        """Store child state (``_orderBundle``, ``_variantSpecs``, ...) in the overlay of
        record ``index``; ``touch`` also moves its ``updatedAt`` to now, as a change to its
        children does on Shopify. The value is replaced whole, never mutated: a snapshot
        taken before keeps the old one."""
        with self._lock:
            view = self.view()
            if not view.exists(index):
                raise KeyError(f"no live {self.typename} at index {index}")
            override = self._overrides.setdefault(index, {})
            override[key] = value
            if touch:
                created, _ = view.timestamps(index)
                updated = max(created, epoch(self.clock.now()))
                override["createdAt"] = iso(created)
                override["updatedAt"] = iso(updated)
                self._times[index] = (created, updated)
            self._changed()

    def create(self, **fields: Any) -> int:
        """Append a new record (generated like the others, stamped now); returns its index."""
        with self._lock:
            index = self._total
            self._total += 1
            now = epoch(self.clock.now())
            self._times[index] = (now, now)
            self._overrides[index] = {}
            self._changed()
        if fields:
            self.update(index, **fields)
        return index

    def delete(self, index: int) -> None:
        with self._lock:
            if not self.view().exists(index):
                raise KeyError(f"no live {self.typename} at index {index}")
            self._deleted.add(index)
            self._changed()
