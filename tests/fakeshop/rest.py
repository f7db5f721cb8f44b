"""Render a store's GraphQL-shaped records as the REST resources that webhooks carry.

Shopify serialises a webhook's body as the REST resource of its topic (SHOPIFY.md,
"Payloads"), not as the GraphQL node the backfill reads. The renderer follows the shapes of
``receiver/webhook_samples``: numeric ``id`` beside ``admin_graphql_api_id``, snake_case
fields, money as two-decimal strings with ``*_set`` bags, lower-case statuses, ``tags`` as
one comma-separated string, timestamps in the shop's UTC offset (the same instants as the
node's ``createdAt``/``updatedAt``), an order's ``customer`` object and ``line_items``, a
product's ``variants``.

Fields the simulator does not model (addresses, discounts, fulfillments) are empty or absent
rather than invented, except line items and variants, which are derived deterministically from
the record so that a payload looks like a real order or product.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal

from .data import Node, draw, gid, money

if TYPE_CHECKING:
    from .store import FakeStore

# Line items and variants need ids of their own; these ranges collide with no record kind.
LINE_ITEM_ID_BASE = 14_000_000_000_000
VARIANT_ID_BASE = 43_000_000_000_000
SHIPPING_LINE_ID_BASE = 4_400_000_000_000
# A shop in New York: REST renders times in the shop's zone, and an offset other than UTC is
# what catches a consumer that compares timestamps as strings.
DEFAULT_UTC_OFFSET = timedelta(hours=-5)

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
    ) -> None:
        self.store = store
        self.utc_offset = utc_offset
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
        if nested:
            return payload
        payload |= {
            "orders_count": int(node.get("numberOfOrders") or 0),
            "tags": ", ".join(node.get("tags") or []),
            "last_order_id": None,
            "last_order_name": None,
            "addresses": [],
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

    def product(self, node: Node) -> dict[str, Any]:
        shopify_id = numeric_id(node["id"])
        index = shopify_id - self.store.products.base_id
        variants = self._variants(index, shopify_id, node)
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
            "category": node.get("category"),
            "tags": ", ".join(node.get("tags") or []),
            "variants": variants,
            "options": [
                {
                    "name": "Size" if len(variants) > 1 else "Title",
                    "product_id": shopify_id,
                    "position": 1,
                    "values": [variant["title"] for variant in variants],
                }
            ],
            "images": [],
            "image": None,
        }

    def _variants(self, index: int, shopify_id: int, node: Node) -> list[dict[str, Any]]:
        value = draw(self.store.products.key, index, 5)
        count = 1 + value % 3
        titles = ("Default Title",) if count == 1 else ("Small", "Medium", "Large")[:count]
        price = 500 + (value >> 8) % 9500
        stamp = self._time(node["updatedAt"])
        return [
            {
                "admin_graphql_api_id": gid("ProductVariant", VARIANT_ID_BASE + index * 4 + k),
                "barcode": None,
                "compare_at_price": None,
                "created_at": self._time(node["createdAt"]),
                "id": VARIANT_ID_BASE + index * 4 + k,
                "inventory_policy": "deny",
                "position": k + 1,
                "price": money(price + 100 * k),
                "product_id": shopify_id,
                "sku": f"SKU-{index}-{k + 1}",
                "taxable": True,
                "title": title,
                "updated_at": stamp,
                "option1": title,
                "option2": None,
                "option3": None,
                "image_id": None,
                "inventory_quantity": (value >> (20 + 4 * k)) % 100,
            }
            for k, title in enumerate(titles)
        ]

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
            "current_total_price": total,
            "current_total_price_set": rest_money(total, currency),
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
            "source_name": "web",
            "subtotal_price": subtotal,
            "subtotal_price_set": rest_money(subtotal, currency),
            "tags": ", ".join(node.get("tags") or []),
            "tax_exempt": bool(node.get("taxExempt")),
            "tax_lines": self._tax_lines(tax, currency),
            "taxes_included": False,
            "test": bool(node.get("test")),
            "total_discounts": "0.00",
            "total_discounts_set": rest_money("0.00", currency),
            "total_line_items_price": subtotal,
            "total_line_items_price_set": rest_money(subtotal, currency),
            "total_price": total,
            "total_price_set": rest_money(total, currency),
            "total_shipping_price_set": rest_money(shipping, currency),
            "total_tax": tax,
            "total_tax_set": rest_money(tax, currency),
            "updated_at": self._time(node["updatedAt"]),
            "customer": customer,
            "line_items": self._line_items(index, subtotal, currency),
            "shipping_lines": self._shipping_lines(index, shipping, currency),
            "fulfillments": [],
            "refunds": [],
            "billing_address": None,
            "shipping_address": None,
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

    def _line_items(self, index: int, subtotal: str, currency: str) -> list[dict[str, Any]]:
        """One to three lines, one unit each, whose prices add up to the subtotal exactly."""
        value = draw(self.store.orders.key, index, 4)
        cents = _cents(subtotal)
        count = max(1, min(1 + value % 3, cents // 100 or 1))
        shares = [cents // count] * count
        shares[0] += cents - sum(shares)
        products = self.store.products
        items = []
        for position, share in enumerate(shares):
            product_index = (value >> (8 + 12 * position)) % max(1, products.generated)
            product = products.node(product_index) if products.generated else None
            product_id = products.base_id + product_index if products.generated else None
            title = product["title"] if product else "Removed product"
            items.append(
                {
                    "id": LINE_ITEM_ID_BASE + index * 4 + position,
                    "admin_graphql_api_id": gid(
                        "LineItem", LINE_ITEM_ID_BASE + index * 4 + position
                    ),
                    "current_quantity": 1,
                    "fulfillable_quantity": 1,
                    "fulfillment_service": "manual",
                    "fulfillment_status": None,
                    "gift_card": False,
                    "grams": 200,
                    "name": title,
                    "price": money(share),
                    "price_set": rest_money(money(share), currency),
                    "product_exists": product is not None,
                    "product_id": product_id,
                    "properties": [],
                    "quantity": 1,
                    "requires_shipping": True,
                    "sku": f"SKU-{product_index}-1",
                    "taxable": True,
                    "title": title,
                    "total_discount": "0.00",
                    "total_discount_set": rest_money("0.00", currency),
                    "variant_id": VARIANT_ID_BASE + product_index * 4 if product_id else None,
                    "variant_title": None,
                    "vendor": product["vendor"] if product else None,
                    "tax_lines": [],
                    "duties": [],
                    "discount_allocations": [],
                }
            )
        return items

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
