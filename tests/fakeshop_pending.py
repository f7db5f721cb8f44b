"""What reconcile needs from the simulator that tests/fakeshop does not serve yet, installed
by tests/conftest.py until it does (then this module goes): QueryRoot.productVariantsCount,
a field of the real 2026-10 schema (`productVariantsCount(query:, limit: 10000)`, `Count`),
counted over exactly what the simulator's own root `productVariants` lists."""

from __future__ import annotations

from typing import Any

from handlers.normalize import parse_shopify_id
from tests.fakeshop import api
from tests.fakeshop.search import parse_search, parse_time


def product_variants_count(
    info: Any, query: str | None = None, limit: int | None = 10000, **_ignored: Any
) -> dict[str, Any]:
    """The variants of live products matching `query`, capped at `limit` (null: exact) like
    the simulator's other counts."""
    context = info.context
    search = parse_search(query, context.store.clock.now().timestamp())
    count = sum(
        1
        for variant in context.store.product_children.all_variants(context.view("products"))
        if search.matches(
            int(parse_time(variant["createdAt"])),
            int(parse_time(variant["updatedAt"])),
            parse_shopify_id(variant["id"]),
        )
    )
    if limit is not None and count > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": count, "precision": "EXACT"}


PENDING: dict[str, Any] = {"productVariantsCount": product_variants_count}


def missing_root_fields() -> dict[str, Any]:
    """The pending root fields the simulator still lacks."""
    return {name: resolve for name, resolve in PENDING.items() if name not in api.QUERY_ROOT}
