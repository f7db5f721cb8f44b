"""Topic handlers, normalisers and order-safe upserts. Imports `models` only."""

# Importing the topic modules registers their handlers.
from handlers import compliance, topics  # noqa: F401
from handlers.dispatch import HANDLERS, EventContext, handled_topics, process_event
from handlers.normalize import normalize_customer, normalize_order, normalize_product
from handlers.records import tombstone, upsert_records

__all__ = [
    "HANDLERS",
    "EventContext",
    "handled_topics",
    "normalize_customer",
    "normalize_order",
    "normalize_product",
    "process_event",
    "tombstone",
    "upsert_records",
]
