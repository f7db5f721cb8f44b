"""A lookup of a store's rows compares `tenant_id` through `models.tenancy.of_store`, never
with the store's value: checked here over the service's code, so a new query cannot forget it.

Given the value, PostgreSQL reads the table's statistics for it, and a store they predate
(a shared database analysed before the store's first rows, a backfill filling a table faster
than autovacuum analyses it) counts as holding no rows. Plans were then chosen that read the
store's every row once per row looked up: 399,960,014 variants for one products/delete
(`tests/integration/test_tombstone_reads.py`), 57 million orders for one store page
(`test_store_stats_reads.py`). A comparison of two columns (a join, a correlated subquery)
is not a lookup by value and passes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("receiver", "handlers", "backfill", "models")
# Where the rule itself is written (`of_store`).
EXEMPT_FILES = {"models/tenancy.py"}
# (file, comparison): why each compares by value.
ALLOWED = {
    # Given either a correlated Tenant.id (the reconcile sweep) or a store's id (the
    # watchdog); a store has a handful of sync jobs, so no plan can read many.
    ("backfill/reconcile.py", "SyncJob.tenant_id == tenant_id"),
}


def _is_column(node: ast.expr) -> bool:
    """A mapped class's attribute (`Order.tenant_id`, `Tenant.id`) or a table's column
    (`table.c.tenant_id`, `store.c.id`): what SQLAlchemy compares as a column."""
    if not isinstance(node, ast.Attribute):
        return False
    base = node.value
    if isinstance(base, ast.Name) and base.id[:1].isupper():
        return True
    return isinstance(base, ast.Attribute) and base.attr == "c"


def _by_value(node: ast.Compare) -> bool:
    """`<something>.tenant_id == <not a column>` (or the other way round)."""
    if len(node.ops) != 1 or not isinstance(node.ops[0], ast.Eq | ast.NotEq):
        return False
    left, right = node.left, node.comparators[0]
    for store_side, other in ((left, right), (right, left)):
        if isinstance(store_side, ast.Attribute) and store_side.attr == "tenant_id":
            return not _is_column(other)
    return False


def by_value_comparisons() -> set[tuple[str, str]]:
    found = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in EXEMPT_FILES or "/migrations/" in name:
                continue
            for node in ast.walk(ast.parse(path.read_text(), name)):
                if isinstance(node, ast.Compare) and _by_value(node):
                    found.add((name, ast.unparse(node)))
    return found


def test_every_lookup_of_a_stores_rows_goes_through_of_store() -> None:
    unexpected = sorted(by_value_comparisons() - ALLOWED)
    assert unexpected == [], (
        "compare tenant_id with of_store(column, tenant) (models/tenancy.py), not with the "
        f"store's value: {unexpected}"
    )


def test_each_allowed_comparison_is_still_there() -> None:
    # An allowance outliving its code would let the next comparison of that shape through.
    assert by_value_comparisons() >= ALLOWED


def test_the_check_sees_comparisons_by_value_and_lets_columns_pass() -> None:
    def flagged(source: str) -> bool:
        node = ast.parse(source, mode="eval").body
        return isinstance(node, ast.Compare) and _by_value(node)

    assert flagged("Order.tenant_id == tenant_id")
    assert flagged("table.c.tenant_id == self.tenant_id")
    assert flagged("store_id != model.tenant_id")
    assert not flagged("Order.tenant_id == OrderLineItem.tenant_id")
    assert not flagged("ReconcileRun.tenant_id == Tenant.id")
    assert not flagged("of_parent.c.tenant_id == store.c.id")
    assert not flagged("Order.shopify_id == shopify_id")
