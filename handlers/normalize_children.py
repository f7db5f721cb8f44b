"""Normalisers for the rows that belong to a parent record: an order's line items, refunds
(and their line items), transactions and fulfillments; a product's variants; a customer's
addresses; inventory items and their levels.

Each reads one child object, REST-shaped (inside a webhook body, or a child topic's own body)
or a GraphQL node, into the same record, so webhooks and the backfill write identical rows.
Columns are declared (`Field`) with both spellings side by side; a key the payload lacks is
left out of the record (absent is not null).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from handlers.normalize import (
    Field,
    PayloadError,
    Record,
    gid_or_id,
    lower_enum,
    optional_text,
    parse_bool,
    parse_count,
    parse_money,
    parse_shopify_id,
    parse_timestamp,
    read_fields,
    text_list,
    whole_count,
)


def child_record(payload: Any, fields: tuple[Field, ...], kind: str, *, graphql: bool) -> Record:
    """The columns every child row has (id, Shopify's times, raw) and its declared ones."""
    if type(payload) is not dict and not isinstance(payload, Mapping):  # dict: no ABC check
        raise PayloadError(f"{kind}: expected an object, got {type(payload).__name__}")
    if payload.get("id") is None:
        raise PayloadError(f"{kind}: has no id")
    created, updated = ("createdAt", "updatedAt") if graphql else ("created_at", "updated_at")
    record: Record = {
        "shopify_id": parse_shopify_id(payload["id"], f"{kind}.id"),
        "shopify_updated_at": parse_timestamp(payload.get(updated), f"{kind}.{updated}"),
        "raw": dict(payload),
    }
    if created in payload:
        record["shopify_created_at"] = parse_timestamp(payload[created], f"{kind}.{created}")
    record.update(read_fields(payload, fields, kind, graphql=graphql))
    return record


LINE_ITEM_FIELDS = (
    Field("product_shopify_id", "product_id", "product", gid_or_id),
    Field("variant_shopify_id", "variant_id", "variant", gid_or_id),
    Field("sku", "sku", "sku", optional_text),
    Field("title", "title", "title", optional_text),
    Field("variant_title", "variant_title", "variantTitle", optional_text),
    Field("vendor", "vendor", "vendor", optional_text),
    Field("quantity", "quantity", "quantity", parse_count),
    Field("current_quantity", "current_quantity", "currentQuantity", parse_count),
    Field("price", "price", "originalUnitPriceSet.shopMoney.amount", parse_money),
    Field("total_discount", "total_discount", "totalDiscountSet.shopMoney.amount", parse_money),
    Field("currency", "price_set.shop_money.currency_code",
          "originalUnitPriceSet.shopMoney.currencyCode", optional_text),
    Field("taxable", "taxable", "taxable", parse_bool),
    Field("requires_shipping", "requires_shipping", "requiresShipping", parse_bool),
    Field("gift_card", "gift_card", "isGiftCard", parse_bool),
    Field("fulfillable_quantity", "fulfillable_quantity", "unfulfilledQuantity", parse_count),
    # GraphQL deprecated LineItem.fulfillmentStatus: webhooks keep it, the backfill leaves it.
    Field("fulfillment_status", "fulfillment_status", None, lower_enum),
)  # fmt: skip

REFUND_FIELDS = (
    Field("note", "note", "note", optional_text),
    Field("processed_at", "processed_at", "processedAt", parse_timestamp),
    # REST refunds carry no total: it is the sum of their successful refund transactions.
    Field("total_refunded", None, "totalRefundedSet.shopMoney.amount", parse_money),
    Field("currency", None, "totalRefundedSet.shopMoney.currencyCode", optional_text),
)

REFUND_LINE_ITEM_FIELDS = (
    Field("line_item_shopify_id", "line_item_id", "lineItem", gid_or_id),
    Field("location_shopify_id", "location_id", "location", gid_or_id),
    Field("quantity", "quantity", "quantity", parse_count),
    # REST sends `subtotal` and `total_tax` as JSON numbers (7.8 for 7.80): the sets keep
    # the amount as text, exactly.
    Field("subtotal", "subtotal_set.shop_money.amount", "subtotalSet.shopMoney.amount",
          parse_money),
    Field("total_tax", "total_tax_set.shop_money.amount", "totalTaxSet.shopMoney.amount",
          parse_money),
    Field("currency", "subtotal_set.shop_money.currency_code",
          "subtotalSet.shopMoney.currencyCode", optional_text),
    Field("restock_type", "restock_type", "restockType", lower_enum),
)  # fmt: skip

TRANSACTION_FIELDS = (
    Field("kind", "kind", "kind", lower_enum),
    Field("status", "status", "status", lower_enum),
    Field("gateway", "gateway", "gateway", optional_text),
    Field("amount", "amount", "amountSet.shopMoney.amount", parse_money),
    Field("currency", "currency", "amountSet.shopMoney.currencyCode", optional_text),
    Field("parent_shopify_id", "parent_id", "parentTransaction", gid_or_id),
    Field("processed_at", "processed_at", "processedAt", parse_timestamp),
    Field("error_code", "error_code", "errorCode", lower_enum),
    Field("test", "test", "test", parse_bool),
)

FULFILLMENT_FIELDS = (
    Field("name", "name", "name", optional_text),
    Field("status", "status", "status", lower_enum),
    Field("location_shopify_id", "location_id", "location", gid_or_id),
    Field("tracking_company", "tracking_company", None, optional_text),
    Field("tracking_numbers", "tracking_numbers", None, text_list),
    Field("tracking_urls", "tracking_urls", None, text_list),
)

# The carrier's view of a shipment. GraphQL folds it into displayStatus with states REST
# keeps elsewhere (FULFILLED, CANCELED, ...), which read null here as they do in REST.
SHIPMENT_STATUSES = frozenset(
    {
        "label_printed",
        "label_purchased",
        "attempted_delivery",
        "ready_for_pickup",
        "picked_up",
        "confirmed",
        "in_transit",
        "out_for_delivery",
        "delivered",
        "failure",
        "carrier_picked_up",
        "delayed",
        "not_delivered",
    }
)

VARIANT_FIELDS = (
    Field("title", "title", "title", optional_text),
    Field("sku", "sku", "sku", optional_text),
    Field("barcode", "barcode", "barcode", optional_text),
    Field("price", "price", "price", parse_money),
    Field("compare_at_price", "compare_at_price", "compareAtPrice", parse_money),
    Field("position", "position", "position", parse_count),
    Field("inventory_item_shopify_id", "inventory_item_id", "inventoryItem", gid_or_id),
    Field("inventory_quantity", "inventory_quantity", "inventoryQuantity", whole_count),
    Field("taxable", "taxable", "taxable", parse_bool),
)

ADDRESS_FIELDS = (
    Field("first_name", "first_name", "firstName", optional_text),
    Field("last_name", "last_name", "lastName", optional_text),
    Field("name", "name", "name", optional_text),
    Field("company", "company", "company", optional_text),
    Field("address1", "address1", "address1", optional_text),
    Field("address2", "address2", "address2", optional_text),
    Field("city", "city", "city", optional_text),
    Field("province", "province", "province", optional_text),
    Field("province_code", "province_code", "provinceCode", optional_text),
    Field("country", "country", "country", optional_text),
    Field("country_code", "country_code", "countryCodeV2", optional_text),
    Field("zip", "zip", "zip", optional_text),
    Field("phone", "phone", "phone", optional_text),
    Field("is_default", "default", None, parse_bool),
)
ADDRESS_COLUMNS = tuple(field.column for field in ADDRESS_FIELDS if field.column != "is_default")

INVENTORY_ITEM_FIELDS = (
    Field("sku", "sku", "sku", optional_text),
    Field("tracked", "tracked", "tracked", parse_bool),
    Field("requires_shipping", "requires_shipping", "requiresShipping", parse_bool),
    Field("cost", "cost", "unitCost.amount", parse_money),
    Field("currency", None, "unitCost.currencyCode", optional_text),
    Field("country_code_of_origin", "country_code_of_origin", "countryCodeOfOrigin",
          optional_text),
    Field("province_code_of_origin", "province_code_of_origin", "provinceCodeOfOrigin",
          optional_text),
    Field("harmonized_system_code", "harmonized_system_code", "harmonizedSystemCode",
          optional_text),
)  # fmt: skip

# The quantity names InventoryLevel.quantities(names:) is asked for, and their columns.
LEVEL_QUANTITIES = ("available", "on_hand", "committed", "incoming")


def normalize_line_item(payload: Any, *, graphql: bool) -> Record:
    return child_record(payload, LINE_ITEM_FIELDS, "line_item", graphql=graphql)


def normalize_refund(payload: Any, *, graphql: bool) -> Record:
    record = child_record(payload, REFUND_FIELDS, "refund", graphql=graphql)
    if not graphql and "transactions" in payload:
        record |= _refunded_total(payload["transactions"])
    return record


def _refunded_total(transactions: Any) -> Record:
    if not isinstance(transactions, list):
        raise PayloadError("refund.transactions: expected a list")
    total, currencies = Decimal(0), set()
    for transaction in transactions:
        record = child_record(transaction, TRANSACTION_FIELDS, "refund.transaction", graphql=False)
        if record.get("kind") == "refund" and record.get("status") == "success":
            total += record.get("amount") or Decimal(0)
            currencies.add(record.get("currency"))
    currency = currencies.pop() if len(currencies) == 1 else None
    return {"total_refunded": parse_money(str(total)), "currency": currency}


def normalize_refund_line_item(payload: Any, *, graphql: bool) -> Record:
    if graphql and isinstance(payload, Mapping) and payload.get("id") is None:
        raise PayloadError("refund_line_item: has no id")
    return child_record(payload, REFUND_LINE_ITEM_FIELDS, "refund_line_item", graphql=graphql)


def normalize_transaction(payload: Any, *, graphql: bool) -> Record:
    return child_record(payload, TRANSACTION_FIELDS, "transaction", graphql=graphql)


def normalize_fulfillment(payload: Any, *, graphql: bool) -> Record:
    record = child_record(payload, FULFILLMENT_FIELDS, "fulfillment", graphql=graphql)
    if graphql:
        if "displayStatus" in payload:
            status = lower_enum(payload["displayStatus"], "fulfillment.displayStatus")
            record["shipment_status"] = status if status in SHIPMENT_STATUSES else None
        if "trackingInfo" in payload:
            infos = payload["trackingInfo"] or []
            if not isinstance(infos, list):
                raise PayloadError("fulfillment.trackingInfo: expected a list")
            companies = [
                optional_text(info.get("company"), "trackingInfo.company") for info in infos
            ]
            record["tracking_company"] = next((name for name in companies if name), None)
            record["tracking_numbers"] = text_list(
                [info.get("number") for info in infos], "fulfillment.trackingInfo.number"
            )
            record["tracking_urls"] = text_list(
                [info.get("url") for info in infos], "fulfillment.trackingInfo.url"
            )
    elif "shipment_status" in payload:
        record["shipment_status"] = lower_enum(
            payload["shipment_status"], "fulfillment.shipment_status"
        )
    return record


def normalize_variant(
    payload: Any, *, graphql: bool, option_names: list[str] | None = None
) -> Record:
    """A variant. REST spells its options `option1..3` and names them only on the product
    (`options`); GraphQL gives `selectedOptions` as name/value pairs. Both become pairs."""
    record = child_record(payload, VARIANT_FIELDS, "variant", graphql=graphql)
    if graphql:
        if "selectedOptions" in payload:
            record["selected_options"] = _options(payload["selectedOptions"])
    elif option_names is not None and any(f"option{n}" in payload for n in (1, 2, 3)):
        pairs = []
        for position, name in enumerate(option_names[:3], start=1):
            value = optional_text(payload.get(f"option{position}"), f"variant.option{position}")
            if value is not None:
                pairs.append({"name": name, "value": value})
        record["selected_options"] = pairs
    return record


def _options(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise PayloadError("variant.selectedOptions: expected a list")
    return [
        {
            "name": optional_text(option.get("name"), "selectedOptions.name"),
            "value": optional_text(option.get("value"), "selectedOptions.value"),
        }
        for option in value
        if isinstance(option, Mapping)
    ]


def product_option_names(product: Mapping[str, Any]) -> list[str] | None:
    """The names of a REST product's options in position order, if the body has them."""
    options = product.get("options")
    if not isinstance(options, list):
        return None
    ordered = sorted(
        (option for option in options if isinstance(option, Mapping)),
        key=lambda option: option.get("position") or 0,
    )
    return [optional_text(option.get("name"), "product.options.name") or "" for option in ordered]


def normalize_address(payload: Any, *, graphql: bool, default_id: int | None = None) -> Record:
    """An address book entry. REST marks the default on the address (`default`); GraphQL
    names it on the customer (`defaultAddress { id }`), passed here as `default_id`."""
    record = child_record(payload, ADDRESS_FIELDS, "address", graphql=graphql)
    if graphql:
        record["is_default"] = default_id is not None and record["shopify_id"] == default_id
    return record


def normalize_inventory_item(payload: Any) -> Record:
    graphql = isinstance(payload, Mapping) and str(payload.get("id", "")).startswith("gid://")
    return child_record(payload, INVENTORY_ITEM_FIELDS, "inventory_item", graphql=graphql)


def normalize_inventory_level(payload: Any) -> Record:
    """A level: REST (`inventory_levels/*` bodies: item and location ids, `available`) or a
    GraphQL InventoryLevel (`item`, `location`, `quantities(names:)`). Keyed by the pair."""
    if not isinstance(payload, Mapping):
        raise PayloadError("inventory_level: payload must be a JSON object")
    graphql = "item" in payload or "quantities" in payload
    if graphql:
        item = gid_or_id(payload.get("item"), "inventory_level.item")
        location = gid_or_id(payload.get("location"), "inventory_level.location")
    else:
        item = gid_or_id(payload.get("inventory_item_id"), "inventory_level.inventory_item_id")
        location = gid_or_id(payload.get("location_id"), "inventory_level.location_id")
    if item is None or location is None:
        raise PayloadError("inventory_level: needs its inventory item and location ids")
    updated = "updatedAt" if graphql else "updated_at"
    record: Record = {
        "inventory_item_shopify_id": item,
        "location_shopify_id": location,
        "shopify_updated_at": parse_timestamp(payload.get(updated), f"inventory_level.{updated}"),
        "raw": dict(payload),
    }
    if graphql:
        if "createdAt" in payload:
            record["shopify_created_at"] = parse_timestamp(
                payload["createdAt"], "inventory_level.createdAt"
            )
        quantities = payload.get("quantities")
        if isinstance(quantities, list):
            for entry in quantities:
                if isinstance(entry, Mapping) and entry.get("name") in LEVEL_QUANTITIES:
                    record[str(entry["name"])] = whole_count(
                        entry.get("quantity"), f"inventory_level.{entry['name']}"
                    )
    elif "available" in payload:
        record["available"] = whole_count(payload["available"], "inventory_level.available")
    return record


def metafield_value(value: Any, field: str) -> str | None:
    """Shopify's string form of a value. GraphQL always sends a string; REST bodies have
    sent numbers and booleans bare for some types, which are kept as their JSON text so a
    webhook and the backfill store the same string."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


METAFIELD_FIELDS = (
    Field("namespace", "namespace", "namespace", optional_text),
    Field("key", "key", "key", optional_text),
    Field("type", "type", "type", optional_text),
    Field("value", "value", "value", metafield_value),
)


def normalize_metafield(payload: Any, *, graphql: bool) -> Record:
    """A metafield (REST `metafields[]` of a webhook body, or a GraphQL `Metafield`). Its
    owner comes from the parent it was read under, not from the payload."""
    return child_record(payload, METAFIELD_FIELDS, "metafield", graphql=graphql)
