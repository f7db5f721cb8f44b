"""Children of the store's records: an order's line items, refunds, transactions, fulfillments;
a product's variants with their inventory items and levels; a customer's addresses.

Like the parents, children are a pure function of ``(seed, parent index)`` plus the parent's
own fields, generated only when a query selects them (a million-order store stays cheap). A
parent's node carries them as lazy fields: a :class:`Connection` or :class:`PlainList` is a
resolver (``value(info, **arguments)``, the executor's convention) built from a factory that
runs at most once per node, so a page of orders that selects no line items generates none.

A test that changes children (a refund, a removed variant, a new inventory quantity) stores
the parent's whole child state in the parent's overlay (``_orderBundle``, ``_variantSpecs``,
``_addresses``), copied on write, so snapshots taken earlier (a running bulk export) keep
what they saw.

Ids are ``base + parent_index * stride + position``: unique per store, stable, and
decodable back to the parent for ``node(id:)``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .data import CITIES, FIRST_NAMES, LAST_NAMES, LazyRef, Node, draw, gid, money, pick
from .executor import FieldError

if TYPE_CHECKING:
    from .resources import ResourceView
    from .store import FakeStore

# -- ids: ranges that collide with no other kind (parents use 4.1e12..8.6e12) --
LINE_ITEM_ID_BASE = 14_000_000_000_000
LINE_ITEM_STRIDE = 512  # an order has at most this many line items
REFUND_ID_BASE = 9_100_000_000_000
REFUND_STRIDE = 8
REFUND_LINE_ITEM_ID_BASE = 9_200_000_000_000  # + (order * REFUND_STRIDE + refund) * 512 + j
TRANSACTION_ID_BASE = 6_700_000_000_000
TRANSACTION_STRIDE = 32
FULFILLMENT_ID_BASE = 5_300_000_000_000
FULFILLMENT_STRIDE = 8
FULFILLMENT_LINE_ITEM_ID_BASE = 15_000_000_000_000  # + (order * 8 + f) * 512 + j
SHIPPING_ADDRESS_ID_BASE = 8_500_000_000_000
CUSTOMER_ADDRESS_ID_BASE = 8_400_000_000_000
ADDRESS_STRIDE = 8
VARIANT_ID_BASE = 43_000_000_000_000
VARIANT_STRIDE = 256  # a product has at most this many variants (Shopify: 2048; enough here)
INVENTORY_ITEM_ID_BASE = 44_000_000_000_000
INVENTORY_LEVEL_ID_BASE = 45_000_000_000_000
LEVEL_STRIDE = 64  # locations an item can be stocked at (by location index)
# Metafields: one range per owner type (an order and a product may share an index).
METAFIELD_ID_BASES = {
    "ORDER": 31_000_000_000_000,
    "PRODUCT": 32_000_000_000_000,
    "CUSTOMER": 33_000_000_000_000,
}
METAFIELD_STRIDE = 32

# Shopify's named inventory states (shopify.dev, inventory states); the first four vary.
QUANTITY_NAMES = (
    "available",
    "on_hand",
    "committed",
    "incoming",
    "reserved",
    "damaged",
    "safety_stock",
    "quality_control",
)
PROVINCES = {"ON": "Ontario", "OR": "Oregon", "TX": "Texas"}
COUNTRIES = {"CA": "Canada", "US": "United States", "DE": "Germany", "FR": "France"}
GATEWAYS = ("shopify_payments", "paypal", "manual", "bogus")
CARRIERS = (
    ("UPS", "https://www.ups.com/track?tracknum="),
    ("USPS", "https://tools.usps.com/go/TrackConfirmAction?tLabels="),
    ("FedEx", "https://www.fedex.com/fedextrack/?trknbr="),
    ("DHL Express", "https://www.dhl.com/en/express/tracking.html?AWB="),
    ("Canada Post", "https://www.canadapost-postescanada.ca/track-reperer/en#/details/"),
)
DISPLAY_STATUSES = ("DELIVERED", "IN_TRANSIT", "OUT_FOR_DELIVERY", "CONFIRMED", "LABEL_PRINTED")
SIZES = ("Small", "Medium", "Large", "X-Large", "XX-Large")


def numeric(node_id: str) -> int:
    return int(node_id.rsplit("/", 1)[-1].split("?", 1)[0])


def bag(cents: int, currency: str) -> dict[str, dict[str, str]]:
    amount = {"amount": money(cents), "currencyCode": currency}
    return {"shopMoney": amount, "presentmentMoney": dict(amount)}


def cents_of(bag_value: Any) -> int:
    amount = str(bag_value["shopMoney"]["amount"])
    whole, _, frac = amount.lstrip("-").partition(".")
    cents = int(whole) * 100 + int((frac + "00")[:2])
    return -cents if amount.startswith("-") else cents


# -- cursors of child connections: base64 JSON of the last id, like the parents' --


def child_cursor(node_id: str) -> str:
    number = numeric(node_id)
    payload = json.dumps({"last_id": number, "last_value": str(number)}, separators=(",", ":"))
    return base64.b64encode(payload.encode()).decode()


def _cursor_id(cursor: str) -> int:
    try:
        return int(json.loads(base64.b64decode(cursor, validate=True))["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST") from error


def paginate(
    items: list[Node],
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
    reverse: bool = False,
) -> dict[str, Any]:
    """A Relay connection over an already ordered (small) list, as Shopify pages children."""
    if first is None and last is None:
        raise FieldError("you must provide one of first or last", "BAD_REQUEST")
    if first is not None and last is not None:
        raise FieldError("providing both first and last is not supported", "BAD_REQUEST")
    ordered = list(reversed(items)) if reverse else items
    positions = {numeric(item["id"]): place for place, item in enumerate(ordered)}
    lo, hi = 0, len(ordered)
    if after is not None:
        place = positions.get(_cursor_id(after))
        if place is None:
            raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST")
        lo = place + 1
    if before is not None:
        place = positions.get(_cursor_id(before))
        if place is None:
            raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST")
        hi = place
    window = ordered[lo:hi] if lo < hi else []
    if first is not None:
        page = window[:first]
        has_next = len(window) > first or hi < len(ordered)
        has_previous = lo > 0
    else:
        assert last is not None
        page = window[max(0, len(window) - last) :] if last else []
        has_previous = len(window) > last or lo > 0
        has_next = hi < len(ordered)
    cursors = [child_cursor(item["id"]) for item in page]
    return {
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, page, strict=True)],
        "nodes": page,
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        },
    }


class ChildList:
    """A lazy list of children that is also the field's resolver."""

    __slots__ = ("_items", "_make")

    def __init__(self, items: list[Node] | Callable[[], list[Node]]) -> None:
        if callable(items):
            self._make: Callable[[], list[Node]] | None = items
            self._items: list[Node] | None = None
        else:
            self._make, self._items = None, items

    def items(self) -> list[Node]:
        if self._items is None:
            assert self._make is not None
            self._items = self._make()
        return self._items

    def matching(self, arguments: dict[str, Any]) -> list[Node]:
        """The items a field's arguments select (only metafields filter)."""
        return self.items()

    def __deepcopy__(self, memo: dict[int, Any]) -> ChildList:
        from copy import deepcopy

        return type(self)(deepcopy(self.items(), memo))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChildList) and self.items() == other.items()

    __hash__ = None  # type: ignore[assignment]


class Connection(ChildList):
    """A connection field (``lineItems``, ``variants``, ...): paged with cursors."""

    __slots__ = ()

    def __call__(self, info: Any = None, **arguments: Any) -> dict[str, Any]:
        result = paginate(
            self.matching(arguments),
            arguments.get("first"),
            arguments.get("last"),
            arguments.get("after"),
            arguments.get("before"),
            bool(arguments.get("reverse")),
        )
        if info is not None and hasattr(info.context, "nodes_returned"):
            info.context.nodes_returned += len(result["nodes"])
        return result


class PlainList(ChildList):
    """A plain list field with ``first:`` (``Order.refunds``, ``Customer.addresses``)."""

    __slots__ = ()

    def __call__(self, info: Any = None, first: int | None = None, **_ignored: Any) -> list[Node]:
        items = self.items()
        return items if first is None else items[:first]


class Derived:
    """A field computed when read (``fn(**arguments)``), equal to another when what they
    compute is equal (``key``), so two builds of one record compare equal."""

    __slots__ = ("_fn", "_key")

    def __init__(self, fn: Callable[..., Any], key: Callable[[], Any] | None = None) -> None:
        self._fn = fn
        self._key = key or fn

    def __call__(self, info: Any = None, **arguments: Any) -> Any:
        return self._fn(**arguments)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Derived) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]


_MISSING = object()


class LazyNode(dict[str, Any]):
    """A record whose derived fields and children are computed when first read through
    ``get`` (how the executor, graphql-core's default resolver, REST rendering and
    :func:`children_of` read nodes), once per node, from factories shared by every record of
    the resource: building a node costs no closures, so a page or export that selects no
    children pays nothing for them. Computed values are kept beside the dict, not in it, so
    two builds of a record compare equal whatever was read from them."""

    __slots__ = ("_lazy", "_made", "index")

    def __init__(self, base: Node, lazy: dict[str, Callable[[LazyNode], Any]], index: int) -> None:
        super().__init__(base)
        self._lazy = lazy
        self._made: dict[str, Any] | None = None
        self.index = index

    def get(self, key: str, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is not _MISSING:
            return value
        made = self._made
        if made is not None:
            value = made.get(key, _MISSING)
            if value is not _MISSING:
                return value
        make = self._lazy.get(key)
        if make is None:
            return default
        return self.memo(key, lambda: make(self))

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        if self._made is None:
            self._made = {}
        value = self._made.get(key, _MISSING)
        if value is _MISSING:
            value = self._made[key] = make()
        return value


def value_of(node: Node, field: str) -> Any:
    """A field's value, resolving a lazy one (a resolver without arguments)."""
    value = node.get(field)
    if callable(value) and not isinstance(value, ChildList):
        return value()
    return value


def children_of(node: Node, field: str, arguments: dict[str, Any] | None = None) -> list[Node]:
    """The complete child list of ``field`` on a node (for bulk and REST), as the field's
    ``arguments`` select it."""
    value = node.get(field)
    if isinstance(value, ChildList):
        return value.matching(arguments or {})
    if callable(value):
        result = value()
        return list(result) if result else []
    return list(value or [])


def _ref(typename: str, node_id: str, loader: Callable[[], Node | None]) -> LazyRef:
    return LazyRef(typename, node_id, loader)


# -- addresses --


def address_fields(
    key: int, index: int, salt: int, first: str, last: str, phone: str | None
) -> dict[str, Any]:
    value = draw(key, index, salt)
    city, province_code, country_code, postcode = pick(CITIES, value)
    fields = _address(value, city, province_code, country_code, postcode, first, last, phone)

    def formatted(withName: bool = False, withCompany: bool = True, **_: Any) -> list[str]:
        lines = [f"{first} {last}"] if withName else []
        if withCompany and fields["company"]:
            lines.append(fields["company"])
        lines.append(fields["address1"])
        if fields["address2"]:
            lines.append(fields["address2"])
        lines.append(" ".join(p for p in (city, province_code, postcode) if p))
        lines.append(COUNTRIES[country_code])
        return lines

    fields["formatted"] = Derived(formatted)
    fields["validationResultSummary"] = None
    return fields


def _address(
    value: int,
    city: str,
    province_code: str | None,
    country_code: str,
    postcode: str,
    first: str,
    last: str,
    phone: str | None,
) -> dict[str, Any]:
    return {
        "firstName": first,
        "lastName": last,
        "name": f"{first} {last}",
        "company": "Acme Inc." if (value >> 12) % 9 == 0 else None,
        "address1": f"{(value >> 16) % 900 + 100} {pick(LAST_NAMES, value >> 24)} Street",
        "address2": f"Suite {(value >> 32) % 90 + 10}" if (value >> 40) % 3 == 0 else None,
        "city": city,
        "province": PROVINCES.get(province_code or ""),
        "provinceCode": province_code,
        "country": COUNTRIES[country_code],
        "countryCodeV2": country_code,
        "zip": postcode,
        "phone": phone,
        "latitude": None,
        "longitude": None,
        "coordinatesValidated": False,
        "timeZone": None,
        "formattedArea": f"{city}, {COUNTRIES[country_code]}",
    }


def shipping_address(key: int, index: int, name: tuple[str, str] | None) -> Node | None:
    """An order's shipping address (about 1 in 20 orders ships nothing and has none)."""
    value = draw(key, index, 9)
    if value % 20 == 0:
        return None
    first, last = name or (pick(FIRST_NAMES, value >> 8), pick(LAST_NAMES, value >> 16))
    number = SHIPPING_ADDRESS_ID_BASE + index
    return {
        "__typename": "MailingAddress",
        "id": f"{gid('MailingAddress', number)}?model_name=Address",
        **address_fields(key, index, 10, first, last, None),
    }


def customer_addresses(key: int, index: int, node: Node) -> list[Node]:
    """Zero to three addresses; the first is the default."""
    count = draw(key, index, 11) % 4
    first, last = node.get("firstName") or "", node.get("lastName") or ""
    return [
        {
            "__typename": "MailingAddress",
            "id": (
                f"{gid('MailingAddress', CUSTOMER_ADDRESS_ID_BASE + index * ADDRESS_STRIDE + k)}"
                "?model_name=CustomerAddress"
            ),
            **address_fields(key, index, 12 + k, first, last, node.get("phone")),
        }
        for k in range(count)
    ]


def customer_lazies(key: int) -> dict[str, Callable[[LazyNode], Any]]:
    def addresses(node: LazyNode) -> list[Node]:
        def make() -> list[Node]:
            override = dict.get(node, "_addresses")
            if override is not None:
                return list(override)
            return customer_addresses(key, node.index, node)

        items: list[Node] = node.memo("__addresses", make)
        return items

    return {
        "addresses": lambda node: PlainList(addresses(node)),
        "addressesV2": lambda node: Connection(addresses(node)),
        "defaultAddress": lambda node: (addresses(node) or [None])[0],
    }


# -- orders --


@dataclass(frozen=True)
class _Bought:
    """What an order's line item records of its product (`OrderChildren._bought`)."""

    product_id: str | None  # None once the product is deleted
    title: str
    vendor: str | None
    # Per variant the product had when generated: its title (None for the default), sku, and
    # id (None once it is no longer sold).
    variants: tuple[tuple[str | None, str, str | None], ...]


class OrderChildren:
    """Generates an order's children from its node (status, totals, times) and index."""

    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def is_heavy(self, index: int) -> bool:
        # Generated orders only: one a test creates is ordinary (its webhook stays small).
        every = self.store.many_line_items_every
        return bool(every) and index < self.store.orders.generated and index % every == every // 2

    def line_count(self, index: int) -> int:
        if self.is_heavy(index):
            return min(LINE_ITEM_STRIDE, self.store.many_line_items)
        return 1 + draw(self.store.orders.key, index, 4) % 5

    def bundle(self, node: LazyNode) -> dict[str, Any]:
        override = dict.get(node, "_orderBundle")
        if override is not None:
            return override  # type: ignore[no-any-return]
        made: dict[str, Any] = node.memo("__bundle", lambda: self._generate_as_placed(node))
        return made

    def _generate_as_placed(self, node: LazyNode) -> dict[str, Any]:
        """A generated order's children come from the order as it was generated: changing
        its status or totals later (update_order) adds no transaction and removes none, as
        on Shopify, where such changes come with their own children (add_refund, ...)."""
        orders = self.store.orders
        if node.index < orders.generated:
            original = orders.build(node.index, *orders.generated_times(node.index))
            return self.generate(node.index, original)
        # A created order: its children as first read (its create webhook reads them).
        placed: dict[int, dict[str, Any]] = self.__dict__.setdefault("_placed", {})
        if node.index not in placed:
            placed[node.index] = self.generate(node.index, node)
        return copy.deepcopy(placed[node.index])

    def lazies(self) -> dict[str, Callable[[LazyNode], Any]]:
        bundle = self.bundle
        currency = self.store.currency

        def refunded(node: LazyNode) -> int:
            return sum(cents_of(r["totalRefundedSet"]) for r in bundle(node)["refunds"])

        def current_total(node: LazyNode) -> dict[str, Any]:
            # What is left after refunds: derived, so a refund a test adds lowers it too.
            left = max(0, cents_of(node["totalPriceSet"]) - refunded(node))
            return bag(left, node.get("currencyCode") or currency)

        def quantity(node: LazyNode, field: str) -> int:
            return sum(int(line[field]) for line in bundle(node)["lineItems"])

        def count(node: LazyNode, field: str) -> dict[str, Any]:
            return {"count": len(bundle(node)[field]), "precision": "EXACT"}

        return {
            "lineItems": lambda node: Connection(bundle(node)["lineItems"]),
            "refunds": lambda node: PlainList(bundle(node)["refunds"]),
            "transactions": lambda node: PlainList(bundle(node)["transactions"]),
            "fulfillments": lambda node: PlainList(bundle(node)["fulfillments"]),
            "currentTotalPriceSet": current_total,
            "totalRefundedSet": lambda node: bag(
                refunded(node), node.get("currencyCode") or currency
            ),
            "subtotalLineItemsQuantity": lambda node: quantity(node, "quantity"),
            "currentSubtotalLineItemsQuantity": lambda node: quantity(node, "currentQuantity"),
            "transactionsCount": lambda node: count(node, "transactions"),
            "fulfillmentsCount": lambda node: count(node, "fulfillments"),
            "paymentGatewayNames": lambda node: sorted(
                {t["gateway"] for t in bundle(node)["transactions"]}
            ),
        }

    def generate(self, index: int, node: Node) -> dict[str, Any]:
        store = self.store
        key = store.orders.key
        currency = node.get("currencyCode") or store.currency
        subtotal = cents_of(node["subtotalPriceSet"])
        total = cents_of(node["totalPriceSet"])
        count = self.line_count(index)
        shares = [subtotal // count] * count
        shares[0] += subtotal - sum(shares)
        products = store.products
        lines: list[Node] = []
        for position, share in enumerate(shares):
            value = draw(key, index, 1000 + position)
            # One unit a line: REST consumers (and the existing webhook tests) add up `price`
            # to the subtotal. Tests that need more units add a line item or refund one.
            quantity = 1
            unit = share
            product_index = (value >> 8) % max(1, products.generated)
            lines.append(
                self._line_item(index, position, product_index, quantity, unit, currency, value)
            )
        status = node.get("displayFinancialStatus")
        created, updated = node["createdAt"], node["updatedAt"]
        transactions = self._transactions(index, status, total, currency, created, node)
        refunds: list[Node] = []
        if status in ("PARTIALLY_REFUNDED", "REFUNDED"):
            full = status == "REFUNDED"
            chosen = [(line, line["quantity"]) for line in lines] if full else [(lines[0], 1)]
            amount = total if full else cents_of(lines[0]["originalUnitPriceSet"])
            restock = (
                "CANCEL" if node.get("cancelledAt") else ("RETURN" if not full else "NO_RESTOCK")
            )
            parent = next((t for t in transactions if t["kind"] in ("SALE", "CAPTURE")), None)
            refund = self.new_refund(
                index, 0, chosen, amount, currency, updated, restock, parent, node, note=None
            )
            refunds.append(refund)
            transactions.extend(refund["transactions"].items())
        fulfillments: list[Node] = []
        fulfilment = node.get("displayFulfillmentStatus")
        if fulfilment in ("FULFILLED", "PARTIALLY_FULFILLED") and lines:
            picked = lines if fulfilment == "FULFILLED" else lines[: max(1, len(lines) // 2)]
            split = fulfilment == "FULFILLED" and len(picked) > 1 and draw(key, index, 20) % 5 == 0
            groups = [picked[: len(picked) // 2], picked[len(picked) // 2 :]] if split else [picked]
            for number, group in enumerate(groups):
                fulfillments.append(
                    self.new_fulfillment(
                        index, number, [(line, line["quantity"]) for line in group], node
                    )
                )
        bundle = {
            "lineItems": lines,
            "refunds": refunds,
            "transactions": transactions,
            "fulfillments": fulfillments,
        }
        recount(bundle)
        return bundle

    def _line_item(
        self,
        index: int,
        position: int,
        product_index: int,
        quantity: int,
        unit: int,
        currency: str,
        value: int,
    ) -> Node:
        products = self.store.products
        number = LINE_ITEM_ID_BASE + index * LINE_ITEM_STRIDE + position
        bought = self._bought(product_index)
        variant_title = sku = variant_id = None
        if bought.variants:
            variant_title, sku, variant_id = bought.variants[(value >> 20) % len(bought.variants)]
        title = bought.title
        return {
            "__typename": "LineItem",
            "id": gid("LineItem", number),
            "name": f"{title} - {variant_title}" if variant_title else title,
            "title": title,
            "variantTitle": variant_title,
            "sku": sku,
            "vendor": bought.vendor,
            "quantity": quantity,
            "currentQuantity": quantity,
            "unfulfilledQuantity": quantity,
            "refundableQuantity": quantity,
            "nonFulfillableQuantity": 0,
            "fulfillableQuantity": quantity,
            "fulfillmentStatus": "unfulfilled",
            "originalUnitPriceSet": bag(unit, currency),
            "discountedUnitPriceSet": bag(unit, currency),
            "discountedUnitPriceAfterAllDiscountsSet": bag(unit, currency),
            "originalTotalSet": bag(unit * quantity, currency),
            "discountedTotalSet": bag(unit * quantity, currency),
            "totalDiscountSet": bag(0, currency),
            "priceAfterAllDiscountsBeforeTaxesSet": bag(unit * quantity, currency),
            "taxable": True,
            "requiresShipping": True,
            "isGiftCard": False,
            "merchantEditable": True,
            "restockable": True,
            "customAttributes": [],
            "discountAllocations": [],
            "duties": [],
            "taxLines": [],
            "product": (
                _ref("Product", bought.product_id, lambda: products.node(product_index))
                if bought.product_id is not None
                else None
            ),
            "variant": (
                _ref(
                    "ProductVariant",
                    variant_id,
                    lambda: find_child(
                        products.node(product_index) or {}, "ProductVariant", variant_id or ""
                    ),
                )
                if variant_id is not None
                else None
            ),
        }

    def _bought(self, product_index: int) -> _Bought:
        """What a line item of product `product_index` records of it, read once per snapshot
        of the products: every line item of a bulk export or a refund read asks again, and
        generating the product for each cost most of a large export's time."""
        view = self.store.products.view()
        key = ("bought", product_index)
        bought: _Bought | None = view.derived.get(key)
        if bought is None:
            bought = view.derived[key] = self._read_bought(view, product_index)
        return bought

    def _read_bought(self, view: ResourceView, product_index: int) -> _Bought:
        # What was bought is kept on the line item as it was when the order was placed: the
        # product's title and vendor, the variant's title and sku. Its product and variant
        # references read null once those are deleted (Shopify: "null if the product has been
        # deleted"), and no order update is sent for any of it.
        products = self.store.products
        generated = product_index < products.generated
        product = view.node(product_index) if products.generated else None
        original = (
            products.build(product_index, *products.generated_times(product_index))
            if generated
            else product
        )
        if original is None:
            return _Bought(None, "Removed product", None, ())
        # The variants' identities without generating the product's variants (and their
        # inventory): a bulk export of a million orders' line items stays cheap.
        catalogue = self.store.product_children
        specs = (
            catalogue.default_specs(product_index)
            if generated
            else catalogue.specs(product_index, original)
        )
        sold = (
            {current["k"] for current in catalogue.specs(product_index, product)}
            if product is not None
            else set()
        )
        variants: list[tuple[str | None, str, str | None]] = []
        for spec in specs:
            title, _ = catalogue.identity(product_index, spec["k"], len(specs))
            fields = spec.get("fields") or {}
            title = fields.get("title", title)
            variant_id = (
                gid("ProductVariant", VARIANT_ID_BASE + product_index * VARIANT_STRIDE + spec["k"])
                if spec["k"] in sold
                else None
            )
            variants.append(
                (
                    None if title == "Default Title" else title,
                    fields.get("sku", f"SKU-{product_index}-{spec['k'] + 1}"),
                    variant_id,
                )
            )
        return _Bought(
            product["id"] if product is not None else None,
            original["title"],
            original["vendor"],
            tuple(variants),
        )

    def _transactions(
        self,
        index: int,
        status: str | None,
        total: int,
        currency: str,
        created: str,
        node: Node,
    ) -> list[Node]:
        value = draw(self.store.orders.key, index, 21)
        gateway = pick(GATEWAYS, value)
        made: list[Node] = []

        def add(kind: str, amount: int, state: str = "SUCCESS", parent: Node | None = None) -> Node:
            transaction = self.new_transaction(
                index, len(made), kind, amount, currency, created, gateway, state, parent, node
            )
            made.append(transaction)
            return transaction

        if value % 50 == 0 and status not in (None, "PENDING"):
            failed = add("SALE", total, "FAILURE")
            failed["errorCode"] = "CARD_DECLINED"
        if status == "PAID" and (value >> 8) % 4 == 0:
            add("CAPTURE", total, parent=add("AUTHORIZATION", total))
        elif status in ("PAID", "PARTIALLY_REFUNDED", "REFUNDED"):
            add("SALE", total)
        elif status == "PARTIALLY_PAID":
            add("SALE", total // 2)
        elif status == "PENDING":
            add("SALE", total, "PENDING")
        elif status in ("AUTHORIZED", "EXPIRED"):
            add("AUTHORIZATION", total)
        elif status == "VOIDED":
            add("VOID", total, parent=add("AUTHORIZATION", total))
        return made

    def new_transaction(
        self,
        index: int,
        position: int,
        kind: str,
        amount: int,
        currency: str,
        processed: str,
        gateway: str,
        status: str,
        parent: Node | None,
        order: Node,
    ) -> Node:
        if position >= TRANSACTION_STRIDE:
            raise ValueError(f"an order holds at most {TRANSACTION_STRIDE} transactions")
        number = TRANSACTION_ID_BASE + index * TRANSACTION_STRIDE + position
        return {
            "__typename": "OrderTransaction",
            "id": gid("OrderTransaction", number),
            "kind": kind,
            "status": status,
            "gateway": gateway,
            "formattedGateway": gateway.replace("_", " ").title(),
            "amountSet": bag(amount, currency),
            "parentTransaction": parent,
            "processedAt": processed,
            "createdAt": processed,
            "errorCode": None,
            "test": bool(order.get("test")),
            "manualPaymentGateway": gateway == "manual",
            "manuallyCapturable": False,
            "multiCapturable": False,
            "paymentId": f"p{number}",
            "authorizationExpiresAt": None,
            "accountNumber": None,
            "fees": [],
            "receiptJson": "{}",
            "order": _ref("Order", order["id"], lambda: self.store.orders.node(index)),
            "location": None,
            "user": None,
            "device": None,
            "paymentDetails": None,
            "paymentIcon": None,
            "settlementCurrency": None,
            "settlementCurrencyRate": None,
            "amountRoundingSet": None,
            "totalUnsettledSet": None,
            "currencyExchangeAdjustment": None,
            "shopifyPaymentsSet": None,
            "maximumRefundableV2": (
                {"amount": money(amount), "currencyCode": currency}
                if kind in ("SALE", "CAPTURE") and status == "SUCCESS"
                else None
            ),
        }

    def new_refund(
        self,
        index: int,
        position: int,
        chosen: list[tuple[Node, int]],
        amount: int,
        currency: str,
        processed: str,
        restock_type: str,
        parent: Node | None,
        order: Node,
        note: str | None,
        transaction_position: int | None = None,
    ) -> Node:
        if position >= REFUND_STRIDE:
            raise ValueError(f"an order holds at most {REFUND_STRIDE} refunds")
        number = REFUND_ID_BASE + index * REFUND_STRIDE + position
        base = REFUND_LINE_ITEM_ID_BASE + (index * REFUND_STRIDE + position) * LINE_ITEM_STRIDE
        refund_lines = [
            {
                "__typename": "RefundLineItem",
                "id": gid("RefundLineItem", base + j),
                "lineItem": line,
                "quantity": quantity,
                "restockType": restock_type,
                "restocked": restock_type in ("RETURN", "CANCEL", "LEGACY_RESTOCK"),
                "priceSet": line["originalUnitPriceSet"],
                "subtotalSet": bag(cents_of(line["originalUnitPriceSet"]) * quantity, currency),
                "totalTaxSet": bag(0, currency),
                "location": None,
            }
            for j, (line, quantity) in enumerate(chosen)
        ]
        gateway = parent["gateway"] if parent else "manual"
        transaction = self.new_transaction(
            index,
            transaction_position if transaction_position is not None else 8 + position,
            "REFUND",
            amount,
            currency,
            processed,
            gateway,
            "SUCCESS",
            parent,
            order,
        )
        return {
            "__typename": "Refund",
            "id": gid("Refund", number),
            "legacyResourceId": str(number),
            "note": note,
            "createdAt": processed,
            "processedAt": processed,
            "updatedAt": processed,
            "totalRefundedSet": bag(amount, currency),
            "refundLineItems": Connection(refund_lines),
            "transactions": Connection([transaction]),
            "duties": [],
            "return": None,
            "staffMember": None,
            "refundShippingLines": Connection([]),
            "orderAdjustments": Connection([]),
            "order": _ref("Order", order["id"], lambda: self.store.orders.node(index)),
        }

    def new_fulfillment(
        self, index: int, position: int, chosen: list[tuple[Node, int]], order: Node
    ) -> Node:
        if position >= FULFILLMENT_STRIDE:
            raise ValueError(f"an order holds at most {FULFILLMENT_STRIDE} fulfillments")
        store = self.store
        value = draw(store.orders.key, index, 30 + position)
        number = FULFILLMENT_ID_BASE + index * FULFILLMENT_STRIDE + position
        company, url = pick(CARRIERS, value)
        numbers = [f"1Z{(value >> 8) % 10**12:012d}"]
        if (value >> 48) % 7 == 0:
            numbers.append(f"1Z{(value >> 20) % 10**12:012d}")
        base = FULFILLMENT_LINE_ITEM_ID_BASE + (index * FULFILLMENT_STRIDE + position) * 512
        currency = order.get("currencyCode") or store.currency
        location = store.locations.gid(0) if store.locations.total else None
        return {
            "__typename": "Fulfillment",
            "id": gid("Fulfillment", number),
            "legacyResourceId": str(number),
            "name": f"{order.get('name')}.{position + 1}",
            "status": "SUCCESS",
            "displayStatus": pick(DISPLAY_STATUSES, value >> 4),
            "createdAt": order["updatedAt"],
            "updatedAt": order["updatedAt"],
            "deliveredAt": None,
            "inTransitAt": None,
            "estimatedDeliveryAt": None,
            "originAddress": None,
            "service": None,
            "events": Connection([]),
            "requiresShipping": True,
            "totalQuantity": sum(quantity for _, quantity in chosen),
            "location": (
                _ref("Location", location, lambda: store.locations.node(0)) if location else None
            ),
            "trackingInfo": PlainList(
                [{"company": company, "number": n, "url": f"{url}{n}"} for n in numbers]
            ),
            "fulfillmentLineItems": Connection(
                [
                    {
                        "__typename": "FulfillmentLineItem",
                        "id": gid("FulfillmentLineItem", base + j),
                        "lineItem": line,
                        "quantity": quantity,
                        "originalTotalSet": bag(
                            cents_of(line["originalUnitPriceSet"]) * quantity, currency
                        ),
                        "discountedTotalSet": bag(
                            cents_of(line["discountedUnitPriceSet"]) * quantity, currency
                        ),
                    }
                    for j, (line, quantity) in enumerate(chosen)
                ]
            ),
            "order": _ref("Order", order["id"], lambda: self.store.orders.node(index)),
        }


def recount(bundle: dict[str, Any]) -> None:
    """Line items' derived quantities from the refunds and fulfillments that touch them."""
    refunded: dict[str, int] = {}
    for refund in bundle["refunds"]:
        for item in refund["refundLineItems"].items():
            line_id = item["lineItem"]["id"]
            refunded[line_id] = refunded.get(line_id, 0) + item["quantity"]
    fulfilled: dict[str, int] = {}
    for fulfillment in bundle["fulfillments"]:
        if fulfillment["status"] != "SUCCESS":
            continue
        for item in fulfillment["fulfillmentLineItems"].items():
            line_id = item["lineItem"]["id"]
            fulfilled[line_id] = fulfilled.get(line_id, 0) + item["quantity"]
    for line in bundle["lineItems"]:
        quantity = line["quantity"]
        current = max(0, quantity - refunded.get(line["id"], 0))
        done = min(current, fulfilled.get(line["id"], 0))
        line["currentQuantity"] = current
        line["refundableQuantity"] = current
        line["unfulfilledQuantity"] = max(0, current - done)
        line["fulfillableQuantity"] = max(0, current - done)
        line["fulfillmentStatus"] = (
            "fulfilled" if done and done >= current else ("partial" if done else "unfulfilled")
        )
        currency = line["originalUnitPriceSet"]["shopMoney"]["currencyCode"]
        left = line["unfulfilledQuantity"]
        line["unfulfilledOriginalTotalSet"] = bag(
            cents_of(line["originalUnitPriceSet"]) * left, currency
        )
        line["unfulfilledDiscountedTotalSet"] = bag(
            cents_of(line["discountedUnitPriceSet"]) * left, currency
        )


# -- products: variants, inventory items, inventory levels --


class ProductChildren:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    def is_heavy(self, index: int) -> bool:
        every = self.store.many_variants_every
        generated = self.store.products.generated
        return bool(every) and index < generated and index % every == every // 2

    def default_specs(self, index: int) -> list[dict[str, Any]]:
        if self.is_heavy(index):
            count = min(VARIANT_STRIDE, self.store.many_variants)
        else:
            count = 1 + draw(self.store.products.key, index, 5) % 3
        return [{"k": k} for k in range(count)]

    def specs(self, index: int, node: Node) -> list[dict[str, Any]]:
        override = dict.get(node, "_variantSpecs")
        return list(override) if override is not None else self.default_specs(index)

    def variants(self, node: LazyNode) -> list[Node]:
        def make() -> list[Node]:
            specs = self.specs(node.index, node)
            return [self.variant(node.index, node, spec, len(specs)) for spec in specs]

        made: list[Node] = node.memo("__variants", make)
        return made

    def lazies(self) -> dict[str, Callable[[LazyNode], Any]]:
        variants = self.variants
        return {
            "variants": lambda node: Connection(variants(node)),
            "variantsCount": lambda node: {"count": len(variants(node)), "precision": "EXACT"},
            "hasOnlyDefaultVariant": lambda node: (
                [v["title"] for v in variants(node)] == ["Default Title"]
            ),
        }

    def location_indexes(self) -> list[int]:
        locations = self.store.locations.view()
        return [i for i in range(min(LEVEL_STRIDE, locations.total)) if locations.exists(i)]

    def default_levels(self, index: int, k: int) -> dict[int, dict[str, Any]]:
        key = self.store.products.key
        levels: dict[int, dict[str, Any]] = {}
        for location in self.location_indexes():
            value = draw(key, index, 100 + k * LEVEL_STRIDE + location)
            if location and value % 3 == 0:
                continue  # not stocked there
            levels[location] = {
                "available": (value >> 8) % 60,
                "committed": (value >> 16) % 5,
                "incoming": ((value >> 24) % 3) * 10,
                "reserved": 0,
                "damaged": 0,
                "safety_stock": 0,
                "quality_control": 0,
            }
        return levels

    def levels(self, index: int, spec: dict[str, Any]) -> dict[int, dict[str, Any]]:
        override = spec.get("levels")
        levels = override if override is not None else self.default_levels(index, spec["k"])
        live = set(self.location_indexes())
        return {loc: q for loc, q in sorted(levels.items()) if loc in live}

    def identity(self, index: int, k: int, count: int) -> tuple[str, tuple[str, str]]:
        """A variant's title and its one selected option."""
        if count == 1 and k == 0:
            return "Default Title", ("Title", "Default Title")
        if self.is_heavy(index) or k >= len(SIZES):
            return f"Style {k + 1}", ("Style", f"Style {k + 1}")
        return SIZES[k], ("Size", SIZES[k])

    def variant(self, index: int, product: Node, spec: dict[str, Any], count: int) -> Node:
        store = self.store
        k = spec["k"]
        value = draw(store.products.key, index, 5)
        number = VARIANT_ID_BASE + index * VARIANT_STRIDE + k
        title, option = self.identity(index, k, count)
        price = 500 + (value >> 8) % 9500 + 100 * k
        levels = self.levels(index, spec)
        created, updated = variant_times(product, spec)
        variant: Node = {
            "__typename": "ProductVariant",
            "id": gid("ProductVariant", number),
            "legacyResourceId": str(number),
            "title": title,
            "displayName": f"{product.get('title')} - {title}",
            "sku": f"SKU-{index}-{k + 1}",
            "barcode": f"0{number % 10**11:011d}" if (value >> 40) % 2 == 0 else None,
            "price": money(price),
            "compareAtPrice": money(price + 500) if (value >> 44) % 4 == 0 else None,
            "position": k + 1,
            "taxable": True,
            "inventoryPolicy": "DENY",
            "inventoryQuantity": sum(q["available"] for q in levels.values()),
            "availableForSale": product.get("status") == "ACTIVE",
            "requiresComponents": False,
            "selectedOptions": [{"name": option[0], "value": option[1]}],
            "createdAt": created,
            "updatedAt": updated,
            "product": _ref("Product", product["id"], lambda: store.products.node(index)),
        }
        variant.update(spec.get("fields") or {})
        variant["inventoryItem"] = self.inventory_item(index, product, spec, variant, levels)
        return variant

    def inventory_item(
        self,
        index: int,
        product: Node,
        spec: dict[str, Any],
        variant: Node,
        levels: dict[int, dict[str, Any]],
    ) -> Node:
        store = self.store
        k = spec["k"]
        number = INVENTORY_ITEM_ID_BASE + index * VARIANT_STRIDE + k
        item_gid = gid("InventoryItem", number)
        currency = store.currency
        item: Node = {
            "__typename": "InventoryItem",
            "id": item_gid,
            "legacyResourceId": str(number),
            "sku": variant["sku"],
            "tracked": True,
            "requiresShipping": True,
            "unitCost": {
                "amount": money(int(float(variant["price"]) * 40)),
                "currencyCode": currency,
            },
            "countryCodeOfOrigin": None,
            "provinceCodeOfOrigin": None,
            "harmonizedSystemCode": None,
            "duplicateSkuCount": 0,
            "inventoryHistoryUrl": None,
            "measurement": {
                "id": item_gid.replace("InventoryItem", "InventoryItemMeasurement"),
                "weight": {"unit": "GRAMS", "value": 200.0},
            },
            "trackedEditable": {"locked": False, "reason": None},
            "countryHarmonizedSystemCodes": Connection([]),
            "createdAt": spec.get("createdAt") or product["createdAt"],
            # Changed only by its own changes (update_inventory_item): a product update
            # touches neither the item nor its levels, and sends nothing for them.
            "updatedAt": (spec.get("item") or {}).get("updatedAt")
            or spec.get("createdAt")
            or product["createdAt"],
            "variant": _ref("ProductVariant", variant["id"], lambda: variant),
            "variants": Connection(lambda: [variant]),
        }
        item.update({k2: v for k2, v in (spec.get("item") or {}).items() if k2 != "updatedAt"})
        level_nodes = [
            self.level(index, k, location, quantities, item, product)
            for location, quantities in levels.items()
        ]
        item["inventoryLevels"] = Connection(level_nodes)

        def level_at(locationId: str = "", **_: Any) -> Node | None:
            return next((lv for lv in level_nodes if lv["location"]["id"] == locationId), None)

        item["inventoryLevel"] = Derived(level_at, lambda: level_nodes)
        item["locationsCount"] = {"count": len(level_nodes), "precision": "EXACT"}
        return item

    def level(
        self,
        index: int,
        k: int,
        location: int,
        quantities: dict[str, Any],
        item: Node,
        product: Node,
    ) -> Node:
        store = self.store
        number = INVENTORY_LEVEL_ID_BASE + (index * VARIANT_STRIDE + k) * LEVEL_STRIDE + location
        item_number = numeric(item["id"])
        level_gid = f"{gid('InventoryLevel', number)}?inventory_item_id={item_number}"
        updated = quantities.get("updatedAt") or item["updatedAt"]
        values = {
            name: int(quantities.get(name, 0)) for name in QUANTITY_NAMES if name != "on_hand"
        }
        values["on_hand"] = values["available"] + values["committed"] + values["reserved"]

        def quantities_of(names: list[str] | None = None, **_: Any) -> Any:
            result = []
            for name in names or []:
                if name not in values:
                    raise FieldError(
                        f"The quantity name '{name}' is not valid.", "INVALID_QUANTITY_NAME"
                    )
                result.append(
                    {
                        "id": f"gid://shopify/InventoryQuantity/{number}?inventory_item_id="
                        f"{item_number}&name={name}",
                        "name": name,
                        "quantity": values[name],
                        "updatedAt": updated,
                    }
                )
            return result

        return {
            "__typename": "InventoryLevel",
            "id": level_gid,
            "item": _ref("InventoryItem", item["id"], lambda: item),
            "location": _ref(
                "Location", store.locations.gid(location), lambda: store.locations.node(location)
            ),
            "quantities": Derived(quantities_of, lambda: (values, updated)),
            "_values": values,
            "isActive": True,
            "canDeactivate": True,
            "deactivationAlert": None,
            "createdAt": quantities.get("createdAt") or item["createdAt"],
            "updatedAt": updated,
        }

    # -- the store-wide lists (root inventoryItems, productVariants, Location.inventoryLevels) --

    def variant_stamps(self, view: ResourceView) -> Iterator[tuple[str, str, int]]:
        """Every live product's variants as (createdAt, updatedAt, numeric id), in id order, as
        `variant` gives them but without building them: a count needs no inventory items or
        levels, and building every variant made each count cost seconds on a few hundred
        products."""
        for index in range(view.total):
            product = view.node(index)
            if product is None:
                continue
            for spec in self.specs(index, product):
                created, updated = variant_times(product, spec)
                yield created, updated, VARIANT_ID_BASE + index * VARIANT_STRIDE + spec["k"]

    def all_variants(self, view: ResourceView, after: int | None = None) -> Iterator[Node]:
        """Every live product's variants in id order, strictly past position ``after``
        (``product index * VARIANT_STRIDE + k``, what a variant or inventory item id encodes)."""
        start = 0 if after is None else max(0, after // VARIANT_STRIDE)
        for index in range(start, view.total):
            product = view.node(index)
            if product is None:
                continue
            for variant in children_of(product, "variants"):
                if after is not None and numeric(variant["id"]) - VARIANT_ID_BASE <= after:
                    continue
                yield variant


def variant_times(product: Node, spec: dict[str, Any]) -> tuple[str, str]:
    """A variant's createdAt and updatedAt: its spec's own, else its product's, unless its
    changed fields (``update_variant``) name them."""
    fields = spec.get("fields") or {}
    created = fields.get("createdAt", spec.get("createdAt") or product["createdAt"])
    updated = fields.get("updatedAt", spec.get("updatedAt") or product["updatedAt"])
    return created, updated


def decode_child(numeric_id: int, typename: str) -> tuple[str, int, int] | None:
    """(parent resource, parent index, position) of a child id, or None."""
    table = {
        "LineItem": ("orders", LINE_ITEM_ID_BASE, LINE_ITEM_STRIDE),
        "Refund": ("orders", REFUND_ID_BASE, REFUND_STRIDE),
        "OrderTransaction": ("orders", TRANSACTION_ID_BASE, TRANSACTION_STRIDE),
        "Fulfillment": ("orders", FULFILLMENT_ID_BASE, FULFILLMENT_STRIDE),
        "ProductVariant": ("products", VARIANT_ID_BASE, VARIANT_STRIDE),
        "InventoryItem": ("products", INVENTORY_ITEM_ID_BASE, VARIANT_STRIDE),
        "InventoryLevel": ("products", INVENTORY_LEVEL_ID_BASE, VARIANT_STRIDE * LEVEL_STRIDE),
        "MailingAddress": ("customers", CUSTOMER_ADDRESS_ID_BASE, ADDRESS_STRIDE),
    }
    if typename == "Metafield":
        for owner, base in sorted(METAFIELD_ID_BASES.items(), key=lambda item: -item[1]):
            if numeric_id >= base:
                index, position = divmod(numeric_id - base, METAFIELD_STRIDE)
                return METAFIELD_RESOURCES[owner], index, position
        return None
    entry = table.get(typename)
    if entry is None:
        return None
    resource, base, stride = entry
    if numeric_id < base:
        return None
    index, position = divmod(numeric_id - base, stride)
    return resource, index, position


def find_child(parent: Node, typename: str, node_id: str) -> Node | None:
    """The child of ``parent`` whose id is ``node_id`` (query parameters ignored)."""
    wanted = numeric(node_id)
    if typename == "LineItem":
        candidates = children_of(parent, "lineItems")
    elif typename == "Refund":
        candidates = children_of(parent, "refunds")
    elif typename == "OrderTransaction":
        candidates = children_of(parent, "transactions")
    elif typename == "Fulfillment":
        candidates = children_of(parent, "fulfillments")
    elif typename == "ProductVariant":
        candidates = children_of(parent, "variants")
    elif typename == "InventoryItem":
        candidates = [v["inventoryItem"] for v in children_of(parent, "variants")]
    elif typename == "InventoryLevel":
        candidates = [
            level
            for v in children_of(parent, "variants")
            for level in children_of(v["inventoryItem"], "inventoryLevels")
        ]
    elif typename == "MailingAddress":
        candidates = children_of(parent, "addresses")
    elif typename == "Metafield":
        candidates = children_of(parent, "metafields")
    else:
        return None
    return next((c for c in candidates if numeric(c["id"]) == wanted), None)


# -- metafields: an order's, a product's, a customer's --

METAFIELD_RESOURCES = {"ORDER": "orders", "PRODUCT": "products", "CUSTOMER": "customers"}
# Namespaces records carry: a receiver keeps some (METAFIELD_NAMESPACES), never all.
METAFIELD_NAMESPACES = ("custom", "reviews", "other_app")
# Every HEAVY_METAFIELDS_EVERY-th record has more `custom` metafields than a page asks for.
HEAVY_METAFIELDS_EVERY = 7
HEAVY_METAFIELDS = 13
_METAFIELD_KINDS = (
    ("single_line_text_field", lambda n: f"value {n}"),
    ("number_integer", lambda n: str(n % 97)),
    ("boolean", lambda n: "true" if n % 2 else "false"),
    ("json", lambda n: json.dumps({"n": n % 1000}, separators=(",", ":"))),
)


class MetafieldConnection(Connection):
    """``metafields(namespace:, keys:)``: a namespace's, or the listed ``namespace.key``s."""

    __slots__ = ()

    def matching(self, arguments: dict[str, Any]) -> list[Node]:
        namespace = arguments.get("namespace")
        keys = arguments.get("keys")
        return [
            item
            for item in self.items()
            if (namespace is None or item["namespace"] == namespace)
            and (keys is None or f"{item['namespace']}.{item['key']}" in keys)
        ]


def default_metafields(owner_type: str, key: int, index: int, node: Node) -> list[Node]:
    """A record's metafields, a pure function of (seed, owner type, index): none to three
    spread over the namespaces, and many `custom` ones on every seventh record."""
    heavy = index % HEAVY_METAFIELDS_EVERY == HEAVY_METAFIELDS_EVERY // 2
    count = HEAVY_METAFIELDS if heavy else draw(key, index, 41) % 4
    base = METAFIELD_ID_BASES[owner_type] + index * METAFIELD_STRIDE
    stamp = dict.get(node, "createdAt") or dict.get(node, "updatedAt")
    items = []
    for position in range(count):
        namespace = (
            "custom" if heavy else pick(METAFIELD_NAMESPACES, draw(key, index, 42 + position))
        )
        kind, make = pick(_METAFIELD_KINDS, draw(key, index, 60 + position))
        items.append(
            metafield_node(
                base + position, owner_type, namespace, f"field_{position}", kind,
                make(draw(key, index, 80 + position)), stamp,
            )
        )  # fmt: skip
    return items


def metafield_node(
    numeric_id: int,
    owner_type: str,
    namespace: str,
    key: str,
    kind: str,
    value: str,
    stamp: str | None,
) -> Node:
    """A ``Metafield`` with every non-null scalar the schema gives it."""
    return {
        "id": gid("Metafield", numeric_id),
        "legacyResourceId": str(numeric_id),
        "namespace": namespace,
        "key": key,
        "type": kind,
        "value": value,
        "jsonValue": json.loads(value) if kind in ("json", "number_integer", "boolean") else value,
        "description": None,
        "ownerType": owner_type,
        "compareDigest": f"{numeric_id:x}",
        "createdAt": stamp,
        "updatedAt": stamp,
    }


def metafield_lazies(owner_type: str, key: int) -> dict[str, Callable[[LazyNode], Any]]:
    """``metafields`` of a record; a test changes them through the ``_metafields`` overlay."""

    def make(node: LazyNode) -> list[Node]:
        override = dict.get(node, "_metafields")
        if override is not None:
            return list(override)
        return default_metafields(owner_type, key, node.index, node)

    return {"metafields": lambda node: MetafieldConnection(lambda: make(node))}
