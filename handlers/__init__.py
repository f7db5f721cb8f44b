"""Topic handlers, normalisers and order-safe upserts. Imports `models` only."""

from handlers.context import EventContext
from handlers.dispatch import handled_topics, process_event
from handlers.normalize import normalize_customer, normalize_order, normalize_product
from handlers.records import tombstone, upsert_records
from handlers.topic_table import HANDLERS

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
