"""The simulator's live trading (``make demo``): every step changes the store through its own
methods and so emits the webhooks Shopify sends for that change."""

from __future__ import annotations

from collections import Counter

from tests.fakeshop import FakeStore
from tests.fakeshop.activity import WEIGHTS, Activity

# The topics each kind of step emits, at least.
EMITS = {
    "order": {"orders/create"},
    "payment": {"order_transactions/create", "orders/updated"},
    "fulfillment": {"fulfillments/create", "orders/updated"},
    "refund": {"refunds/create", "order_transactions/create", "orders/updated"},
    "price": {"products/update"},
    "stock": {"inventory_levels/update"},
}


def test_every_kind_of_step_changes_the_store_and_emits_its_topics() -> None:
    store = FakeStore("activity.myshopify.com", seed=3, customers=20, products=15, orders=60)
    store.webhooks.enable()
    activity = Activity(store, seed=3)
    orders_before = store.orders.total
    seen: Counter[str] = Counter()
    for _ in range(300):
        emitted_before = len(store.webhooks.log)
        kind = activity.step()
        seen[kind] += 1
        topics = {event.topic for event in store.webhooks.log[emitted_before:]}
        assert EMITS[kind] <= topics, (kind, topics)
    assert set(seen) == set(WEIGHTS)
    assert store.orders.total == orders_before + seen["order"]
    assert activity.done == dict(seen)
