"""The Admin GraphQL documents the backfill sends. The simulator answers exactly these.

Each node selection asks for what the resource's normaliser reads (handlers/normalize.py), in
Shopify's real field names (validated against the real schema by the simulator).
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_INFO = "pageInfo { hasNextPage endCursor }"

CUSTOMER_FIELDS = """
      id
      firstName
      lastName
      state
      createdAt
      updatedAt
      defaultEmailAddress { emailAddress }
      defaultPhoneNumber { phoneNumber }
      amountSpent { amount currencyCode }
      numberOfOrders
"""

PRODUCT_FIELDS = """
      id
      title
      handle
      status
      vendor
      productType
      tags
      createdAt
      updatedAt
"""

ORDER_FIELDS = """
      id
      name
      email
      createdAt
      updatedAt
      processedAt
      cancelledAt
      currencyCode
      displayFinancialStatus
      displayFulfillmentStatus
      totalPriceSet { shopMoney { amount currencyCode } }
      subtotalPriceSet { shopMoney { amount currencyCode } }
      customer { id }
"""


@dataclass(frozen=True)
class Resource:
    name: str  # also the connection field on QueryRoot and the table name
    fields: str
    # Objects per node as Shopify counts them (each object 1, scalars 0): it sizes pages so a
    # query stays under the 1,000-point single-query limit.
    node_cost: int

    @property
    def page_query(self) -> str:
        return (
            f"query Backfill($first: Int!, $after: String, $query: String) {{\n"
            f"  {self.name}(first: $first, after: $after, query: $query, sortKey: ID) {{\n"
            f"    {PAGE_INFO}\n"
            f"    nodes {{{self.fields}    }}\n"
            f"  }}\n"
            f"}}\n"
        )

    @property
    def count_query(self) -> str:
        # limit: null asks for the exact count; the default stops counting at 10,000.
        return (
            "query Count($query: String) {\n"
            f"  {self.count_field}(query: $query, limit: null) {{ count precision }}\n"
            "}\n"
        )

    @property
    def count_field(self) -> str:
        return f"{self.name}Count"

    def bulk_query(self, search: str | None = None) -> str:
        """The inner query of bulkOperationRunQuery (connections as edges/node)."""
        arguments = f'(query: "{search}")' if search else ""
        return f"{{ {self.name}{arguments} {{ edges {{ node {{{self.fields}}} }} }} }}"


CUSTOMERS = Resource("customers", CUSTOMER_FIELDS, node_cost=4)
PRODUCTS = Resource("products", PRODUCT_FIELDS, node_cost=1)
ORDERS = Resource("orders", ORDER_FIELDS, node_cost=6)
RESOURCES = {resource.name: resource for resource in (CUSTOMERS, PRODUCTS, ORDERS)}

BULK_RUN = """
mutation BulkRun($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message }
  }
}
"""

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
