"""Every topic we handle and its handler, in one table. A topic missing here is stored
`ignored`; `webhooks sync` subscribes to these (the compliance ones are declared in the app's
configuration instead)."""

from __future__ import annotations

from handlers.compliance import record_data_request, redact_customer, redact_shop
from handlers.context import Handler
from handlers.topics import (
    delete_customer,
    delete_order,
    delete_product,
    mark_uninstalled,
    record_order_edit,
    record_purchasing_summary,
    upsert_customers,
    upsert_orders,
    upsert_products,
)

HANDLERS: dict[str, Handler] = {
    "orders/create": upsert_orders,
    "orders/updated": upsert_orders,
    "orders/paid": upsert_orders,
    "orders/cancelled": upsert_orders,
    "orders/fulfilled": upsert_orders,
    "orders/partially_fulfilled": upsert_orders,
    "orders/edited": record_order_edit,
    "orders/delete": delete_order,
    "customers/create": upsert_customers,
    "customers/update": upsert_customers,
    "customers/enable": upsert_customers,
    "customers/disable": upsert_customers,
    "customers/purchasing_summary": record_purchasing_summary,
    "customers/delete": delete_customer,
    "products/create": upsert_products,
    "products/update": upsert_products,
    "products/delete": delete_product,
    "app/uninstalled": mark_uninstalled,
    "customers/data_request": record_data_request,
    "customers/redact": redact_customer,
    "shop/redact": redact_shop,
}
