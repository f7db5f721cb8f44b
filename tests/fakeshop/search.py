"""The subset of Shopify's search syntax (the ``query:`` argument) that the simulator filters
on: ranges over ``updated_at``, ``created_at`` and ``id``. Anything else is ignored with a
warning in ``extensions.search``, as Shopify does for fields it does not know.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

# Fields whose generated values rise with the record index, so a filter on them narrows an
# index range by binary search instead of scanning.
RANGE_FIELDS = {"updated_at": "updated", "created_at": "created", "processed_at": "created"}
_TERM = re.compile(r"""(?:[^\s'"]+|'[^']*'|"[^"]*")+""")
_COMPARISON = re.compile(r"^(>=|<=|>|<|=)?(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Bound:
    """``lo <= value < hi`` over integers (epoch seconds or numeric ids)."""

    lo: int | None = None
    hi: int | None = None

    def contains(self, value: int) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value < self.hi)

    def narrow(self, other: Bound) -> Bound:
        lo = max((b for b in (self.lo, other.lo) if b is not None), default=None)
        hi = min((b for b in (self.hi, other.hi) if b is not None), default=None)
        return Bound(lo, hi)


@dataclass
class Search:
    """A parsed ``query:`` string."""

    text: str = ""
    # "created" / "updated" (timestamps) or "id" (numeric id) -> allowed range.
    bounds: dict[str, Bound] = field(default_factory=dict)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def matches(self, created: int, updated: int, numeric_id: int) -> bool:
        values = {"created": created, "updated": updated, "id": numeric_id}
        return all(bound.contains(values[name]) for name, bound in self.bounds.items())


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_time(value: str, now: float | None = None) -> float:
    """An ISO date or datetime (quoted or not; naive means UTC) as epoch seconds."""
    text = _unquote(value)
    if text.lower() == "now":
        return now if now is not None else datetime.now(UTC).timestamp()
    parsed = datetime.fromisoformat(text if "T" in text else text.replace(" ", "T", 1))
    if parsed.tzinfo is None:
        # Shopify reads naive values in the shop's timezone; simulated shops run on UTC.
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _bound(op: str, value: float) -> Bound:
    if op == ">=":
        return Bound(lo=math.ceil(value))
    if op == ">":
        return Bound(lo=math.floor(value) + 1)
    if op == "<=":
        return Bound(hi=math.floor(value) + 1)
    if op == "<":
        return Bound(hi=math.ceil(value))
    return Bound(lo=math.ceil(value), hi=math.floor(value) + 1)


def parse_search(text: str | None, now: float | None = None) -> Search:
    """Parse ``text``; ``now`` (epoch seconds) is what ``updated_at:<now`` means."""
    search = Search(text=text or "")
    if not text:
        return search
    for term in _TERM.findall(text):
        if term.upper() == "AND":
            continue
        if term.upper() == "OR" or term.startswith("-") or ":" not in term:
            search.warnings.append(
                {"field": term, "message": "fakeshop: only AND-ed field filters are simulated"}
            )
            continue
        name, _, raw = term.partition(":")
        name = name.lower()
        match = _COMPARISON.match(raw)
        op, value = (match.group(1) or "=", match.group(2)) if match else ("=", raw)
        if name in RANGE_FIELDS:
            key = RANGE_FIELDS[name]
            try:
                bound = _bound(op, parse_time(value, now))
            except ValueError:
                search.warnings.append(
                    {
                        "field": name,
                        "message": f"Input `{_unquote(value)}` is not an accepted value.",
                    }
                )
                continue
        elif name == "id":
            try:
                bound = _bound(op, float(_unquote(value)))
            except ValueError:
                search.warnings.append(
                    {
                        "field": name,
                        "message": f"Input `{_unquote(value)}` is not an accepted value.",
                    }
                )
                continue
            key = "id"
        else:
            search.warnings.append(
                {"field": name, "message": "Invalid search field for this query."}
            )
            continue
        search.bounds[key] = search.bounds.get(key, Bound()).narrow(bound)
    return search
