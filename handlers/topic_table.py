"""Every topic we handle and its handler, in one table. A topic missing here is stored
`ignored`; `webhooks sync` subscribes to these (the compliance ones are declared in the app's
configuration instead).

The data topics come from the resource registry (`handlers.resources`): each resource's
upsert and delete topics. The topics whose body is not the resource's record are listed here.
"""

from __future__ import annotations

from handlers.compliance import record_data_request, redact_customer, redact_shop
from handlers.context import Handler
from handlers.resources import RESOURCES
from handlers.topics import (
    delete_handler,
    mark_uninstalled,
    record_order_edit,
    record_purchasing_summary,
    upsert_handler,
)


def _data_topics() -> dict[str, Handler]:
    table: dict[str, Handler] = {}
    for resource in RESOURCES.values():
        upsert, delete = upsert_handler(resource), delete_handler(resource)
        table |= dict.fromkeys(resource.upsert_topics, upsert)
        table |= dict.fromkeys(resource.delete_topics, delete)
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
