"""The resource registry: one declaration per Shopify resource we keep a copy of.

Everything that used to list customers, products and orders by hand reads these entries:
the backfill's page and bulk queries and their cost, reconcile's count and by-id queries, the
topic table's data topics and dispatch's body checks, redaction of personal data, the
dashboard's counts and the CLI's `--resources` choices. Adding a resource is one entry here,
its table and migration, and its normaliser.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from handlers.children import ChildSet
from handlers.metafields import configured, metafield_sets
from handlers.normalize import (
    Record,
    normalize_customer,
    normalize_location,
    normalize_order,
    normalize_product,
    optional_shopify_id,
    parse_shopify_id,
)
from handlers.normalize_children import (
    ADDRESS_COLUMNS,
    LEVEL_QUANTITIES,
    normalize_address,
    normalize_fulfillment,
    normalize_inventory_item,
    normalize_inventory_level,
    normalize_line_item,
    normalize_refund,
    normalize_refund_line_item,
    normalize_transaction,
    normalize_variant,
    product_option_names,
)
from models import (
    Customer,
    CustomerAddress,
    Fulfillment,
    InventoryItem,
    InventoryLevel,
    Location,
    Order,
    OrderLineItem,
    OrderRefund,
    OrderRefundLineItem,
    OrderTransaction,
    Product,
    ProductVariant,
    ShopRecord,
)

PAGE_INFO = "pageInfo { hasNextPage endCursor }"

Normalizer = Callable[[Any], Record]


class ReconcileBy(StrEnum):
    """How reconcile compares a resource with Shopify."""

    # Counts per updated_at window, bisected where they differ; Shopify's oldest and newest
    # updatedAt (sortKey UPDATED_AT) bound the windows when the connection has that sort.
    WINDOWS = "windows"
    # Everything re-read and compared row by row (with its children): for connections that
    # neither sort nor count by updated_at and hold few records (locations), or have no count
    # at all (inventory items and their levels).
    READ = "read"


@dataclass(frozen=True)
class DashboardCount:
    """The dashboard shows this resource's live (not tombstoned) rows under `label`."""

    label: str


@dataclass(frozen=True)
class Resource:
    """One Shopify resource: where it is stored, how its payloads read, how it is fetched."""

    # The table's name, and the connection field on QueryRoot unless `graphql_name` says.
    name: str
    model: type[ShopRecord]
    # REST-shaped webhook bodies and GraphQL nodes; one function may serve both (DESIGN 5).
    normalize_rest: Normalizer
    normalize_node: Normalizer
    # The GraphQL node selection, in Shopify's real field names (the simulator validates
    # them against the real schema); it asks for what the normaliser reads.
    fields: str
    # Objects per node as Shopify counts them (each object 1, scalars 0): it sizes pages so a
    # query stays under the 1,000-point single-query limit.
    node_cost: int
    # `gid://shopify/<typename>/<id>`; also the `... on <typename>` of a by-id query.
    typename: str
    # Topics whose body is the whole record (upserted) and whose body is a deletion notice.
    upsert_topics: tuple[str, ...]
    delete_topics: tuple[str, ...]
    # Columns that hold a customer's personal data: customers/redact clears them.
    personal_fields: tuple[str, ...] = ()
    # Rows that belong to one record of this resource, written with it (handlers/children);
    # `children` adds the metafields of the configured namespaces to them.
    own_children: tuple[ChildSet, ...] = ()
    # The MetafieldOwnerType of its records, when their metafields can be kept.
    metafield_owner: str | None = None
    dashboard: DashboardCount | None = None
    # How reconcile compares it, and whether the connection sorts by UPDATED_AT (Shopify's
    # oldest and newest updatedAt, its watermarks, then come with one request).
    reconcile_by: ReconcileBy = ReconcileBy.WINDOWS
    updated_at_sort: bool = True
    # The page query's sortKey (None where the connection has none), and whether QueryRoot
    # has `<name>Count` (the backfill's progress total).
    sort_key: str | None = "ID"
    counted: bool = True
    # The QueryRoot connection when it is not spelled like the table (`inventoryItems`).
    graphql_name: str | None = None
    # Columns elsewhere naming a record by id that Shopify reads null once it is deleted.
    referenced_as: tuple[tuple[str, str], ...] = ()

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    @property
    def children(self) -> tuple[ChildSet, ...]:
        return self.own_children + metafield_sets(self.metafield_owner)

    @property
    def queried_children(self) -> tuple[ChildSet, ...]:
        return tuple(child for child in self.children if child.node_key)

    @property
    def child_sets(self) -> tuple[ChildSet, ...]:
        """Every kind of child, grandchildren included (a refund's line items)."""
        found: list[ChildSet] = []
        pending = list(self.children)
        while pending:
            child = pending.pop(0)
            found.append(child)
            pending.extend(child.children)
        return tuple(found)

    @property
    def topics(self) -> tuple[str, ...]:
        return self.upsert_topics + self.delete_topics

    @property
    def page_fields(self) -> str:
        """One node's selection in a page query: its fields and the first of its children."""
        return self.fields + "".join(child.selection() for child in self.queried_children) + "\n"

    @property
    def bulk_fields(self) -> str:
        """One node's selection in a bulk query: its fields and all of its children."""
        return self.fields + "".join(child.selection(bulk=True) for child in self.queried_children)

    @property
    def page_node_cost(self) -> int:
        """Requested points of one node of a page query, children included."""
        return self.node_cost + sum(child.cost() for child in self.queried_children)

    @property
    def page_query(self) -> str:
        return (
            f"query Backfill($first: Int!, $after: String, $query: String) {{\n"
            f"  {self.field}(first: $first, after: $after, query: $query{self._sort}) {{\n"
            f"    {PAGE_INFO}\n"
            f"    nodes {{{self.page_fields}    }}\n"
            f"  }}\n"
            f"}}\n"
        )

    @property
    def field(self) -> str:
        """The connection on QueryRoot (`orders`, `inventoryItems`)."""
        return self.graphql_name or self.name

    @property
    def _sort(self) -> str:
        return f", sortKey: {self.sort_key}" if self.sort_key else ""

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
        return f"{self.field}Count"

    def bulk_query(self, search: str | None = None) -> str:
        """The inner query of bulkOperationRunQuery (connections as edges/node)."""
        arguments = f'(query: "{search}")' if search else ""
        return f"{{ {self.field}{arguments} {{ edges {{ node {{{self.bulk_fields}}} }} }} }}"


_MONEY = "shopMoney { amount currencyCode }"

REFUND_LINE_ITEMS = ChildSet(
    model=OrderRefundLineItem,
    parent_key="refund_shopify_id",
    owner_key="order_shopify_id",
    rest_key="refund_line_items",
    node_key="refundLineItems",
    normalize=lambda item, parent, graphql: normalize_refund_line_item(item, graphql=graphql),
    node_fields=f"""
          id quantity restockType lineItem {{ id }} location {{ id }}
          subtotalSet {{ {_MONEY} }} totalTaxSet {{ {_MONEY} }}""",
    connection=True,
    first=4,
    typename="RefundLineItem",
    # itself, its line item and location, two money bags of two objects each
    node_cost=7,
)


def _transaction(item: Any, parent: Mapping[str, Any], graphql: bool) -> Record:
    return normalize_transaction(item, graphql=graphql)


# A REST refund carries its transactions (an orders/* body has no other list of them).
# GraphQL's Order.transactions already lists every one, refunds' included, so this is read
# from REST bodies only (`node_key` empty), and it is some of an order's transactions, never
# all: it tombstones nothing.
REFUND_TRANSACTIONS = ChildSet(
    model=OrderTransaction,
    parent_key="order_shopify_id",
    owner_key="order_shopify_id",
    rest_key="transactions",
    node_key="",
    normalize=_transaction,
    whole_lists=False,
    typename="OrderTransaction",
)

ORDER_CHILDREN = (
    ChildSet(
        model=OrderLineItem,
        parent_key="order_shopify_id",
        rest_key="line_items",
        node_key="lineItems",
        normalize=lambda item, parent, graphql: normalize_line_item(item, graphql=graphql),
        node_fields=f"""
          id sku title variantTitle vendor quantity currentQuantity taxable requiresShipping
          isGiftCard unfulfilledQuantity product {{ id }} variant {{ id }}
          originalUnitPriceSet {{ {_MONEY} }} totalDiscountSet {{ {_MONEY} }}""",
        connection=True,
        first=8,
        typename="LineItem",
        # itself, its product and variant, two money bags of two objects each
        node_cost=7,
    ),
    ChildSet(
        model=OrderRefund,
        parent_key="order_shopify_id",
        rest_key="refunds",
        node_key="refunds",
        normalize=lambda item, parent, graphql: normalize_refund(item, graphql=graphql),
        node_fields=f"""
          id createdAt note processedAt totalRefundedSet {{ {_MONEY} }}""",
        first=2,
        node_cost=3,
        append_only=True,
        # Staff write what the customer said about the return in it.
        personal_fields=("note",),
        children=(REFUND_LINE_ITEMS, REFUND_TRANSACTIONS),
        typename="Refund",
        topics=("refunds/create",),
        rest_parent_key="order_id",
        body_keys=("order_id", "refund_line_items"),
    ),
    ChildSet(
        model=OrderTransaction,
        parent_key="order_shopify_id",
        rest_key="transactions",
        node_key="transactions",
        normalize=_transaction,
        node_fields=f"""
          id kind status gateway processedAt createdAt errorCode test
          parentTransaction {{ id }} amountSet {{ {_MONEY} }}""",
        first=3,
        node_cost=4,
        append_only=True,
        typename="OrderTransaction",
        topics=("order_transactions/create",),
        rest_parent_key="order_id",
        body_keys=("order_id", "kind", "status"),
    ),
    ChildSet(
        model=Fulfillment,
        parent_key="order_shopify_id",
        rest_key="fulfillments",
        node_key="fulfillments",
        normalize=lambda item, parent, graphql: normalize_fulfillment(item, graphql=graphql),
        node_fields="""
          id name status displayStatus createdAt updatedAt location { id }
          trackingInfo { company number url }""",
        first=2,
        node_cost=3,
        typename="Fulfillment",
        # fulfillments/update changes a fulfillment: order-safe by its updated_at.
        topics=("fulfillments/create", "fulfillments/update"),
        rest_parent_key="order_id",
        body_keys=("order_id", "status", "updated_at"),
    ),
)

PRODUCT_VARIANTS = ChildSet(
    model=ProductVariant,
    parent_key="product_shopify_id",
    rest_key="variants",
    node_key="variants",
    normalize=lambda item, parent, graphql: normalize_variant(
        item, graphql=graphql, option_names=None if graphql else product_option_names(parent)
    ),
    node_fields="""
          id title sku barcode price compareAtPrice position inventoryQuantity taxable
          createdAt updatedAt selectedOptions { name value } inventoryItem { id }""",
    connection=True,
    first=20,
    node_cost=3,
    # products/* bodies cut `variants` short but list every variant's gid in `variant_gids`.
    rest_ids_key="variant_gids",
    # A line item's variant reads null once the variant is deleted.
    referenced_as=(("order_line_items", "variant_shopify_id"),),
    typename="ProductVariant",
    # QueryRoot.productVariants (sortKey has no UPDATED_AT) and productVariantsCount.
    root_field="productVariants",
    root_parent="product",
)


def _address(item: Any, parent: Mapping[str, Any], graphql: bool) -> Record:
    default = parent.get("defaultAddress") if graphql else None
    default_id = default.get("id") if isinstance(default, Mapping) else None
    return normalize_address(
        item,
        graphql=graphql,
        default_id=None if default_id is None else _numeric(default_id),
    )


def _numeric(gid: Any) -> int | None:
    return optional_shopify_id(gid, "customer.defaultAddress.id")


CUSTOMER_ADDRESSES = ChildSet(
    model=CustomerAddress,
    parent_key="customer_shopify_id",
    rest_key="addresses",
    node_key="addressesV2",
    normalize=_address,
    node_fields="""
          id firstName lastName name company address1 address2 city province provinceCode
          country countryCodeV2 zip phone""",
    connection=True,
    first=5,
    typename="MailingAddress",
    node_cost=1,
    personal_fields=ADDRESS_COLUMNS,
    wholly_personal=True,
)

CUSTOMERS = Resource(
    name="customers",
    model=Customer,
    normalize_rest=normalize_customer,
    normalize_node=normalize_customer,
    fields="""
      id
      firstName
      lastName
      state
      createdAt
      updatedAt
      defaultEmailAddress { emailAddress marketingState marketingOptInLevel marketingUpdatedAt }
      defaultPhoneNumber { phoneNumber smsMarketingConsent { state optInLevel updatedAt } }
      amountSpent { amount currencyCode }
      numberOfOrders
      tags
      note
      verifiedEmail
      defaultAddress { id }
""",
    node_cost=6,
    typename="Customer",
    upsert_topics=(
        "customers/create",
        "customers/update",
        "customers/enable",
        "customers/disable",
    ),
    delete_topics=("customers/delete",),
    personal_fields=("email", "first_name", "last_name", "phone", "note"),
    own_children=(CUSTOMER_ADDRESSES,),
    metafield_owner="CUSTOMER",
    dashboard=DashboardCount("Customers"),
)

PRODUCTS = Resource(
    name="products",
    model=Product,
    normalize_rest=normalize_product,
    normalize_node=normalize_product,
    fields="""
      id
      title
      handle
      status
      vendor
      productType
      tags
      createdAt
      updatedAt
      publishedAt
      category { fullName }
""",
    node_cost=2,
    typename="Product",
    upsert_topics=("products/create", "products/update"),
    delete_topics=("products/delete",),
    own_children=(PRODUCT_VARIANTS,),
    metafield_owner="PRODUCT",
    # A line item's product reads null once the product is deleted.
    referenced_as=(("order_line_items", "product_shopify_id"),),
    dashboard=DashboardCount("Products"),
)

ORDERS = Resource(
    name="orders",
    model=Order,
    normalize_rest=normalize_order,
    normalize_node=normalize_order,
    fields="""
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
      totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount } }
      subtotalPriceSet { shopMoney { amount currencyCode } }
      customer { id }
      presentmentCurrencyCode
      totalTaxSet { shopMoney { amount currencyCode } }
      totalDiscountsSet { shopMoney { amount currencyCode } }
      currentTotalPriceSet { shopMoney { amount currencyCode } }
      tags
      note
      cancelReason
      closedAt
      sourceName
      test
      shippingAddress { countryCodeV2 provinceCode }
""",
    node_cost=14,
    typename="Order",
    upsert_topics=(
        "orders/create",
        "orders/updated",
        "orders/paid",
        "orders/cancelled",
        "orders/fulfilled",
        "orders/partially_fulfilled",
    ),
    delete_topics=("orders/delete",),
    # An order's own email and note; addresses and phones live only in `raw`, scrubbed
    # separately (the shipping country and province are kept: they name no one).
    personal_fields=("email", "note"),
    own_children=ORDER_CHILDREN,
    metafield_owner="ORDER",
    dashboard=DashboardCount("Orders"),
)

LOCATIONS = Resource(
    name="locations",
    model=Location,
    normalize_rest=normalize_location,
    normalize_node=normalize_location,
    fields="""
      id
      name
      isActive
      createdAt
      updatedAt
      address { address1 address2 city zip provinceCode countryCode phone }
""",
    node_cost=2,
    typename="Location",
    # LocationSortKeys has no UPDATED_AT; a store has a handful: counted (locationsCount)
    # and re-read whole.
    reconcile_by=ReconcileBy.READ,
    updated_at_sort=False,
    upsert_topics=("locations/create", "locations/update"),
    delete_topics=("locations/delete",),
    # The phone and address are the business's own: nothing for customers/redact to clear.
    personal_fields=(),
    dashboard=DashboardCount("Locations"),
)


def _level(item: Any, parent: Mapping[str, Any], graphql: bool) -> Record:
    # Read under its item, a level node need not select `item { id }` (an object per level
    # on every page): the item is the parent.
    if graphql and isinstance(item, Mapping) and "item" not in item:
        item = {**item, "item": {"id": parent.get("id")}}
    return normalize_inventory_level(item)


# The names the level columns hold, as a GraphQL list literal (JSON strings are GraphQL's).
LEVEL_QUANTITY_NAMES = json.dumps(list(LEVEL_QUANTITIES))

INVENTORY_LEVELS = ChildSet(
    model=InventoryLevel,
    parent_key="inventory_item_shopify_id",
    # A level has no id of its own: among its item's levels, its location tells it apart.
    child_key="location_shopify_id",
    rest_key="",
    node_key="inventoryLevels",
    normalize=_level,
    node_fields=f"""
          id isActive createdAt updatedAt location {{ id }}
          quantities(names: {LEVEL_QUANTITY_NAMES}) {{ name quantity }}""",
    connection=True,
    first=10,
    typename="InventoryLevel",
    # itself, its location, its list of quantities
    node_cost=3,
)
"""An item's stock per location. Its webhooks (`inventory_levels/*`) carry one level each
and are handled in `handlers.topics`; the backfill reads levels as this connection."""

INVENTORY_LEVEL_TOPICS = ("inventory_levels/connect", "inventory_levels/update")
INVENTORY_LEVEL_DELETE_TOPICS = ("inventory_levels/disconnect",)

INVENTORY_ITEMS = Resource(
    name="inventory_items",
    graphql_name="inventoryItems",
    model=InventoryItem,
    normalize_rest=normalize_inventory_item,
    normalize_node=normalize_inventory_item,
    fields="""
      id
      sku
      tracked
      requiresShipping
      unitCost { amount currencyCode }
      countryCodeOfOrigin
      provinceCodeOfOrigin
      harmonizedSystemCode
      createdAt
      updatedAt
""",
    node_cost=2,
    typename="InventoryItem",
    upsert_topics=("inventory_items/create", "inventory_items/update"),
    delete_topics=("inventory_items/delete",),
    own_children=(INVENTORY_LEVELS,),
    # QueryRoot.inventoryItems has no sortKey (it pages in id order) and there is no
    # inventoryItemsCount.
    sort_key=None,
    counted=False,
    # Nothing counts items or levels: reconcile re-reads them, levels with their item.
    reconcile_by=ReconcileBy.READ,
    updated_at_sort=False,
)

RESOURCES: Mapping[str, Resource] = {
    resource.name: resource
    for resource in (CUSTOMERS, PRODUCTS, ORDERS, LOCATIONS, INVENTORY_ITEMS)
}
"""Every resource, in declaration order (the order backfills and reports run in)."""


WEBHOOK_RESOURCES: tuple[Resource, ...] = tuple(RESOURCES.values())
"""Every resource a webhook topic writes (all of them)."""


def resource_for_topic(topic: str) -> Resource | None:
    """The resource whose record (or deletion notice) a topic's body is, if any."""
    return _BY_TOPIC.get(topic)


def topic_metafield_namespaces(topic: str) -> tuple[str, ...]:
    """The namespaces whose metafields a subscription to `topic` asks Shopify to put in its
    bodies: the configured ones for a record topic of a resource that keeps metafields."""
    resource = resource_for_topic(topic)
    if resource is None or resource.metafield_owner is None:
        return ()
    return configured() if topic in resource.upsert_topics else ()


def child_for_topic(topic: str) -> tuple[Resource, ChildSet] | None:
    """The resource and kind of child a topic's body is one of (`refunds/create`), if any."""
    return _CHILD_BY_TOPIC.get(topic)


def child_topics() -> dict[str, tuple[Resource, ChildSet]]:
    return dict(_CHILD_BY_TOPIC)


def topic_resource_name(topic: str) -> str | None:
    """The resource whose records a topic's body is or belongs to (`refunds/create`:
    orders; `inventory_levels/update`: inventory_items)."""
    found = resource_for_topic(topic)
    if found is not None:
        return found.name
    child = child_for_topic(topic)
    if child is not None:
        return child[0].name
    if topic in INVENTORY_LEVEL_TOPICS + INVENTORY_LEVEL_DELETE_TOPICS:
        return INVENTORY_ITEMS.name
    return None


# -- access scopes -----------------------------------------------------------------------
# What Shopify requires before it accepts a subscription to a topic (WebhookSubscriptionTopic's
# descriptions in the 2026-10 schema: "Requires the `read_orders` scope", or "at least one of
# the following scopes: ..."), by resource and, where a topic differs, by topic. The first
# scope of each is the one the app asks for; the others also satisfy Shopify. The backfill
# reads the same resources, so its queries need these scopes too.
RESOURCE_SCOPES: Mapping[str, tuple[str, ...]] = {
    "customers": ("read_customers",),
    "products": ("read_products",),
    # Some order topics also take read_marketplace_orders; this app is not a marketplace.
    "orders": ("read_orders",),
    "locations": ("read_locations",),
    # inventory_items/* accept read_products too; the levels need read_inventory anyway.
    "inventory_items": ("read_inventory", "read_products"),
}
TOPIC_SCOPES: Mapping[str, tuple[str, ...]] = {
    # read_orders does not cover fulfillments' topics.
    "fulfillments/create": ("read_fulfillments",),
    "fulfillments/update": ("read_fulfillments",),
    "inventory_levels/connect": ("read_inventory",),
    "inventory_levels/update": ("read_inventory",),
    "inventory_levels/disconnect": ("read_inventory",),
    # Delivered to every app.
    "app/uninstalled": (),
}


def accepted_scopes(topic: str) -> tuple[str, ...]:
    """The access scopes any one of which lets the app subscribe to `topic`, the one the app
    asks for first; () when none is needed or the topic is not ours."""
    if topic in TOPIC_SCOPES:
        return TOPIC_SCOPES[topic]
    name = topic_resource_name(topic) or topic.partition("/")[0]
    return RESOURCE_SCOPES.get(name, ())


def required_scopes(topics: Iterable[str]) -> list[str]:
    """The access scopes the app asks for to receive these topics, sorted, each once."""
    return sorted({scopes[0] for topic in topics if (scopes := accepted_scopes(topic))})


# -- reconcile -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconcileTarget:
    """One entry of a reconcile report: a resource, or a kind of child Shopify also lists on
    QueryRoot (`productVariants`), compared on its own. Built from the declarations above."""

    name: str
    # The resource whose records it is or belongs to (and whose backfill writes it).
    resource: Resource
    model: type[ShopRecord]
    # The QueryRoot connection, the node type, one node's selection in reconcile's queries and
    # its requested cost, and what reads a node.
    field: str
    typename: str
    fields: str
    node_cost: int
    normalize: Normalizer
    by: ReconcileBy
    updated_at_sort: bool
    counted: bool
    sort_key: str | None
    # Children read with each node and compared too (an inventory item's levels).
    children: tuple[ChildSet, ...] = ()

    @property
    def count_field(self) -> str:
        return f"{self.field}Count"

    @property
    def count_query(self) -> str:
        # limit: null asks for the exact count; the default stops counting at 10,000.
        return (
            "query ReconcileCount($query: String) {\n"
            f"  {self.count_field}(query: $query, limit: null) {{ count precision }}\n"
            "}\n"
        )

    @property
    def page_query(self) -> str:
        sort = f", sortKey: {self.sort_key}" if self.sort_key else ""
        return (
            "query ReconcilePage($first: Int!, $after: String, $query: String) {\n"
            f"  {self.field}(first: $first, after: $after, query: $query{sort}) {{\n"
            f"    {PAGE_INFO}\n"
            f"    nodes {{{self.fields}    }}\n"
            "  }\n"
            "}\n"
        )

    @property
    def nodes_query(self) -> str:
        return (
            "query ReconcileNodes($ids: [ID!]!) {\n"
            "  nodes(ids: $ids) {\n"
            f"    ... on {self.typename} {{{self.fields}    }}\n"
            "  }\n"
            "}\n"
        )


def _resource_target(resource: Resource) -> ReconcileTarget:
    read = resource.reconcile_by is ReconcileBy.READ
    return ReconcileTarget(
        name=resource.name,
        resource=resource,
        model=resource.model,
        field=resource.field,
        typename=resource.typename,
        # A re-read compares the children too; a window repair writes the records only.
        fields=resource.page_fields if read else resource.fields,
        node_cost=resource.page_node_cost if read else resource.node_cost,
        normalize=resource.normalize_node,
        by=resource.reconcile_by,
        updated_at_sort=resource.updated_at_sort,
        counted=resource.counted,
        sort_key=resource.sort_key,
        children=resource.queried_children if read else (),
    )


def _root_child_normalizer(child: ChildSet) -> Normalizer:
    def normalize(node: Any) -> Record:
        parent = node.get(child.root_parent) if isinstance(node, Mapping) else None
        parent_id = parse_shopify_id(
            parent.get("id") if isinstance(parent, Mapping) else None,
            f"{child.typename}.{child.root_parent}.id",
        )
        # Read as its parent's child reads it: `raw` is what a backfill of the parent stores.
        own = {key: value for key, value in node.items() if key != child.root_parent}
        return child.normalize(own, {}, True) | {child.parent_key: parent_id}

    return normalize


def _child_target(resource: Resource, child: ChildSet) -> ReconcileTarget:
    model = child.model
    if not issubclass(model, ShopRecord):
        raise TypeError(f"{child.table}: a child listed on QueryRoot needs an id of its own")
    return ReconcileTarget(
        name=child.table,
        resource=resource,
        model=model,
        field=child.root_field,
        typename=child.typename,
        fields=f"{child.item_fields()}\n          {child.root_parent} {{ id }}\n",
        # its parent is one object more
        node_cost=child.item_cost + 1,
        normalize=_root_child_normalizer(child),
        by=ReconcileBy.WINDOWS,
        updated_at_sort=False,
        counted=True,
        sort_key="ID",
    )


def _reconcile_targets() -> dict[str, ReconcileTarget]:
    targets: dict[str, ReconcileTarget] = {}
    for resource in RESOURCES.values():
        targets[resource.name] = _resource_target(resource)
        for child in resource.child_sets:
            if child.root_field:
                targets[child.table] = _child_target(resource, child)
    return targets


RECONCILE_TARGETS: Mapping[str, ReconcileTarget] = _reconcile_targets()
"""What reconcile compares, by report name, in registry order (a resource, then its
root-listed children)."""


def reconciled_names() -> list[str]:
    """The names reconcile compares (its `--resources` choices), in registry order."""
    return list(RECONCILE_TARGETS)


def reconciled_names_for(resources: Iterable[str]) -> list[str]:
    """The reconcile names that cover these resources' records: each resource and its
    root-listed children (products: products and product_variants)."""
    wanted = set(resources)
    return [name for name, target in RECONCILE_TARGETS.items() if target.resource.name in wanted]


def parse_resource_names(
    names: str | list[str] | tuple[str, ...] | None, among: list[str] | None = None
) -> list[str]:
    """Chosen resource names (a comma-separated string or a list) checked against the
    registry (or the names `among` it), without duplicates, in the order given; none chosen
    means all of them. Raises ValueError naming the unknown ones and the valid choices."""
    choices = among if among is not None else list(RESOURCES)
    if isinstance(names, str):
        names = [part.strip() for part in names.split(",") if part.strip()]
    chosen = list(dict.fromkeys(names)) if names else list(choices)
    unknown = [name for name in chosen if name not in choices]
    if unknown:
        raise ValueError(
            f"unknown resources {', '.join(unknown)}; choose from {', '.join(choices)}"
        )
    return chosen


def _topics_index() -> dict[str, Resource]:
    index: dict[str, Resource] = {}
    for resource in WEBHOOK_RESOURCES:
        for topic in resource.topics:
            if topic in index:
                raise RuntimeError(f"topic {topic} is declared by two resources")
            index[topic] = resource
    return index


def _child_topics_index() -> dict[str, tuple[Resource, ChildSet]]:
    index: dict[str, tuple[Resource, ChildSet]] = {}
    for resource in WEBHOOK_RESOURCES:
        for child in resource.child_sets:
            for topic in child.topics:
                if topic in index or topic in _BY_TOPIC:
                    raise RuntimeError(f"topic {topic} is declared twice")
                index[topic] = (resource, child)
    return index


_BY_TOPIC = _topics_index()
_CHILD_BY_TOPIC = _child_topics_index()
