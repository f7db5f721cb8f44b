"""Render a store's GraphQL-shaped records as the REST resources that webhooks carry.

Shopify serialises a webhook's body as the REST resource of its topic (SHOPIFY.md,
"Payloads"), not as the GraphQL node the backfill reads. The renderer follows the shapes of
``receiver/webhook_samples``: numeric ``id`` beside ``admin_graphql_api_id``, snake_case
fields, money as two-decimal strings with ``*_set`` bags, lower-case statuses, ``tags`` as
one comma-separated string, timestamps in the shop's UTC offset (the same instants as the
node's ``createdAt``/``updatedAt``), an order's ``customer`` object and ``line_items``, a
product's ``variants``.

Children come from the same generated data the GraphQL API serves (``children.py``): an
order's ``line_items``, ``refunds`` (with ``refund_line_items`` and ``transactions``),
``fulfillments`` and ``shipping_address``; a product's ``variants`` (cut at
``variant_limit``, with every variant in ``variant_gids``, as the products/update sample
shows) and ``category``; a customer's ``addresses`` and ``default_address``. The bodies of the
child topics (refunds/create, order_transactions/create, fulfillments/*, inventory_levels/*,
inventory_items/*) are rendered here too. Discounts and duties are empty.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from .children import children_of, numeric, value_of
from .data import Node, gid

if TYPE_CHECKING:
    from .store import FakeStore

SHIPPING_LINE_ID_BASE = 4_400_000_000_000
# A shop in New York: REST renders times in the shop's zone, and an offset other than UTC is
# what catches a consumer that compares timestamps as strings.
DEFAULT_UTC_OFFSET = timedelta(hours=-5)
# How many variants a products/* body carries before `variant_gids` alone lists the rest.
# *Unverified* number (notes/shopify-children.md section 3); a knob of WebhookEmitter.enable.
DEFAULT_VARIANT_LIMIT = 100
SHIPMENT_STATUSES = {
    "DELIVERED": "delivered",
    "IN_TRANSIT": "in_transit",
    "OUT_FOR_DELIVERY": "out_for_delivery",
    "CONFIRMED": "confirmed",
    "LABEL_PRINTED": "label_printed",
}

# REST's fulfillment_status knows only these; every other displayFulfillmentStatus (UNFULFILLED,
# IN_PROGRESS, ON_HOLD, SCHEDULED, ...) is null, as no line item has been fulfilled yet
# (community.shopify.com/t/124722: an "On hold" order reads fulfillment_status null over REST).
REST_FULFILLMENT = {
    "FULFILLED": "fulfilled",
    "PARTIALLY_FULFILLED": "partial",
    "RESTOCKED": "restocked",
}

# "current": API 2025-01 and later, whose customer webhooks carry no spend, order count, tags or
# marketing consent (those arrive on customers/purchasing_summary and their own topics).
SpendStyle = Literal["total_spent", "amount_spent", "current"]
# What a "current" customer payload no longer has.
REMOVED_IN_2025_01 = (
    "orders_count",
    "tags",
    "last_order_id",
    "last_order_name",
    "email_marketing_consent",
    "sms_marketing_consent",
)


def local_time(stamp: str | None, offset: timedelta) -> str | None:
    """``2025-03-01T12:00:00Z`` as ``2025-03-01T07:00:00-05:00`` (same instant)."""
    if stamp is None:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment.astimezone(timezone(offset)).isoformat()


def numeric_id(node_id: str) -> int:
    return int(node_id.rsplit("/", 1)[-1])


def lower(value: str | None) -> str | None:
    return value.lower() if value else None


def rest_money(amount: str, currency: str) -> dict[str, dict[str, str]]:
    side = {"amount": amount, "currency_code": currency}
    return {"shop_money": dict(side), "presentment_money": dict(side)}


def _bag_amount(bag: Any) -> tuple[str, str]:
    shop = bag["shopMoney"]
    return str(shop["amount"]), str(shop["currencyCode"])


def _cents(amount: str) -> int:
    whole, _, frac = amount.lstrip("-").partition(".")
    cents = int(whole) * 100 + int((frac + "00")[:2])
    return -cents if amount.startswith("-") else cents


class RestRenderer:
    """REST payloads for one store's records (pure: reads the store, never changes it)."""

    def __init__(
        self,
        store: FakeStore,
        *,
        utc_offset: timedelta = DEFAULT_UTC_OFFSET,
        spend: SpendStyle = "total_spent",
        variant_limit: int = DEFAULT_VARIANT_LIMIT,
    ) -> None:
        self.store = store
        self.utc_offset = utc_offset
        self.variant_limit = variant_limit
        # Customer webhooks of older API versions carry `total_spent` (or a money object);
        # since 2025-01 they carry neither ("current").
        self.spend = spend

    def _time(self, stamp: str | None) -> str | None:
        return local_time(stamp, self.utc_offset)

    # -- whole records --

    def render(self, resource: str, node: Node) -> dict[str, Any]:
        if resource == "orders":
            return self.order(node)
        if resource == "customers":
            return self.customer(node)
        if resource == "products":
            return self.product(node)
        if resource == "locations":
            return self.location(node)
        raise KeyError(resource)

    def metafields(self, resource: str, node: Node, namespaces: tuple[str, ...]) -> list[Any]:
        """A record's metafields of these namespaces, as a subscription with
        ``metafieldNamespaces`` receives them in the record's body (``metafields``)."""
        owner_resource = {"orders": "order", "products": "product", "customers": "customer"}
        return [
            {
                "id": numeric_id(metafield["id"]),
                "namespace": metafield["namespace"],
                "key": metafield["key"],
                "value": metafield["value"],
                "description": metafield.get("description"),
                "owner_id": numeric_id(node["id"]),
                "created_at": self._time(metafield.get("createdAt")),
                "updated_at": self._time(metafield.get("updatedAt")),
                "owner_resource": owner_resource[resource],
                "type": metafield["type"],
                "admin_graphql_api_id": metafield["id"],
            }
            for namespace in namespaces
            for metafield in children_of(node, "metafields", {"namespace": namespace})
        ]

    def location(self, node: Node) -> dict[str, Any]:
        """A locations/create or locations/update body (REST `Location`)."""
        shopify_id = numeric_id(node["id"])
        address = node.get("address") or {}
        return {
            "id": shopify_id,
            "name": node["name"],
            "address1": address.get("address1"),
            "address2": address.get("address2"),
            "city": address.get("city"),
            "zip": address.get("zip"),
            "province": address.get("province"),
            "country": address.get("countryCode"),
            "phone": address.get("phone"),
            "created_at": self._time(node["createdAt"]),
            "updated_at": self._time(node["updatedAt"]),
            "country_code": address.get("countryCode"),
            "country_name": address.get("country"),
            "province_code": address.get("provinceCode"),
            "legacy": False,
            "active": node["isActive"],
            "admin_graphql_api_id": node["id"],
        }

    @staticmethod
    def deleted(resource: str, shopify_id: int) -> dict[str, Any]:
        """The body of ``*/delete``: little more than the id, as in the samples."""
        if resource == "customers":
            return {
                "id": shopify_id,
                "tax_exemptions": [],
                "admin_graphql_api_id": gid("Customer", shopify_id),
            }
        return {"id": shopify_id}

    def customer(self, node: Node, *, nested: bool = False) -> dict[str, Any]:
        """A customer webhook's body; ``nested`` is the shorter copy inside an order."""
        shopify_id = numeric_id(node["id"])
        spent, currency = str(node["amountSpent"]["amount"]), node["amountSpent"]["currencyCode"]
        email_address = node.get("defaultEmailAddress") or {}
        phone_number = node.get("defaultPhoneNumber") or {}
        payload: dict[str, Any] = {
            "id": shopify_id,
            "email": node.get("email") or email_address.get("emailAddress"),
            "created_at": self._time(node["createdAt"]),
            "updated_at": self._time(node["updatedAt"]),
            "first_name": node.get("firstName"),
            "last_name": node.get("lastName"),
            "state": lower(node.get("state")),
            "note": node.get("note"),
            "verified_email": bool(node.get("verifiedEmail")),
            "multipass_identifier": None,
            "tax_exempt": bool(node.get("taxExempt")),
            "phone": node.get("phone") or phone_number.get("phoneNumber"),
            "currency": currency,
            "tax_exemptions": [],
            "admin_graphql_api_id": node["id"],
            "default_address": None,
        }
        addresses = [
            self.address(address, shopify_id, k == 0)
            for k, address in enumerate(children_of(node, "addresses"))
        ]
        payload["default_address"] = addresses[0] if addresses else None
        if nested:
            return payload
        payload |= {
            "orders_count": int(node.get("numberOfOrders") or 0),
            "tags": ", ".join(node.get("tags") or []),
            "last_order_id": None,
            "last_order_name": None,
            "addresses": addresses,
            "email_marketing_consent": {
                "state": lower(email_address.get("marketingState")) or "not_subscribed",
                "opt_in_level": "single_opt_in",
                "consent_updated_at": None,
            },
            "sms_marketing_consent": (
                {
                    "state": lower(phone_number.get("marketingState")) or "not_subscribed",
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": None,
                    "consent_collected_from": "OTHER",
                }
                if payload["phone"]
                else None
            ),
        }
        if self.spend == "current":
            for key in REMOVED_IN_2025_01:
                del payload[key]
        elif self.spend == "amount_spent":
            payload["amount_spent"] = {"amount": spent, "currency_code": currency}
        else:
            payload["total_spent"] = spent
        return payload

    def address(self, address: Node, customer_id: int, default: bool) -> dict[str, Any]:
        """A customer address as REST renders it (``addresses[]``, ``default_address``)."""
        return {
            "id": numeric(address["id"]),
            "customer_id": customer_id,
            "first_name": address.get("firstName"),
            "last_name": address.get("lastName"),
            "company": address.get("company"),
            "address1": address.get("address1"),
            "address2": address.get("address2"),
            "city": address.get("city"),
            "province": address.get("province"),
            "country": address.get("country"),
            "zip": address.get("zip"),
            "phone": address.get("phone"),
            "name": address.get("name"),
            "province_code": address.get("provinceCode"),
            "country_code": address.get("countryCodeV2"),
            "country_name": address.get("country"),
            "default": default,
        }

    @staticmethod
    def shipping_address(address: Node | None) -> dict[str, Any] | None:
        if address is None:
            return None
        return {
            "first_name": address.get("firstName"),
            "address1": address.get("address1"),
            "phone": address.get("phone"),
            "city": address.get("city"),
            "zip": address.get("zip"),
            "province": address.get("province"),
            "country": address.get("country"),
            "last_name": address.get("lastName"),
            "address2": address.get("address2"),
            "company": address.get("company"),
            "latitude": address.get("latitude"),
            "longitude": address.get("longitude"),
            "name": address.get("name"),
            "country_code": address.get("countryCodeV2"),
            "province_code": address.get("provinceCode"),
        }

    def product(self, node: Node) -> dict[str, Any]:
        shopify_id = numeric_id(node["id"])
        all_variants = children_of(node, "variants")
        variants = [self.variant(v, shopify_id) for v in all_variants[: self.variant_limit]]
        category = node.get("category")
        option = all_variants[0]["selectedOptions"][0]["name"] if all_variants else "Title"
        return {
            "admin_graphql_api_id": node["id"],
            "body_html": node.get("descriptionHtml"),
            "created_at": self._time(node["createdAt"]),
            "handle": node.get("handle"),
            "id": shopify_id,
            "product_type": node.get("productType"),
            "published_at": self._time(node.get("publishedAt")),
            "template_suffix": None,
            "title": node.get("title"),
            "updated_at": self._time(node["updatedAt"]),
            "vendor": node.get("vendor"),
            "status": lower(node.get("status")),
            "published_scope": "global",
            "tags": ", ".join(node.get("tags") or []),
            "variants": variants,
            # Every variant, however many `variants` carries (products_update sample).
            "variant_gids": [
                {"admin_graphql_api_id": v["id"], "updated_at": self._time(v["updatedAt"])}
                for v in all_variants
            ],
            "options": [
                {
                    "name": option,
                    "product_id": shopify_id,
                    "position": 1,
                    "values": [v["title"] for v in all_variants],
                }
            ],
            "images": [],
            "image": None,
            "category": (
                {
                    "admin_graphql_api_id": category["id"],
                    "name": category["name"],
                    "full_name": category["fullName"],
                }
                if category
                else None
            ),
        }

    def variant(self, variant: Node, product_id: int) -> dict[str, Any]:
        item = variant["inventoryItem"]
        return {
            "admin_graphql_api_id": variant["id"],
            "barcode": variant.get("barcode"),
            "compare_at_price": variant.get("compareAtPrice"),
            "created_at": self._time(variant["createdAt"]),
            "id": numeric(variant["id"]),
            "inventory_policy": lower(variant.get("inventoryPolicy")),
            "position": variant["position"],
            "price": variant["price"],
            "product_id": product_id,
            "sku": variant.get("sku"),
            "taxable": variant.get("taxable"),
            "title": variant["title"],
            "updated_at": self._time(variant["updatedAt"]),
            "option1": variant["selectedOptions"][0]["value"],
            "option2": None,
            "option3": None,
            "image_id": None,
            "inventory_item_id": numeric(item["id"]),
            "inventory_quantity": variant.get("inventoryQuantity"),
            "old_inventory_quantity": variant.get("inventoryQuantity"),
        }

    def inventory_item(self, item: Node) -> dict[str, Any]:
        """The body of inventory_items/create|update (REST ``InventoryItem``)."""
        cost = item.get("unitCost")
        return {
            "id": numeric(item["id"]),
            "sku": item.get("sku"),
            "created_at": self._time(item["createdAt"]),
            "updated_at": self._time(item["updatedAt"]),
            "requires_shipping": item.get("requiresShipping"),
            "cost": cost["amount"] if cost else None,
            "country_code_of_origin": item.get("countryCodeOfOrigin"),
            "province_code_of_origin": item.get("provinceCodeOfOrigin"),
            "harmonized_system_code": item.get("harmonizedSystemCode"),
            "tracked": item.get("tracked"),
            "country_harmonized_system_codes": [],
            "admin_graphql_api_id": item["id"],
        }

    def inventory_level(self, level: Node) -> dict[str, Any]:
        """The body of inventory_levels/update|connect (only ``available``; the other
        quantities are read over GraphQL)."""
        return {
            "inventory_item_id": numeric(level["item"]["id"]),
            "location_id": numeric(level["location"]["id"]),
            "available": level["_values"]["available"],
            "updated_at": self._time(level["updatedAt"]),
            "admin_graphql_api_id": level["id"],
        }

    def line_item(self, line: Node, currency: str, quantity: int | None = None) -> dict[str, Any]:
        price, _ = _bag_amount(line["originalUnitPriceSet"])
        discount, _ = _bag_amount(line["totalDiscountSet"])
        product, variant = line.get("product"), line.get("variant")
        status = line.get("fulfillmentStatus")
        return {
            "id": numeric(line["id"]),
            "admin_graphql_api_id": line["id"],
            "current_quantity": line["currentQuantity"],
            "fulfillable_quantity": line["fulfillableQuantity"],
            "fulfillment_service": "manual",
            "fulfillment_status": status if status in ("fulfilled", "partial") else None,
            "gift_card": line["isGiftCard"],
            "grams": 200,
            "name": line["name"],
            "price": price,
            "price_set": rest_money(price, currency),
            "product_exists": product is not None,
            "product_id": numeric(product["id"]) if product else None,
            "properties": [],
            "quantity": line["quantity"] if quantity is None else quantity,
            "requires_shipping": line["requiresShipping"],
            "sku": line.get("sku"),
            "taxable": line["taxable"],
            "title": line["title"],
            "total_discount": discount,
            "total_discount_set": rest_money(discount, currency),
            "variant_id": numeric(variant["id"]) if variant else None,
            "variant_inventory_management": "shopify" if variant else None,
            "variant_title": line.get("variantTitle"),
            "vendor": line.get("vendor"),
            "tax_lines": [],
            "duties": [],
            "discount_allocations": [],
        }

    def transaction(self, order: Node, transaction: Node) -> dict[str, Any]:
        """A REST ``Transaction``: the body of order_transactions/create, and inside refunds."""
        amount, currency = _bag_amount(transaction["amountSet"])
        parent = transaction.get("parentTransaction")
        return {
            "id": numeric(transaction["id"]),
            "admin_graphql_api_id": transaction["id"],
            "order_id": numeric(order["id"]),
            "kind": lower(transaction["kind"]),
            "gateway": transaction.get("gateway"),
            "status": lower(transaction["status"]),
            "message": None,
            "created_at": self._time(transaction["createdAt"]),
            "test": bool(transaction.get("test")),
            "authorization": None,
            "location_id": None,
            "user_id": None,
            "parent_id": numeric(parent["id"]) if parent else None,
            "processed_at": self._time(transaction.get("processedAt")),
            "device_id": None,
            "error_code": lower(transaction.get("errorCode")),
            "source_name": "web",
            "receipt": {},
            "currency_exchange_adjustment": None,
            "amount": amount,
            "currency": currency,
            "payment_id": transaction.get("paymentId"),
            "manual_payment_gateway": bool(transaction.get("manualPaymentGateway")),
        }

    def refund(self, order: Node, refund: Node) -> dict[str, Any]:
        """A REST ``Refund``: the body of refunds/create, and each of an order's ``refunds``.
        REST has no refunded total: it is the sum of the refund's transactions."""
        currency = order.get("currencyCode") or self.store.currency
        items = children_of(refund, "refundLineItems")
        return {
            "id": numeric(refund["id"]),
            "admin_graphql_api_id": refund["id"],
            "order_id": numeric(order["id"]),
            "created_at": self._time(refund.get("createdAt")),
            "processed_at": self._time(refund["processedAt"]),
            "note": refund.get("note"),
            "restock": any(item["restocked"] for item in items),
            "user_id": None,
            "duties": [],
            "order_adjustments": [],
            "total_duties_set": rest_money("0.00", currency),
            "return": None,
            "refund_line_items": [
                {
                    "id": numeric(item["id"]),
                    "line_item_id": numeric(item["lineItem"]["id"]),
                    "location_id": None,
                    "quantity": item["quantity"],
                    "restock_type": lower(item["restockType"]),
                    # REST's refund line item amounts are JSON numbers (REST Refund resource).
                    "subtotal": float(_bag_amount(item["subtotalSet"])[0]),
                    "subtotal_set": rest_money(_bag_amount(item["subtotalSet"])[0], currency),
                    "total_tax": float(_bag_amount(item["totalTaxSet"])[0]),
                    "total_tax_set": rest_money(_bag_amount(item["totalTaxSet"])[0], currency),
                    "line_item": self.line_item(item["lineItem"], currency),
                }
                for item in items
            ],
            "transactions": [
                self.transaction(order, t) for t in children_of(refund, "transactions")
            ],
        }

    def fulfillment(self, order: Node, fulfillment: Node) -> dict[str, Any]:
        """A REST ``Fulfillment``: the body of fulfillments/create|update, and each of an
        order's ``fulfillments``."""
        currency = order.get("currencyCode") or self.store.currency
        tracking = children_of(fulfillment, "trackingInfo")
        location = fulfillment.get("location")
        return {
            "id": numeric(fulfillment["id"]),
            "admin_graphql_api_id": fulfillment["id"],
            "order_id": numeric(order["id"]),
            "status": lower(fulfillment["status"]),
            "created_at": self._time(fulfillment["createdAt"]),
            "service": "manual",
            "updated_at": self._time(fulfillment["updatedAt"]),
            "tracking_company": tracking[0]["company"] if tracking else None,
            "shipment_status": SHIPMENT_STATUSES.get(fulfillment.get("displayStatus") or ""),
            "location_id": numeric(location["id"]) if location else None,
            "origin_address": None,
            "line_items": [
                self.line_item(item["lineItem"], currency, item["quantity"])
                for item in children_of(fulfillment, "fulfillmentLineItems")
            ],
            "tracking_number": tracking[0]["number"] if tracking else None,
            "tracking_numbers": [t["number"] for t in tracking],
            "tracking_url": tracking[0]["url"] if tracking else None,
            "tracking_urls": [t["url"] for t in tracking],
            "receipt": {},
            "name": fulfillment.get("name"),
        }

    def order(self, node: Node) -> dict[str, Any]:
        shopify_id = numeric_id(node["id"])
        index = shopify_id - self.store.orders.base_id
        currency = node.get("currencyCode") or self.store.currency
        total, _ = _bag_amount(node["totalPriceSet"])
        subtotal, _ = _bag_amount(node["subtotalPriceSet"])
        tax, _ = _bag_amount(node["totalTaxSet"])
        shipping, _ = _bag_amount(node["totalShippingPriceSet"])
        customer = self._order_customer(node.get("customer"))
        number = index + 1
        current_total, _ = _bag_amount(value_of(node, "currentTotalPriceSet"))
        discount_bag = node.get("totalDiscountsSet")
        discounts = _bag_amount(discount_bag)[0] if discount_bag else "0.00"
        return {
            "id": shopify_id,
            "admin_graphql_api_id": node["id"],
            "app_id": 580111,
            "browser_ip": None,
            "buyer_accepts_marketing": False,
            "cancel_reason": lower(node.get("cancelReason")),
            "cancelled_at": self._time(node.get("cancelledAt")),
            "closed_at": self._time(node.get("closedAt")),
            "confirmed": bool(node.get("confirmed", True)),
            "contact_email": node.get("email"),
            "created_at": self._time(node["createdAt"]),
            "currency": currency,
            "current_subtotal_price": subtotal,
            "current_subtotal_price_set": rest_money(subtotal, currency),
            "current_total_discounts": "0.00",
            "current_total_discounts_set": rest_money("0.00", currency),
            "current_total_price": current_total,
            "current_total_price_set": rest_money(current_total, currency),
            "current_total_tax": tax,
            "current_total_tax_set": rest_money(tax, currency),
            "discount_codes": [],
            "email": node.get("email"),
            "financial_status": lower(node.get("displayFinancialStatus")),
            "fulfillment_status": REST_FULFILLMENT.get(node.get("displayFulfillmentStatus") or ""),
            "name": node.get("name"),
            "note": node.get("note"),
            "note_attributes": [],
            "number": number,
            "order_number": 1000 + number,
            "phone": node.get("phone"),
            "presentment_currency": node.get("presentmentCurrencyCode") or currency,
            "processed_at": self._time(node.get("processedAt")),
            "source_name": node.get("sourceName") or "web",
            "subtotal_price": subtotal,
            "subtotal_price_set": rest_money(subtotal, currency),
            "tags": ", ".join(node.get("tags") or []),
            "tax_exempt": bool(node.get("taxExempt")),
            "tax_lines": self._tax_lines(tax, currency),
            "taxes_included": False,
            "test": bool(node.get("test")),
            "total_discounts": discounts,
            "total_discounts_set": rest_money(discounts, currency),
            "total_line_items_price": subtotal,
            "total_line_items_price_set": rest_money(subtotal, currency),
            "total_price": total,
            "total_price_set": rest_money(total, currency),
            "total_shipping_price_set": rest_money(shipping, currency),
            "total_tax": tax,
            "total_tax_set": rest_money(tax, currency),
            "updated_at": self._time(node["updatedAt"]),
            "customer": customer,
            "line_items": [
                self.line_item(line, currency) for line in children_of(node, "lineItems")
            ],
            "shipping_lines": self._shipping_lines(index, shipping, currency),
            "fulfillments": [self.fulfillment(node, f) for f in children_of(node, "fulfillments")],
            "refunds": [self.refund(node, r) for r in children_of(node, "refunds")],
            "billing_address": None,
            "shipping_address": self.shipping_address(value_of(node, "shippingAddress")),
        }

    def _order_customer(self, reference: Any) -> dict[str, Any] | None:
        if not reference:
            return None
        index = numeric_id(reference["id"]) - self.store.customers.base_id
        node = self.store.customers.node(index)
        # Deleted since: GraphQL answers null for the reference, and so does REST.
        return self.customer(node, nested=True) if node is not None else None

    @staticmethod
    def _tax_lines(tax: str, currency: str) -> list[dict[str, Any]]:
        if _cents(tax) == 0:
            return []
        return [
            {
                "channel_liable": False,
                "price": tax,
                "price_set": rest_money(tax, currency),
                "rate": 0.1,
                "title": "Sales tax",
            }
        ]

    @staticmethod
    def _shipping_lines(index: int, shipping: str, currency: str) -> list[dict[str, Any]]:
        if _cents(shipping) == 0:
            return []
        return [
            {
                "id": SHIPPING_LINE_ID_BASE + index,
                "carrier_identifier": None,
                "code": "Standard",
                "discounted_price": shipping,
                "discounted_price_set": rest_money(shipping, currency),
                "is_removed": False,
                "phone": None,
                "price": shipping,
                "price_set": rest_money(shipping, currency),
                "source": "shopify",
                "title": "Standard Shipping",
                "tax_lines": [],
                "discount_allocations": [],
            }
        ]
