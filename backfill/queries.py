"""The Admin GraphQL documents the backfill sends. The simulator answers exactly these.

Each resource's node selection and page cost are declared in the registry
(handlers/resources.py), in Shopify's real field names (validated against the real schema by
the simulator); its page, count and bulk documents are derived from them.
"""

from __future__ import annotations

from handlers.resources import PAGE_INFO, Resource
from handlers.resources import RESOURCES as REGISTRY

__all__ = [
    "BULK_RUN",
    "BULK_RUN_GROUPED",
    "BULK_STATUS",
    "CUSTOMERS",
    "CUSTOMER_FIELDS",
    "ORDERS",
    "ORDER_FIELDS",
    "PAGE_INFO",
    "PRODUCTS",
    "PRODUCT_FIELDS",
    "RESOURCES",
    "SHOP_ID",
    "Resource",
    "bulk_run_document",
]

# The per-resource documents (page, count, bulk) are built by the registry's entries from
# their declared fields; these names stay for the callers that import them from here.
CUSTOMERS = REGISTRY["customers"]
PRODUCTS = REGISTRY["products"]
ORDERS = REGISTRY["orders"]
RESOURCES = REGISTRY
CUSTOMER_FIELDS = CUSTOMERS.fields
PRODUCT_FIELDS = PRODUCTS.fields
ORDER_FIELDS = ORDERS.fields

BULK_RUN = """
mutation BulkRun($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message }
  }
}
"""

# From 2026-01 Shopify no longer keeps a record's child lines next to it unless asked; the
# backfill writes each record with its children, holding one record at a time, so it asks.
BULK_RUN_GROUPED = BULK_RUN.replace(
    "bulkOperationRunQuery(query: $query)",
    "bulkOperationRunQuery(query: $query, groupObjects: true)",
)


def bulk_run_document(api_version: str, *, grouped: bool) -> str:
    """The mutation starting a bulk query: grouped where there are children to group and
    the API version has the argument (2026-01 on; before it, lines came grouped)."""
    return BULK_RUN_GROUPED if grouped and api_version >= "2026-01" else BULK_RUN


BULK_STATUS = """
query BulkStatus($id: ID!) {
  node(id: $id) {
    ... on BulkOperation { id status errorCode objectCount url partialDataUrl }
  }
}
"""

# The store's Shopify shop id: destructive webhooks are checked against it (cost 1).
SHOP_ID = """
query ShopId {
  shop { id }
}
"""
