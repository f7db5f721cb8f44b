"""A simulated Shopify store: seeded records, tokens, a throttle bucket, bulk operations,
fault injection and counters, all safe to use from a test thread while the server runs.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .bulk import BulkManager
from .children import (
    ADDRESS_STRIDE,
    CUSTOMER_ADDRESS_ID_BASE,
    METAFIELD_ID_BASES,
    METAFIELD_RESOURCES,
    METAFIELD_STRIDE,
    QUANTITY_NAMES,
    TRANSACTION_STRIDE,
    Connection,
    Derived,
    LazyNode,
    OrderChildren,
    ProductChildren,
    children_of,
    customer_lazies,
    metafield_lazies,
    metafield_node,
    numeric,
    recount,
    shipping_address,
    value_of,
)
from .clock import Clock, SystemClock
from .data import (
    LazyRef,
    Node,
    customer_email,
    customer_name,
    customer_node,
    draw,
    epoch,
    gid,
    iso,
    location_node,
    mix64,
    money,
    money_bag,
    order_node,
    product_node,
    stream_key,
)
from .faults import Fault, FaultPlan
from .hooks import RequestHook, RequestHooks
from .resources import Alias, Resource
from .schema import SCHEMA_VERSION, admin_schema
from .subscriptions import SubscriptionRegistry
from .throttle import LeakyBucket
from .tokens import DEFAULT_SCOPE, TokenRegistry
from .webhooks import WebhookEmitter

# 13-digit ids like real ones; the resource kinds never collide.
CUSTOMER_ID_BASE = 7_400_000_000_000
PRODUCT_ID_BASE = 8_600_000_000_000
ORDER_ID_BASE = 5_900_000_000_000
LOCATION_ID_BASE = 6_100_000_000_000
DEFAULT_HISTORY = (
    datetime(2021, 1, 1, tzinfo=UTC),
    datetime(2025, 1, 1, tzinfo=UTC),
)
DEFAULT_CLIENT_ID = "fakeshop-client-id"
DEFAULT_CLIENT_SECRET = "fakeshop-client-secret"
RESOURCE_NAMES = ("customers", "products", "orders", "locations")


@dataclass
class Stats:
    """Counters for tests and benchmarks (read them; :meth:`FakeStore.reset_stats` zeroes)."""

    requests: int = 0  # GraphQL POSTs received, faulted or not
    answered: int = 0  # GraphQL requests that executed (data returned)
    throttled: int = 0
    max_cost_exceeded: int = 0
    unauthorized: int = 0
    invalid: int = 0  # parse, validation, variable or page-size errors
    points_requested: int = 0  # requested cost of executed queries
    points_used: int = 0  # actual cost of executed queries
    nodes_returned: int = 0  # records in connection pages
    bulk_operations: int = 0
    downloads: int = 0
    download_lines: int = 0
    token_refreshes: int = 0
    # GraphQL requests being answered at this moment, and the most there ever were at once.
    graphql_in_flight: int = 0
    most_graphql_in_flight: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    deprecated_fields: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["faults"] = dict(self.faults)
        values["deprecated_fields"] = dict(self.deprecated_fields)
        return values


def _cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


_BUNDLE_FIELDS = ("lineItems", "refunds", "transactions", "fulfillments")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _free_position(transactions: list[Node]) -> int:
    """The next unused transaction id position of an order."""
    used = {numeric(t["id"]) % TRANSACTION_STRIDE for t in transactions}
    return next(p for p in range(TRANSACTION_STRIDE) if p not in used)


def _variant_fields(fields: dict[str, Any]) -> dict[str, Any]:
    translated: dict[str, Any] = {}
    for name, value in fields.items():
        field = _camel(name)
        if field in ("price", "compareAtPrice") and value is not None:
            value = money(_cents(value))
        translated[field] = value
    return translated


def _tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    return list(value)


class FakeStore:
    """One shop. Records are generated from ``(seed, index)``; see the package README."""

    def __init__(
        self,
        shop_domain: str = "fakeshop.myshopify.com",
        seed: int = 0,
        *,
        customers: int = 100,
        products: int = 50,
        orders: int = 1000,
        locations: int = 3,
        currency: str = "USD",
        clock: Clock | None = None,
        history: tuple[datetime, datetime] = DEFAULT_HISTORY,
        maximum_available: float = 2000.0,
        restore_rate: float = 100.0,
        throttle: bool = True,
        throttle_status: int = 200,
        max_query_cost: int = 1000,
        bulk_polls_to_complete: int = 2,
        bulk_seconds_to_complete: float | None = None,
        bulk_concurrency: int | None = None,
        bulk_prepare_files: bool = False,
        access_token: str | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        scope: str = DEFAULT_SCOPE,
        access_token_ttl: int = 3600,
        executor: str = "fast",
        many_line_items_every: int = 250,
        many_line_items: int = 300,
        many_variants_every: int = 25,
        many_variants: int = 150,
    ) -> None:
        if not shop_domain.endswith(".myshopify.com"):
            shop_domain = f"{shop_domain}.myshopify.com"
        if executor not in ("fast", "graphql-core"):
            raise ValueError("executor is 'fast' or 'graphql-core'")
        self.shop_domain = shop_domain
        self.seed = seed
        self.currency = currency
        self.clock: Clock = clock or SystemClock()
        self.throttle_status = throttle_status
        self.max_query_cost = max_query_cost
        self.executor = executor
        self.stats = Stats()
        self._lock = threading.Lock()
        # Children (children.py): one order in ``many_line_items_every`` has
        # ``many_line_items`` line items (a client must page the overflow), one product in
        # ``many_variants_every`` has ``many_variants`` variants; 0 turns them off.
        self.many_line_items_every = many_line_items_every
        self.many_line_items = many_line_items
        self.many_variants_every = many_variants_every
        self.many_variants = many_variants
        self.order_children = OrderChildren(self)
        self.product_children = ProductChildren(self)
        span = (epoch(history[0]), epoch(history[1]))
        schema = admin_schema()

        def fields_of(typename: str) -> frozenset[str]:
            return frozenset(schema.get_type(typename).fields)  # type: ignore[union-attr]

        customer_key = stream_key(seed, "customers")
        product_key = stream_key(seed, "products")
        order_key = stream_key(seed, "orders")
        # Derived fields and children, computed when read (children.LazyNode).
        customer_fields = {
            **customer_lazies(customer_key),
            **metafield_lazies("CUSTOMER", customer_key),
        }
        product_fields = {
            **self.product_children.lazies(),
            **metafield_lazies("PRODUCT", product_key),
        }
        location_fields = self._location_lazies()
        self._order_fields = {
            **self.order_children.lazies(),
            **metafield_lazies("ORDER", order_key),
            "shippingAddress": self._shipping_address,
        }
        self.customers = Resource(
            typename="Customer",
            key=customer_key,
            base_id=CUSTOMER_ID_BASE,
            count=customers,
            history=span,
            build=lambda r, i, c, u: LazyNode(
                customer_node(customer_key, i, r.base_id + i, c, u, self.currency),
                customer_fields,
                i,
            ),
            fields=fields_of("Customer"),
            aliases=self._customer_aliases(),
            clock=self.clock,
        )
        self.products = Resource(
            typename="Product",
            key=product_key,
            base_id=PRODUCT_ID_BASE,
            count=products,
            history=span,
            build=lambda r, i, c, u: LazyNode(
                product_node(product_key, i, r.base_id + i, c, u), product_fields, i
            ),
            fields=fields_of("Product"),
            aliases=self._product_aliases(),
            clock=self.clock,
        )
        self.orders = Resource(
            typename="Order",
            key=order_key,
            base_id=ORDER_ID_BASE,
            count=orders,
            history=span,
            build=self._build_order,
            fields=fields_of("Order"),
            aliases=self._order_aliases(),
            clock=self.clock,
        )
        location_key = stream_key(seed, "locations")
        self.locations = Resource(
            typename="Location",
            key=location_key,
            base_id=LOCATION_ID_BASE,
            count=locations,
            history=span,
            build=lambda r, i, c, u: LazyNode(
                location_node(location_key, i, r.base_id + i, c, u), location_fields, i
            ),
            fields=fields_of("Location"),
            aliases={
                "active": lambda v: {"isActive": bool(v)},
            },
            clock=self.clock,
        )
        self.bucket = LeakyBucket(self.clock, maximum_available, restore_rate, throttle)
        self.tokens = TokenRegistry(
            self.clock,
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            access_ttl=access_token_ttl,
        )
        # Deterministic, so a benchmark started twice with the same seed prints the same token.
        self.access_token = self.tokens.add_static(
            access_token or f"shpat_{mix64(stream_key(seed, shop_domain)):016x}fake"
        )
        self.faults = FaultPlan()
        # Seconds each Admin API request waits before it is answered, as Shopify's round trip
        # does: requests sent at once wait together (0: answered at once).
        self.latency = 0.0
        # Webhook subscriptions (`webhookSubscriptionCreate` and friends; `drop()` plays
        # Shopify removing one after failed deliveries).
        self.subscriptions = SubscriptionRegistry(self.clock, SCHEMA_VERSION)
        # Sends a signed webhook for each change below once enabled (off: existing tests
        # never see a delivery). `hooks` run callbacks as GraphQL requests are answered.
        self.webhooks = WebhookEmitter(self)
        self.hooks = RequestHooks()
        self.bulk = BulkManager(
            self,
            polls_to_complete=bulk_polls_to_complete,
            seconds_to_complete=bulk_seconds_to_complete,
            concurrency=bulk_concurrency,
            prepare_files=bulk_prepare_files,
        )

    # -- records --

    def resource(self, name: str) -> Resource:
        if name not in RESOURCE_NAMES:
            raise KeyError(name)
        resource: Resource = getattr(self, name)
        return resource

    def _customer_ref(self, index: int | None) -> LazyRef | None:
        if index is None or not self.customers.is_live(index):
            return None
        return LazyRef("Customer", self.customers.gid(index), lambda: self.customers.node(index))

    def _build_order(self, resource: Resource, index: int, created: int, updated: int) -> Node:
        value = draw(resource.key, index, 3)
        customers = self.customers.generated
        customer: int | None = None
        # About 3% guest checkouts; otherwise a customer who existed when the order was placed
        # (customers' time slots advance with their index too).
        if customers and value % 100 >= 3:
            known = min(customers, (index * customers) // max(1, resource.generated) + 1)
            customer = (value >> 8) % known
        email = (
            customer_email(self.customers.key, customer)
            if customer is not None
            else f"guest.{index}@example.net"
        )
        node = order_node(
            resource.key,
            index,
            resource.base_id + index,
            created,
            updated,
            self.currency,
            self._customer_ref(customer),
            email,
        )
        return LazyNode(node, self._order_fields, index)

    def _shipping_address(self, node: LazyNode) -> Node | None:
        reference = node.get("customer")
        name = None
        if reference:
            customer = numeric(reference["id"]) - self.customers.base_id
            name = customer_name(self.customers.key, customer)
        return shipping_address(self.orders.key, node.index, name)

    def _location_lazies(self) -> dict[str, Callable[[LazyNode], Any]]:
        def levels(node: LazyNode) -> list[Node]:
            # Every inventory item stocked here, in item id order (a scan of the catalogue:
            # locations are few and tests' catalogues small).
            def make() -> list[Node]:
                return [
                    level
                    for variant in self.product_children.all_variants(self.products.view())
                    for level in children_of(variant["inventoryItem"], "inventoryLevels")
                    if level["location"]["id"] == node["id"]
                ]

            made: list[Node] = node.memo("__levels", make)
            return made

        def level_of(node: LazyNode) -> Derived:
            def find(inventoryItemId: str = "", **_: Any) -> Node | None:
                return next(
                    (lv for lv in levels(node) if lv["item"]["id"] == inventoryItemId), None
                )

            return Derived(find, lambda: levels(node))

        return {
            "inventoryLevels": lambda node: Connection(levels(node)),
            "inventoryLevel": level_of,
        }

    def _order_aliases(self) -> dict[str, Alias]:
        def bag(field_name: str) -> Alias:
            return lambda v: {field_name: money_bag(_cents(v), self.currency)}

        return {
            "financial_status": lambda v: {"displayFinancialStatus": str(v).upper()},
            "fulfillment_status": lambda v: {"displayFulfillmentStatus": str(v).upper()},
            # No edits or refunds here: the current total is the total.
            "total_price": lambda v: bag("totalPriceSet")(v) | bag("currentTotalPriceSet")(v),
            "subtotal_price": bag("subtotalPriceSet"),
            "total_tax": bag("totalTaxSet"),
            "total_shipping": bag("totalShippingPriceSet"),
            "cancel_reason": lambda v: {"cancelReason": str(v).upper() if v else None},
            "tags": lambda v: {"tags": _tags(v)},
            "customer": lambda v: {"customer": self._customer_ref(v)},
        }

    def _customer_aliases(self) -> dict[str, Alias]:
        return {
            "email": lambda v: {
                "email": v,
                "defaultEmailAddress": (
                    {
                        "emailAddress": v,
                        "marketingState": "NOT_SUBSCRIBED",
                        "marketingOptInLevel": "SINGLE_OPT_IN",
                        "marketingUpdatedAt": None,
                    }
                    if v
                    else None
                ),
            },
            "phone": lambda v: {
                "phone": v,
                "defaultPhoneNumber": (
                    {
                        "phoneNumber": v,
                        "marketingState": "NOT_SUBSCRIBED",
                        "smsMarketingConsent": {
                            "state": "NEVER_SUBSCRIBED",
                            "optInLevel": "SINGLE_OPT_IN",
                            "updatedAt": None,
                        },
                    }
                    if v
                    else None
                ),
            },
            "state": lambda v: {"state": str(v).upper()},
            "amount_spent": lambda v: {
                "amountSpent": {"amount": money(_cents(v)), "currencyCode": self.currency}
            },
            "number_of_orders": lambda v: {"numberOfOrders": str(int(v))},
            "orders_count": lambda v: {"numberOfOrders": str(int(v))},
            "tags": lambda v: {"tags": _tags(v)},
        }

    def _product_aliases(self) -> dict[str, Alias]:
        return {
            "status": lambda v: {"status": str(v).upper()},
            "tags": lambda v: {"tags": _tags(v)},
        }

    # Node dicts exactly as the GraphQL API returns them for a selection of every field the
    # simulator models (LazyRef customers compare equal to {"id": gid}).
    def customer_node(self, index: int) -> Node | None:
        return self.customers.node(index)

    def product_node(self, index: int) -> Node | None:
        return self.products.node(index)

    def order_node(self, index: int) -> Node | None:
        return self.orders.node(index)

    def location_node(self, index: int) -> Node | None:
        return self.locations.node(index)

    def update_location(self, index: int, **fields: Any) -> Node:
        node = self.locations.update(index, **fields)
        self.webhooks.record_changed("locations", "update", index)
        return node

    def delete_location(self, index: int) -> None:
        self.locations.delete(index)
        self.webhooks.record_changed("locations", "delete", index)

    def create_location(self, **fields: Any) -> int:
        index = self.locations.create(**fields)
        self.webhooks.record_changed("locations", "create", index)
        return index

    def update_customer(self, index: int, **fields: Any) -> Node:
        node = self.customers.update(index, **fields)
        self.webhooks.record_changed("customers", "update", index)
        return node

    def update_product(self, index: int, **fields: Any) -> Node:
        node = self.products.update(index, **fields)
        self.webhooks.record_changed("products", "update", index)
        return node

    def update_order(self, index: int, **fields: Any) -> Node:
        node = self.orders.update(index, **fields)
        self.webhooks.record_changed("orders", "update", index)
        return node

    def delete_customer(self, index: int) -> None:
        self.customers.delete(index)
        self.webhooks.record_changed("customers", "delete", index)

    def delete_product(self, index: int) -> None:
        """Its variants' inventory items go with it: inventory_items/delete for each."""
        node = self.products.node(index)
        items = [
            value_of(variant, "inventoryItem")
            for variant in (children_of(node, "variants") if node is not None else [])
        ]
        self.products.delete(index)
        self.webhooks.record_changed("products", "delete", index)
        for item in items:
            self._emit("inventory_items/delete", {"id": numeric(item["id"])}, "products", index)

    def delete_order(self, index: int) -> None:
        self.orders.delete(index)
        self.webhooks.record_changed("orders", "delete", index)

    def create_customer(self, **fields: Any) -> int:
        index = self.customers.create(**fields)
        self.webhooks.record_changed("customers", "create", index)
        return index

    def create_product(self, **fields: Any) -> int:
        """Its variants come with new inventory items, stocked at the store's locations:
        inventory_items/create and inventory_levels/connect for each."""
        index = self.products.create(**fields)
        self.webhooks.record_changed("products", "create", index)
        node = self.products.node(index)
        renderer = self.webhooks.renderer
        for variant in children_of(node, "variants") if node is not None else []:
            item = value_of(variant, "inventoryItem")
            self._emit("inventory_items/create", renderer.inventory_item(item), "products", index)
            # Stocked where the new product is: inventory_levels/connect for each location.
            for level in children_of(item, "inventoryLevels"):
                self._emit(
                    "inventory_levels/connect", renderer.inventory_level(level), "products", index
                )
        return index

    def create_order(self, **fields: Any) -> int:
        index = self.orders.create(**fields)
        self.webhooks.record_changed("orders", "create", index)
        return index

    # -- children (children.py): changes that Shopify reports on their own topics --

    def _emit(self, topic: str, payload: dict[str, Any], resource: str, index: int) -> None:
        if self.webhooks.enabled:
            self.webhooks.emit(topic, payload, resource=resource, index=index)

    def _now(self) -> str:
        return iso(epoch(self.clock.now()))

    def _bundle(self, index: int) -> dict[str, Any]:
        """A private copy of order ``index``'s children to change (copy on write: the
        stored one may be in a snapshot a bulk export is reading)."""
        node = self.orders.node(index)
        if node is None:
            raise KeyError(f"no live Order at index {index}")
        # One deepcopy keeps the sharing (a refund line item is its line item).
        return copy.deepcopy({field: children_of(node, field) for field in _BUNDLE_FIELDS})

    def _store_bundle(self, index: int, bundle: dict[str, Any], **status: str) -> Node:
        recount(bundle)
        self.orders.set_hidden(index, "_orderBundle", bundle, touch=True)
        if status:
            self.orders.update(index, **status)
        node = self.orders.node(index)
        assert node is not None
        return node

    def add_refund(
        self,
        index: int,
        line_items: list[tuple[int, int]] | None = None,
        *,
        amount: Any = None,
        note: str | None = None,
        restock_type: str = "RETURN",
    ) -> Node:
        """Refund ``(line item position, quantity)`` pairs of order ``index`` (default: one
        unit of the first line); emits refunds/create, order_transactions/create (the refund
        transaction) and orders/updated. Returns the refund node."""
        bundle = self._bundle(index)
        node = self.orders.node(index)
        assert node is not None
        lines = bundle["lineItems"]
        chosen = [(lines[p], q) for p, q in (line_items or [(0, 1)])]
        currency = node.get("currencyCode") or self.currency
        cents = (
            _cents(amount)
            if amount is not None
            else sum(
                _cents(line["originalUnitPriceSet"]["shopMoney"]["amount"]) * q
                for line, q in chosen
            )
        )
        transactions = bundle["transactions"]
        parent = next(
            (
                t
                for t in transactions
                if t["kind"] in ("SALE", "CAPTURE") and t["status"] == "SUCCESS"
            ),
            None,
        )
        refund = self.order_children.new_refund(
            index,
            len(bundle["refunds"]),
            chosen,
            cents,
            currency,
            self._now(),
            restock_type.upper(),
            parent,
            node,
            note,
            transaction_position=_free_position(transactions),
        )
        bundle["refunds"].append(refund)
        transactions.extend(refund["transactions"].items())
        refunded = sum(
            _cents(r["totalRefundedSet"]["shopMoney"]["amount"]) for r in bundle["refunds"]
        )
        total = _cents(node["totalPriceSet"]["shopMoney"]["amount"])
        status = "REFUNDED" if refunded >= total else "PARTIALLY_REFUNDED"
        node = self._store_bundle(index, bundle, financial_status=status)
        stored = next(r for r in children_of(node, "refunds") if r["id"] == refund["id"])
        renderer = self.webhooks.renderer
        self._emit("refunds/create", renderer.refund(node, stored), "orders", index)
        for transaction in children_of(stored, "transactions"):
            self._emit(
                "order_transactions/create",
                renderer.transaction(node, transaction),
                "orders",
                index,
            )
        self.webhooks.record_changed("orders", "update", index)
        return stored

    def add_transaction(
        self,
        index: int,
        kind: str = "CAPTURE",
        *,
        amount: Any = None,
        status: str = "SUCCESS",
        gateway: str | None = None,
    ) -> Node:
        """Record a payment transaction on order ``index`` (a capture's parent is the last
        authorization); emits order_transactions/create and orders/updated."""
        bundle = self._bundle(index)
        node = self.orders.node(index)
        assert node is not None
        transactions = bundle["transactions"]
        kind = kind.upper()
        parent = None
        if kind in ("CAPTURE", "VOID"):
            parent = next((t for t in reversed(transactions) if t["kind"] == "AUTHORIZATION"), None)
        if kind == "REFUND":
            parent = next((t for t in transactions if t["kind"] in ("SALE", "CAPTURE")), None)
        total = _cents(node["totalPriceSet"]["shopMoney"]["amount"])
        transaction = self.order_children.new_transaction(
            index,
            _free_position(transactions),
            kind,
            _cents(amount) if amount is not None else total,
            node.get("currencyCode") or self.currency,
            self._now(),
            gateway or (transactions[0]["gateway"] if transactions else "manual"),
            status.upper(),
            parent,
            node,
        )
        transactions.append(transaction)
        node = self._store_bundle(index, bundle)
        stored = next(t for t in children_of(node, "transactions") if t["id"] == transaction["id"])
        self._emit(
            "order_transactions/create",
            self.webhooks.renderer.transaction(node, stored),
            "orders",
            index,
        )
        self.webhooks.record_changed("orders", "update", index)
        return stored

    def add_fulfillment(
        self,
        index: int,
        line_items: list[tuple[int, int]] | None = None,
        *,
        tracking_company: str | None = None,
        tracking_numbers: list[str] | None = None,
    ) -> Node:
        """Fulfil ``(line item position, quantity)`` pairs (default: everything still
        unfulfilled); emits fulfillments/create and orders/updated."""
        bundle = self._bundle(index)
        node = self.orders.node(index)
        assert node is not None
        lines = bundle["lineItems"]
        if line_items is None:
            chosen = [(line, line["unfulfilledQuantity"]) for line in lines]
            chosen = [(line, q) for line, q in chosen if q > 0]
        else:
            chosen = [(lines[p], q) for p, q in line_items]
        if not chosen:
            raise ValueError(f"order {index} has nothing left to fulfil")
        fulfillment = self.order_children.new_fulfillment(
            index, len(bundle["fulfillments"]), chosen, {**node, "updatedAt": self._now()}
        )
        if tracking_company is not None or tracking_numbers is not None:
            info = fulfillment["trackingInfo"].items()
            company = tracking_company or (info[0]["company"] if info else None)
            fulfillment["trackingInfo"] = type(fulfillment["trackingInfo"])(
                [{"company": company, "number": n, "url": None} for n in tracking_numbers or []]
            )
        bundle["fulfillments"].append(fulfillment)
        recount(bundle)
        remaining = sum(line["unfulfilledQuantity"] for line in lines)
        status = "FULFILLED" if remaining == 0 else "PARTIALLY_FULFILLED"
        node = self._store_bundle(index, bundle, fulfillment_status=status)
        stored = next(f for f in children_of(node, "fulfillments") if f["id"] == fulfillment["id"])
        self._emit(
            "fulfillments/create", self.webhooks.renderer.fulfillment(node, stored), "orders", index
        )
        self.webhooks.record_changed("orders", "update", index)
        return stored

    def update_fulfillment(
        self,
        index: int,
        position: int,
        *,
        status: str | None = None,
        display_status: str | None = None,
        tracking_numbers: list[str] | None = None,
        tracking_company: str | None = None,
    ) -> Node:
        """Change fulfillment ``position`` of order ``index`` (tracking, shipment status,
        ``status="CANCELLED"``); emits fulfillments/update and orders/updated."""
        bundle = self._bundle(index)
        fulfillment = bundle["fulfillments"][position]
        now = self._now()
        if status is not None:
            fulfillment["status"] = status.upper()
        if display_status is not None:
            fulfillment["displayStatus"] = display_status.upper()
        if tracking_numbers is not None or tracking_company is not None:
            info = fulfillment["trackingInfo"].items()
            company = tracking_company or (info[0]["company"] if info else None)
            numbers = (
                tracking_numbers if tracking_numbers is not None else [t["number"] for t in info]
            )
            fulfillment["trackingInfo"] = type(fulfillment["trackingInfo"])(
                [{"company": company, "number": n, "url": None} for n in numbers]
            )
        fulfillment["updatedAt"] = now
        node = self._store_bundle(index, bundle)
        stored = children_of(node, "fulfillments")[position]
        self._emit(
            "fulfillments/update", self.webhooks.renderer.fulfillment(node, stored), "orders", index
        )
        self.webhooks.record_changed("orders", "update", index)
        return stored

    def _specs(self, index: int) -> list[dict[str, Any]]:
        node = self.products.node(index)
        if node is None:
            raise KeyError(f"no live Product at index {index}")
        return copy.deepcopy(self.product_children.specs(index, node))

    def _spec(self, specs: list[dict[str, Any]], position: int) -> dict[str, Any]:
        """The spec of the variant at ``position`` (0-based, as the product lists them)."""
        if not 0 <= position < len(specs):
            raise KeyError(f"no variant at position {position}")
        spec = specs[position]
        if "levels" not in spec:
            spec["levels"] = None
        return spec

    def _variant(self, index: int, position: int) -> Node:
        node = self.products.node(index)
        assert node is not None
        return children_of(node, "variants")[position]

    def add_variant(self, index: int, **fields: Any) -> Node:
        """A new variant (and inventory item, stocked at the first location) on product
        ``index``; emits products/update, inventory_items/create, inventory_levels/connect."""
        specs = self._specs(index)
        k = max((spec["k"] for spec in specs), default=-1) + 1
        now = self._now()
        specs.append(
            {
                "k": k,
                "fields": _variant_fields(fields),
                "createdAt": now,
                "updatedAt": now,
                "levels": {0: {"available": 0, "committed": 0, "incoming": 0, "updatedAt": now}},
            }
        )
        self.products.set_hidden(index, "_variantSpecs", specs, touch=True)
        variant = self._variant(index, len(specs) - 1)
        renderer = self.webhooks.renderer
        self.webhooks.record_changed("products", "update", index)
        item = variant["inventoryItem"]
        self._emit("inventory_items/create", renderer.inventory_item(item), "products", index)
        for level in children_of(item, "inventoryLevels"):
            self._emit(
                "inventory_levels/connect", renderer.inventory_level(level), "products", index
            )
        return variant

    def update_variant(self, index: int, position: int, **fields: Any) -> Node:
        """Change variant ``position`` of product ``index`` (``price``, ``sku``, ``title``,
        ``barcode``, ...); emits products/update."""
        specs = self._specs(index)
        spec = self._spec(specs, position)
        spec["fields"] = {**(spec.get("fields") or {}), **_variant_fields(fields)}
        spec["updatedAt"] = self._now()
        self.products.set_hidden(index, "_variantSpecs", specs, touch=True)
        self.webhooks.record_changed("products", "update", index)
        return self._variant(index, position)

    def remove_variant(self, index: int, position: int) -> None:
        """Delete variant ``position`` of product ``index`` with its inventory item; emits
        products/update (without it) and inventory_items/delete."""
        specs = self._specs(index)
        self._spec(specs, position)
        item_id = numeric(self._variant(index, position)["inventoryItem"]["id"])
        del specs[position]
        self.products.set_hidden(index, "_variantSpecs", specs, touch=True)
        self.webhooks.record_changed("products", "update", index)
        self._emit("inventory_items/delete", {"id": item_id}, "products", index)

    def update_inventory_item(self, index: int, position: int, **fields: Any) -> Node:
        """Change the inventory item of variant ``position`` (``sku``, ``tracked``,
        ``cost``, ``harmonized_system_code``, ...); emits inventory_items/update."""
        specs = self._specs(index)
        spec = self._spec(specs, position)
        item_fields = dict(spec.get("item") or {})
        for name, value in fields.items():
            if name == "cost":
                item_fields["unitCost"] = {
                    "amount": money(_cents(value)),
                    "currencyCode": self.currency,
                }
            else:
                item_fields[_camel(name)] = value
        item_fields["updatedAt"] = self._now()
        spec["item"] = item_fields
        self.products.set_hidden(index, "_variantSpecs", specs, touch=False)
        item = self._variant(index, position)["inventoryItem"]
        self._emit(
            "inventory_items/update", self.webhooks.renderer.inventory_item(item), "products", index
        )
        return item

    def _levels(self, index: int, position: int) -> tuple[list[dict[str, Any]], dict[int, Any]]:
        specs = self._specs(index)
        spec = self._spec(specs, position)
        levels = spec["levels"]
        if levels is None:
            levels = copy.deepcopy(self.product_children.default_levels(index, spec["k"]))
        spec["levels"] = levels
        return specs, levels

    def _level_changed(self, index: int, position: int, location: int, topic: str) -> Node | None:
        variant = self._variant(index, position)
        location_gid = self.locations.gid(location)
        level = next(
            (
                lv
                for lv in children_of(variant["inventoryItem"], "inventoryLevels")
                if lv["location"]["id"] == location_gid
            ),
            None,
        )
        # No topic: the caller sends its own (a disconnect's body is not a level's).
        if level is not None and topic:
            self._emit(topic, self.webhooks.renderer.inventory_level(level), "products", index)
        return level

    def set_inventory(
        self, index: int, position: int, location: int, **quantities: int
    ) -> Node | None:
        """Set quantities (``available``, ``committed``, ``incoming``, ...) of variant
        ``position``'s item at location index ``location`` (connecting it if needed); emits
        inventory_levels/update. The product's updatedAt does not move."""
        specs, levels = self._levels(index, position)
        level = levels.setdefault(
            location, {"available": 0, "committed": 0, "incoming": 0, "createdAt": self._now()}
        )
        for name, amount in quantities.items():
            if name not in QUANTITY_NAMES or name == "on_hand":
                raise ValueError(f"{name!r} is not a settable quantity")
            level[name] = int(amount)
        level["updatedAt"] = self._now()
        self.products.set_hidden(index, "_variantSpecs", specs, touch=False)
        return self._level_changed(index, position, location, "inventory_levels/update")

    def connect_inventory(
        self, index: int, position: int, location: int, available: int = 0
    ) -> Node | None:
        """Stock variant ``position``'s item at a location; emits inventory_levels/connect."""
        specs, levels = self._levels(index, position)
        now = self._now()
        levels[location] = {
            "available": available,
            "committed": 0,
            "incoming": 0,
            "createdAt": now,
            "updatedAt": now,
        }
        self.products.set_hidden(index, "_variantSpecs", specs, touch=False)
        return self._level_changed(index, position, location, "inventory_levels/connect")

    def disconnect_inventory(self, index: int, position: int, location: int) -> None:
        """Stop stocking the item at a location; emits inventory_levels/disconnect."""
        level = self._level_changed(index, position, location, "")
        if level is None:
            raise KeyError(f"variant {position} of product {index} is not at location {location}")
        payload = {
            "inventory_item_id": numeric(level["item"]["id"]),
            "location_id": numeric(level["location"]["id"]),
        }
        specs, levels = self._levels(index, position)
        del levels[location]
        self.products.set_hidden(index, "_variantSpecs", specs, touch=False)
        self._emit("inventory_levels/disconnect", payload, "products", index)

    def add_address(self, index: int, *, default: bool = False, **fields: Any) -> Node:
        """Add an address to customer ``index`` (GraphQL MailingAddress field names in
        snake_case or camelCase); emits customers/update."""
        node = self.customers.node(index)
        if node is None:
            raise KeyError(f"no live Customer at index {index}")
        addresses = copy.deepcopy(children_of(node, "addresses"))
        used = {numeric(a["id"]) for a in addresses}
        base = CUSTOMER_ADDRESS_ID_BASE + index * ADDRESS_STRIDE
        number = next((base + k for k in range(ADDRESS_STRIDE) if base + k not in used), None)
        if number is None:
            raise ValueError(f"customer {index} has {ADDRESS_STRIDE} addresses already")
        address: Node = {
            "__typename": "MailingAddress",
            "id": f"{gid('MailingAddress', number)}?model_name=CustomerAddress",
            "firstName": node.get("firstName"),
            "lastName": node.get("lastName"),
            "name": f"{node.get('firstName')} {node.get('lastName')}",
            "company": None,
            "address1": None,
            "address2": None,
            "city": None,
            "province": None,
            "provinceCode": None,
            "country": None,
            "countryCodeV2": None,
            "zip": None,
            "phone": None,
            "latitude": None,
            "longitude": None,
            "coordinatesValidated": False,
            "timeZone": None,
            "formattedArea": None,
        }
        address.update({_camel(k): v for k, v in fields.items()})
        if "country_code" in fields:
            address["countryCodeV2"] = fields["country_code"]
        addresses.insert(0, address) if default else addresses.append(address)
        self.customers.set_hidden(index, "_addresses", addresses, touch=True)
        self.webhooks.record_changed("customers", "update", index)
        return address

    def remove_address(self, index: int, position: int) -> None:
        """Remove address ``position`` of customer ``index`` (the first is the default);
        emits customers/update."""
        node = self.customers.node(index)
        if node is None:
            raise KeyError(f"no live Customer at index {index}")
        addresses = copy.deepcopy(children_of(node, "addresses"))
        del addresses[position]
        self.customers.set_hidden(index, "_addresses", addresses, touch=True)
        self.webhooks.record_changed("customers", "update", index)

    # -- metafields --

    def set_metafield(
        self,
        resource: str,
        index: int,
        namespace: str,
        key: str,
        value: str,
        kind: str = "single_line_text_field",
    ) -> Node:
        """``metafieldsSet`` on record ``index`` of ``resource``: creates or changes
        ``namespace.key``. Shopify sends no update topic for it (merchants report products/
        update does not fire on a metafield change), so the simulator sends none either and
        leaves the owner's ``updatedAt`` alone."""
        owner_type = {v: k for k, v in METAFIELD_RESOURCES.items()}[resource]
        items = self._metafields_of(resource, index)
        stamp = iso(epoch(self.clock.now()))
        found = next((m for m in items if (m["namespace"], m["key"]) == (namespace, key)), None)
        if found is not None:
            changed = metafield_node(
                numeric(found["id"]), owner_type, namespace, key, kind, value,
                found["createdAt"],
            ) | {"updatedAt": stamp}  # fmt: skip
            items = [changed if m is found else m for m in items]
        else:
            used = [numeric(m["id"]) % METAFIELD_STRIDE for m in items]
            position = max(used, default=-1) + 1
            if position >= METAFIELD_STRIDE:
                raise ValueError(f"the simulator holds {METAFIELD_STRIDE} metafields a record")
            number = METAFIELD_ID_BASES[owner_type] + index * METAFIELD_STRIDE + position
            changed = metafield_node(number, owner_type, namespace, key, kind, value, stamp)
            items.append(changed)
        self.resource(resource).set_hidden(index, "_metafields", items, touch=False)
        return changed

    def delete_metafield(self, resource: str, index: int, namespace: str, key: str) -> None:
        """``metafieldsDelete`` of ``namespace.key`` on record ``index`` (no webhook)."""
        items = self._metafields_of(resource, index)
        kept = [m for m in items if (m["namespace"], m["key"]) != (namespace, key)]
        if len(kept) == len(items):
            raise KeyError(f"{resource} {index} has no metafield {namespace}.{key}")
        self.resource(resource).set_hidden(index, "_metafields", kept, touch=False)

    def _metafields_of(self, resource: str, index: int) -> list[Node]:
        node = self.resource(resource).node(index)
        if node is None:
            raise KeyError(f"no live {resource} record at index {index}")
        return copy.deepcopy(children_of(node, "metafields"))

    @property
    def counts(self) -> dict[str, int]:
        """Live records per resource (what a full backfill should end with)."""
        return {name: self.resource(name).count for name in RESOURCE_NAMES}

    @property
    def shop_id(self) -> int:
        """Shopify's numeric shop id: one per shop, so two stores on one seed differ."""
        return 60_000_000_000 + (mix64(stream_key(self.seed, f"shop:{self.shop_domain}")) % 10**9)

    def shop_node(self) -> Node:
        stamp = "2020-06-01T00:00:00Z"
        name = self.shop_domain.removesuffix(".myshopify.com")
        return {
            "__typename": "Shop",
            "id": gid("Shop", self.shop_id),
            "name": name.replace("-", " ").title(),
            "myshopifyDomain": self.shop_domain,
            "email": f"owner@{name}.example",
            "currencyCode": self.currency,
            "ianaTimezone": "Etc/UTC",
            "createdAt": stamp,
            "updatedAt": stamp,
        }

    # -- tokens, faults, throttle --

    def issue_expiring_token(
        self, expires_in: int | None = None, refresh_token_expires_in: int | None = None
    ) -> dict[str, Any]:
        """An expiring offline token pair, as the OAuth grant would return it."""
        return self.tokens.issue_expiring(expires_in, refresh_token_expires_in)

    def add_token(self, token: str | None = None) -> str:
        """Another non-expiring offline token."""
        return self.tokens.add_static(token)

    def revoke_token(self, token: str | None = None) -> None:
        self.tokens.revoke(token or self.access_token)

    def on_request(self, callback: RequestHook) -> RequestHook:
        """Run ``callback`` for each GraphQL request, after its answer is computed and before
        it is sent (see ``hooks.py``); returns it, so it can be passed to ``hooks.remove``."""
        self.hooks.add(callback)
        return callback

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each matching request consumes the first one that applies."""
        self.faults.inject(*faults)

    def configure_throttle(
        self,
        maximum_available: float | None = None,
        restore_rate: float | None = None,
        enabled: bool | None = None,
        status: int | None = None,
    ) -> None:
        self.bucket.configure(maximum_available, restore_rate, enabled)
        if status is not None:
            self.throttle_status = status

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = Stats()
