"""Every topic we handle and its handler, in one table. A topic missing here is stored
`ignored`; `webhooks sync` subscribes to these (the compliance ones are declared in the app's
configuration instead).

The data topics come from the resource registry (`handlers.resources`): each resource's
upsert and delete topics, and the topics whose body is one child of a record (declared on its
ChildSet). The topics whose body is neither are listed here.
"""

from __future__ import annotations

from handlers.compliance import record_data_request, redact_customer, redact_shop
from handlers.context import Handler
from handlers.resources import (
    INVENTORY_LEVEL_DELETE_TOPICS,
    INVENTORY_LEVEL_TOPICS,
    WEBHOOK_RESOURCES,
    child_topics,
)
from handlers.topics import (
    child_handler,
    delete_handler,
    disconnect_inventory_level,
    mark_uninstalled,
    record_order_edit,
    record_purchasing_summary,
    upsert_handler,
    upsert_inventory_level,
)


def _data_topics() -> dict[str, Handler]:
    table: dict[str, Handler] = {}
    for resource in WEBHOOK_RESOURCES:
        upsert, delete = upsert_handler(resource), delete_handler(resource)
        table |= dict.fromkeys(resource.upsert_topics, upsert)
        table |= dict.fromkeys(resource.delete_topics, delete)
    # Bodies that are one child of a resource's record (a refund of an order).
    for topic, (_, child) in child_topics().items():
        table[topic] = child_handler(child)
    table |= dict.fromkeys(INVENTORY_LEVEL_TOPICS, upsert_inventory_level)
    table |= dict.fromkeys(INVENTORY_LEVEL_DELETE_TOPICS, disconnect_inventory_level)
    return table


# Bodies that are not the resource's record: an order edit, a purchasing summary.
SPECIAL_HANDLERS: dict[str, Handler] = {
    "orders/edited": record_order_edit,
    "customers/purchasing_summary": record_purchasing_summary,
    "app/uninstalled": mark_uninstalled,
    "customers/data_request": record_data_request,
    "customers/redact": redact_customer,
    "shop/redact": redact_shop,
}

HANDLERS: dict[str, Handler] = _data_topics() | SPECIAL_HANDLERS
