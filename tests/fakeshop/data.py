"""Deterministic record generation: every field of record ``i`` is a pure function of
``(seed, i)``, so a store of a million orders costs no memory until a test changes one.

Randomness comes from a 64-bit mixing function (SplitMix64's finaliser) rather than
``random.Random``: seeding a Mersenne Twister per record costs more than building the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

Node = dict[str, Any]


def mix64(value: int) -> int:
    """A well-scrambled 64-bit hash of ``value``."""
    z = (value + GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, name: str) -> int:
    """A per-(seed, resource) key so customers and orders with the same index differ."""
    key = mix64(seed & MASK64)
    for char in name:
        key = mix64(key ^ ord(char))
    return key


def draw(key: int, index: int, salt: int = 0) -> int:
    """The ``salt``-th 64-bit random number of record ``index``."""
    return mix64(key ^ ((index * GOLDEN + salt * 0xD1B54A32D192ED03) & MASK64))


# Formatting timestamps is on the hot path of streaming a million records; the date part is
# shared by every record of a day, so it is cached.
_day_prefix: dict[int, str] = {}


def iso(timestamp: int) -> str:
    """Epoch seconds as Shopify's DateTime: ``2025-03-01T12:00:00Z``."""
    day, seconds = divmod(timestamp, 86400)
    prefix = _day_prefix.get(day)
    if prefix is None:
        prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        _day_prefix[day] = prefix
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{prefix}{hours:02d}:{minutes:02d}:{secs:02d}Z"


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def money(cents: int) -> str:
    """Integer cents as Shopify's Decimal string with two places (never a float)."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole}.{frac:02d}"


def money_bag(cents: int, currency: str) -> dict[str, dict[str, str]]:
    amount = {"amount": money(cents), "currencyCode": currency}
    # Presentment equals shop currency: the simulated stores sell in one currency. One dict
    # serves both (records are never mutated in place; overrides replace whole values).
    return {"shopMoney": amount, "presentmentMoney": amount}


def pick(options: tuple[Any, ...], value: int) -> Any:
    return options[value % len(options)]


def weighted(table: tuple[tuple[Any, int], ...], value: int) -> Any:
    """Choose from ``(option, weight)`` pairs whose weights sum to 100."""
    point = value % 100
    for option, weight in table:
        if point < weight:
            return option
        point -= weight
    return table[-1][0]


FIRST_NAMES = (
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "John",
    "Radia", "Tim", "Hedy", "Edsger", "Katherine", "Donald", "Sophie", "Guido", "Anita", "Bjarne",
    "Joan", "Niklaus", "Lynn", "Vint", "Mary", "Yukihiro", "Carol", "Brian", "Evelyn", "Ward",
    "Shafi", "Leslie",
)  # fmt: skip
LAST_NAMES = (
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
    "Allen", "McCarthy", "Perlman", "Berners-Lee", "Lamarr", "Dijkstra", "Johnson", "Knuth",
    "Wilson", "van Rossum", "Borg", "Stroustrup", "Clarke", "Wirth", "Conway", "Cerf", "Keller",
    "Matsumoto", "Shaw", "Kernighan", "Boyd", "Cunningham", "Goldwasser", "Lamport",
)  # fmt: skip
ADJECTIVES = (
    "Classic", "Modern", "Rustic", "Sleek", "Vintage", "Organic", "Handmade", "Compact",
    "Deluxe", "Everyday", "Heavy-Duty", "Lightweight",
)  # fmt: skip
MATERIALS = ("Cotton", "Wool", "Leather", "Oak", "Steel", "Ceramic", "Linen", "Bamboo")
NOUNS = (
    "Mug", "Backpack", "Lamp", "Scarf", "Notebook", "Chair", "Jacket", "Bottle", "Wallet",
    "Blanket", "Teapot", "Sneakers",
)  # fmt: skip
VENDORS = ("Acme Goods", "Northwind", "Globex", "Initech", "Umbrella Supply", "Stark Crafts")
PRODUCT_TYPES = ("Apparel", "Home", "Accessories", "Kitchen", "Outdoor", "Stationery")
TAGS = ("new", "sale", "bestseller", "gift", "eco", "limited", "vip", "wholesale")

CUSTOMER_STATES = (("ENABLED", 70), ("DISABLED", 20), ("INVITED", 7), ("DECLINED", 3))
EMAIL_MARKETING = (("SUBSCRIBED", 35), ("NOT_SUBSCRIBED", 55), ("UNSUBSCRIBED", 10))
PRODUCT_STATUSES = (("ACTIVE", 80), ("DRAFT", 12), ("ARCHIVED", 8))
FINANCIAL = (
    ("PAID", 72), ("PENDING", 6), ("AUTHORIZED", 5), ("PARTIALLY_PAID", 2),
    ("PARTIALLY_REFUNDED", 8), ("REFUNDED", 5), ("EXPIRED", 2),
)  # fmt: skip
FULFILLMENT = (
    ("FULFILLED", 60), ("UNFULFILLED", 25), ("PARTIALLY_FULFILLED", 10), ("IN_PROGRESS", 3),
    ("ON_HOLD", 2),
)  # fmt: skip
CANCEL_REASONS = ("CUSTOMER", "FRAUD", "INVENTORY", "DECLINED", "OTHER", "STAFF")


def tags_for(value: int) -> list[str]:
    """Zero to three distinct tags."""
    count = value % 4
    chosen: list[str] = []
    for slot in range(count):
        tag = TAGS[(value >> (4 + 3 * slot)) % len(TAGS)]
        if tag not in chosen:
            chosen.append(tag)
    return chosen


def gid(typename: str, numeric_id: int) -> str:
    return f"gid://shopify/{typename}/{numeric_id}"


class LazyRef(dict[str, Any]):
    """A reference to another record that looks like ``{"id": gid}`` (so it compares equal to
    what a ``customer { id }`` selection returns) but answers any other field by loading the
    full record on demand, so ``customer { firstName }`` works without eager joins.
    """

    def __init__(self, typename: str, node_id: str, loader: Callable[[], Node | None]) -> None:
        super().__init__(id=node_id)
        self._typename = typename
        self._loader = loader
        self._loaded: Node | None = None

    def get(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        if key == "__typename":
            return self._typename
        if self._loaded is None:
            self._loaded = self._loader() or {}
        return self._loaded.get(key, default)


def customer_name(key: int, index: int) -> tuple[str, str]:
    value = draw(key, index, 1)
    return pick(FIRST_NAMES, value), pick(LAST_NAMES, value >> 16)


def customer_email(key: int, index: int) -> str:
    first, last = customer_name(key, index)
    local = f"{first}.{last}".lower().replace(" ", "").replace("'", "")
    return f"{local}.{index}@example.com"


def customer_node(
    key: int, index: int, numeric_id: int, created: int, updated: int, currency: str
) -> Node:
    first, last = customer_name(key, index)
    email = customer_email(key, index)
    value = draw(key, index, 2)
    state = weighted(CUSTOMER_STATES, value)
    has_phone = (value >> 8) % 10 < 7
    phone = f"+1{2_000_000_000 + index:010d}" if has_phone else None
    orders = (value >> 16) % 25
    spent = 0 if orders == 0 else orders * (1500 + (value >> 24) % 12000)
    return {
        "__typename": "Customer",
        "id": gid("Customer", numeric_id),
        "legacyResourceId": str(numeric_id),
        "firstName": first,
        "lastName": last,
        "displayName": f"{first} {last}",
        "email": email,
        "phone": phone,
        "state": state,
        "verifiedEmail": state == "ENABLED",
        "taxExempt": (value >> 40) % 50 == 0,
        "note": "Prefers email" if (value >> 56) % 13 == 0 else None,
        "tags": tags_for(value >> 44),
        "createdAt": iso(created),
        "updatedAt": iso(updated),
        "defaultEmailAddress": email_address(email, weighted(EMAIL_MARKETING, value >> 32)),
        "defaultPhoneNumber": phone_number(phone, "NOT_SUBSCRIBED") if phone else None,
        "amountSpent": {"amount": money(spent), "currencyCode": currency},
        "taxExemptions": [],
        "locale": "en",
        "multipassIdentifier": None,
        # UnsignedInt64 is serialised as a string by Shopify.
        "numberOfOrders": str(orders),
    }


def email_address(email: str, state: str) -> Node:
    return {
        "emailAddress": email,
        "marketingState": state,
        "marketingOptInLevel": "SINGLE_OPT_IN",
        "marketingUpdatedAt": None,
        "validFormat": True,
    }


def phone_number(phone: str, state: str) -> Node:
    return {
        "phoneNumber": phone,
        "marketingState": state,
        "smsMarketingConsent": {
            # The newer consent enum (CustomerMarketingConsentState) says NEVER_SUBSCRIBED.
            "state": "NEVER_SUBSCRIBED" if state == "NOT_SUBSCRIBED" else state,
            "optInLevel": "SINGLE_OPT_IN",
            "updatedAt": None,
            "collectedFrom": "OTHER",
        },
    }


CATEGORIES = (
    ("aa-1-13-8", "T-Shirts", "Apparel & Accessories > Clothing > Clothing Tops > T-Shirts"),
    ("hg-11-10", "Lamps", "Home & Garden > Lighting > Lamps"),
    ("lb-7-3", "Notebooks", "Luggage & Bags > ... > Notebooks"),
    ("hg-10-5-6", "Mugs", "Home & Garden > Kitchen & Dining > Tableware > Drinkware > Mugs"),
)


def product_node(key: int, index: int, numeric_id: int, created: int, updated: int) -> Node:
    value = draw(key, index, 1)
    title = f"{pick(ADJECTIVES, value)} {pick(MATERIALS, value >> 8)} {pick(NOUNS, value >> 16)}"
    status = weighted(PRODUCT_STATUSES, value >> 24)
    handle = f"{title.lower().replace(' ', '-')}-{index}"
    return {
        "__typename": "Product",
        "id": gid("Product", numeric_id),
        "legacyResourceId": str(numeric_id),
        "title": title,
        "handle": handle,
        "status": status,
        "vendor": pick(VENDORS, value >> 32),
        "productType": pick(PRODUCT_TYPES, value >> 40),
        "tags": tags_for(value >> 46),
        "descriptionHtml": f"<p>{title}, made to last.</p>",
        "description": f"{title}, made to last.",
        "tracksInventory": True,
        "isGiftCard": False,
        "totalInventory": (value >> 52) % 500,
        "publishedAt": iso(created) if status == "ACTIVE" else None,
        "category": category(value >> 56),
        "createdAt": iso(created),
        "updatedAt": iso(updated),
    }


def category(value: int) -> Node | None:
    if value % 5 == 0:
        return None
    handle, name, full_name = pick(CATEGORIES, value)
    return {
        "__typename": "TaxonomyCategory",
        "id": gid("TaxonomyCategory", 0).replace("/0", f"/{handle}"),
        "name": name,
        "fullName": full_name,
        "isLeaf": True,
        "isRoot": False,
        "isArchived": False,
        "level": full_name.count(">") + 1,
        "parentId": None,
        "ancestorIds": [],
        "childrenIds": [],
    }


SOURCES = (("web", 80), ("pos", 12), ("shopify_draft_order", 8))


def order_node(
    key: int,
    index: int,
    numeric_id: int,
    created: int,
    updated: int,
    currency: str,
    customer: LazyRef | None,
    email: str,
) -> Node:
    value = draw(key, index, 1)
    prices = draw(key, index, 2)
    cancelled = value % 100 < 4
    if cancelled:
        financial = "VOIDED" if (value >> 8) % 3 == 0 else "REFUNDED"
        fulfillment = "UNFULFILLED"
    else:
        financial = weighted(FINANCIAL, value >> 8)
        fulfillment = weighted(FULFILLMENT, value >> 16)
    subtotal = 500 + prices % 49_500
    shipping = 0 if (prices >> 20) % 3 == 0 else 499 + (prices >> 24) % 1500
    tax = subtotal * ((prices >> 36) % 11) // 100
    total = subtotal + shipping + tax
    closed = cancelled or (financial == "PAID" and fulfillment == "FULFILLED")
    stamp_created = iso(created)
    stamp_updated = iso(updated)
    return {
        "__typename": "Order",
        "id": gid("Order", numeric_id),
        "legacyResourceId": str(numeric_id),
        "name": f"#{1001 + index}",
        "email": email,
        "phone": None,
        "note": "Leave at the door" if (prices >> 52) % 11 == 0 else None,
        "tags": tags_for(value >> 24),
        "test": (prices >> 56) % 97 == 0,
        "sourceName": weighted(SOURCES, prices >> 44),
        "confirmed": True,
        "taxExempt": False,
        "createdAt": stamp_created,
        "updatedAt": stamp_updated,
        "processedAt": stamp_created,
        "cancelledAt": stamp_updated if cancelled else None,
        "cancelReason": pick(CANCEL_REASONS, value >> 32) if cancelled else None,
        "closed": closed,
        "closedAt": stamp_updated if closed else None,
        "currencyCode": currency,
        "presentmentCurrencyCode": currency,
        "displayFinancialStatus": financial,
        "displayFulfillmentStatus": fulfillment,
        "fullyPaid": financial == "PAID",
        "unpaid": financial in ("PENDING", "AUTHORIZED", "EXPIRED"),
        "totalPriceSet": money_bag(total, currency),
        "totalDiscountsSet": money_bag(0, currency),
        "subtotalPriceSet": money_bag(subtotal, currency),
        "totalTaxSet": money_bag(tax, currency),
        "totalShippingPriceSet": money_bag(shipping, currency),
        "originalTotalPriceSet": money_bag(total, currency),
        "currentSubtotalPriceSet": money_bag(subtotal, currency),
        "currentTotalTaxSet": money_bag(tax, currency),
        "currentTotalDiscountsSet": money_bag(0, currency),
        "taxesIncluded": False,
        "number": index + 1,
        "confirmationNumber": f"C{(prices >> 8) % 36**8:08X}"[:9],
        "customerLocale": "en",
        "requiresShipping": True,
        "billingAddress": None,
        "customer": customer,
    }


CITIES = (
    ("Ottawa", "ON", "CA", "K1P 1J1"), ("Toronto", "ON", "CA", "M5H 2N2"),
    ("Portland", "OR", "US", "97205"), ("Austin", "TX", "US", "78701"),
    ("Berlin", None, "DE", "10115"), ("Lyon", None, "FR", "69002"),
)  # fmt: skip
LOCATION_KINDS = ("Warehouse", "Shop", "Depot", "Pop-up", "Studio")


def location_node(key: int, index: int, numeric_id: int, created: int, updated: int) -> Node:
    """A store location; its phone and address are the business's."""
    value = draw(key, index, 1)
    city, province, country, postcode = pick(CITIES, value)
    return {
        "__typename": "Location",
        "id": gid("Location", numeric_id),
        "legacyResourceId": str(numeric_id),
        "name": f"{city} {pick(LOCATION_KINDS, value >> 8)} {index + 1}",
        "isActive": (value >> 16) % 10 != 0,
        "isPrimary": index == 0,
        "fulfillsOnlineOrders": True,
        "shipsInventory": True,
        "isFulfillmentService": False,
        "hasActiveInventory": True,
        "activatable": False,
        "deactivatable": True,
        "deletable": False,
        "addressVerified": True,
        "deactivatedAt": None,
        "address": {
            "address1": f"{(value >> 20) % 900 + 100} Main Street",
            "address2": f"Unit {(value >> 30) % 20 + 1}" if (value >> 36) % 3 == 0 else None,
            "city": city,
            "zip": postcode,
            "provinceCode": province,
            "countryCode": country,
            "phone": f"+1555{(value >> 40) % 10_000_000:07d}",
            "country": country,
            "province": province,
            "formatted": [city, country],
        },
        "createdAt": iso(created),
        "updatedAt": iso(updated),
    }
