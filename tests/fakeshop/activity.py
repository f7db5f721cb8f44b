"""A store that keeps trading: random, plausible changes made through the store's own methods,
so each one emits the webhooks Shopify would send for it (``make demo``'s live traffic).

Each step is one of: a new order (orders/create), a payment captured (order_transactions/create,
orders/updated), a refund (refunds/create, order_transactions/create, orders/updated), a
fulfillment (fulfillments/create, orders/updated), a price change (products/update) or a stock
change (inventory_levels/update). Steps that do not fit the record drawn (an order with nothing
left to fulfil) fall through to a new order, so every step changes something.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from .children import children_of

if TYPE_CHECKING:
    from .store import FakeStore

# Relative weights: most of a store's traffic is new orders and their payments.
WEIGHTS = {
    "order": 45,
    "payment": 15,
    "fulfillment": 15,
    "refund": 5,
    "price": 5,
    "stock": 15,
}


class Activity:
    def __init__(self, store: FakeStore, seed: int = 0) -> None:
        self.store = store
        self.random = random.Random(seed)
        self.done: dict[str, int] = dict.fromkeys(WEIGHTS, 0)
        self._steps: dict[str, Callable[[], bool]] = {
            "order": self._order,
            "payment": self._payment,
            "fulfillment": self._fulfillment,
            "refund": self._refund,
            "price": self._price,
            "stock": self._stock,
        }

    def step(self) -> str:
        """Make one change; returns its kind."""
        kind = self.random.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        if not self._steps[kind]():
            kind = "order"
            self._order()
        self.done[kind] += 1
        return kind

    # -- the kinds --

    def _live(self, resource: str, recent: int) -> int | None:
        """A live record among the ``recent`` newest of a resource."""
        source = self.store.resource(resource)
        total = source.total
        for _ in range(10):
            index = self.random.randrange(max(0, total - recent), total) if total else None
            if index is not None and source.node(index) is not None:
                return index
        return None

    def _order(self) -> bool:
        self.store.create_order()
        return True

    def _payment(self) -> bool:
        index = self._live("orders", 200)
        if index is None:
            return False
        node = self.store.orders.node(index)
        if node is None or node.get("displayFinancialStatus") not in ("PENDING", "AUTHORIZED"):
            return False
        # The capture pays the order: the status is set first, so the orders/updated the
        # transaction emits carries it.
        self.store.orders.update(index, financial_status="PAID")
        self.store.add_transaction(index, "CAPTURE")
        return True

    def _fulfillment(self) -> bool:
        index = self._live("orders", 200)
        if index is None:
            return False
        node = self.store.orders.node(index)
        lines = children_of(node, "lineItems") if node is not None else []
        if not any(line.get("unfulfilledQuantity", 0) > 0 for line in lines):
            return False
        self.store.add_fulfillment(index)
        return True

    def _refund(self) -> bool:
        index = self._live("orders", 500)
        if index is None:
            return False
        node = self.store.orders.node(index)
        if node is None or node.get("displayFinancialStatus") not in ("PAID", "PARTIALLY_PAID"):
            return False
        if not children_of(node, "lineItems"):
            return False
        self.store.add_refund(index, note="Changed their mind")
        return True

    def _variant(self) -> tuple[int, int] | None:
        """A live product and the position of one of its variants."""
        index = self._live("products", self.store.products.total)
        if index is None:
            return None
        node = self.store.products.node(index)
        variants = children_of(node, "variants") if node is not None else []
        if not variants:
            return None
        return index, self.random.randrange(len(variants))

    def _price(self) -> bool:
        found = self._variant()
        if found is None:
            return False
        cents = self.random.randrange(500, 20_000)
        self.store.update_variant(*found, price=f"{cents // 100}.{cents % 100:02d}")
        return True

    def _stock(self) -> bool:
        found = self._variant()
        if found is None:
            return False
        self.store.set_inventory(*found, 0, available=self.random.randrange(0, 40))
        return True
