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
# The functions allowed to compare by value, by file, and why. A new comparison elsewhere, or
# in another function, fails; so does an allowance whose function no longer compares so.
ALLOWED = {
    # Given either a correlated Tenant.id (the reconcile sweep) or a store's id (the
    # watchdog); a store has a handful of sync jobs, so no plan can read many.
    ("backfill/reconcile.py", "finished_sync"),
    # The admin overview's figures for a list of stores at once (`tenant_id IN (...)`): one
    # single-table aggregate per figure, which reads each store's rows once at most, and no
    # join a wrong estimate could turn into a read per row.
    ("receiver/overview.py", "_revenue"),
    ("receiver/overview.py", "_webhooks"),
    ("receiver/overview.py", "_dead_events"),
    ("receiver/overview.py", "_latest_syncs"),
}
# Methods of a column that compare it with values (`is_(None)` tests for null and passes).
_VALUE_METHODS = {"in_", "not_in", "is_", "is_not", "is_distinct_from", "is_not_distinct_from"}


def _is_store_column(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "tenant_id"


def _is_column(node: ast.expr) -> bool:
    """A mapped class's attribute (`Order.tenant_id`, `Tenant.id`) or a table's column
    (`table.c.tenant_id`, `store.c.id`): what SQLAlchemy compares as a column. (An alias
    bound to a lowercase name reads as a value: `self.tenant_id` is one.)"""
    if not isinstance(node, ast.Attribute):
        return False
    base = node.value
    if isinstance(base, ast.Name) and base.id[:1].isupper():
        return True
    return isinstance(base, ast.Attribute) and base.attr == "c"


def _by_value(node: ast.expr) -> bool:
    """`<something>.tenant_id == <not a column>` (either way round, or `!=`), or
    `<something>.tenant_id.in_(...)` and the other comparing methods (but `is_(None)`)."""
    if isinstance(node, ast.Compare):
        if len(node.ops) != 1 or not isinstance(node.ops[0], ast.Eq | ast.NotEq):
            return False
        left, right = node.left, node.comparators[0]
        return (_is_store_column(left) and not _is_column(right)) or (
            _is_store_column(right) and not _is_column(left)
        )
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        method = node.func
        if method.attr not in _VALUE_METHODS or not _is_store_column(method.value):
            return False
        null = [isinstance(arg, ast.Constant) and arg.value is None for arg in node.args]
        return not (method.attr in {"is_", "is_not"} and all(null))
    return False


def by_value_comparisons() -> dict[tuple[str, str], list[str]]:
    """(file, enclosing function) -> each comparison by value there, as `line: source`."""
    found: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name in EXEMPT_FILES or "/migrations/" in name:
                continue
            tree = ast.parse(path.read_text(), name)
            for function in [tree, *ast.walk(tree)]:
                if not isinstance(function, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                owner = getattr(function, "name", "<module>")
                for node in _own_nodes(function):
                    if _by_value(node):
                        place = found.setdefault((name, owner), [])
                        place.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of a function (or module) outside the functions it defines."""
    nodes, pending = [], list(ast.iter_child_nodes(scope))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        nodes.append(node)
        pending.extend(ast.iter_child_nodes(node))
    return nodes


def test_every_lookup_of_a_stores_rows_goes_through_of_store() -> None:
    unexpected = {
        f"{file}:{line}"
        for (file, function), places in by_value_comparisons().items()
        if (file, function) not in ALLOWED
        for line in places
    }
    assert not unexpected, (
        "compare a table's tenant_id with of_store(column, tenant) (models/tenancy.py), not "
        "with the store's value; a comparison that must stay by value goes in ALLOWED with "
        f"its reason: {sorted(unexpected)}"
    )


def test_each_allowed_function_still_compares_by_value() -> None:
    # An allowance outliving its code would let the next comparison in that function through.
    assert ALLOWED - set(by_value_comparisons()) == set()


def test_the_check_sees_comparisons_by_value_and_lets_columns_pass() -> None:
    def flagged(source: str) -> bool:
        return _by_value(ast.parse(source, mode="eval").body)

    assert flagged("Order.tenant_id == tenant_id")
    assert flagged("table.c.tenant_id == self.tenant_id")
    assert flagged("store_id != model.tenant_id")
    assert flagged("Order.tenant_id.in_(tenant_ids)")
    assert flagged("Order.tenant_id.is_(tenant_id)")
    assert not flagged("Order.tenant_id == OrderLineItem.tenant_id")
    assert not flagged("ReconcileRun.tenant_id == Tenant.id")
    assert not flagged("of_parent.c.tenant_id == store.c.id")
    assert not flagged("Order.shopify_id == shopify_id")
    assert not flagged("Order.tenant_id.is_(None)")
