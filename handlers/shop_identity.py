"""Which Shopify shop a body is about, and the shop id we hold for each store.

A signature covers the body only, so the topic and shop headers of a captured delivery can be
rewritten. A destructive topic is applied only when its body, which the signature does cover,
names the header's shop: by its myshopify domain, or by the Shopify shop id we hold for the
store (`tenants.shopify_shop_id`, learnt from the backfill's `shop { id }` or from a signed body
naming both the domain and the id).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.normalize import MAX_SHOPIFY_ID
from models import Tenant, utcnow
from models.upsert import affected_rows

# Deleting or wiping data, or recording a request about a person: applied only for a body
# that names the header's shop.
DESTRUCTIVE_TOPICS = frozenset(
    {"shop/redact", "customers/redact", "customers/data_request", "app/uninstalled"}
)
COMPLIANCE_TOPICS = frozenset({"customers/data_request", "customers/redact", "shop/redact"})
# Where a body names its shop's domain. `domain` is the shop's primary domain, which may be a
# custom one (shop.example.com); only a myshopify domain there identifies a shop.
DOMAIN_FIELDS = ("shop_domain", "myshopify_domain", "domain")
# Shopify's published samples say `{shop}.myshopify.com` or null: a placeholder names no shop.
MYSHOPIFY_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]{0,200}\.myshopify\.com")
# What makes one compliance body another: a replay across these topics is a misfit.
_COMPLIANCE_MARKERS = {
    "shop/redact": frozenset(),
    "customers/redact": frozenset({"customer", "orders_to_redact"}),
    "customers/data_request": frozenset({"customer", "orders_requested", "data_request"}),
}
_ALL_MARKERS = frozenset().union(*_COMPLIANCE_MARKERS.values())


class ShopMismatch(ValueError):
    """The body names a shop other than the one in the X-Shopify-Shop-Domain header."""


def named_domains(payload: dict[str, Any]) -> dict[str, str]:
    """field -> myshopify domain, for each field of the body that really names a shop."""
    found = {}
    for field in DOMAIN_FIELDS:
        value = payload.get(field)
        if isinstance(value, str):
            domain = value.strip().lower()
            if MYSHOPIFY_DOMAIN.fullmatch(domain):
                found[field] = domain
    return found


def _id_field(topic: str) -> str:
    return "id" if topic == "app/uninstalled" else "shop_id"


def body_shop_id(topic: str, payload: dict[str, Any]) -> int | None:
    """The Shopify shop id a destructive topic's body carries (None: none, or a placeholder).
    Call after `destructive_shape_misfit` found the body well shaped."""
    value = payload.get(_id_field(topic))
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def destructive_shape_misfit(topic: str, payload: dict[str, Any]) -> str | None:
    """Why the body is not what `topic` carries (SHOPIFY.md, compliance samples), or None.

    A shape, not a schema: the keys that tell one of these bodies from every other signed body
    we receive (an order, a customer, another compliance topic), so that no captured body of
    another topic can be re-sent as this one. Unknown extra keys are allowed.
    """
    field = _id_field(topic)
    value = payload.get(field, ...)
    if value is ... or not (
        value is None
        or (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SHOPIFY_ID)
    ):
        return f"{topic} body has no {field} (a Shopify shop id)"
    if topic == "app/uninstalled":
        # The shop object; an order, customer or product body has no myshopify_domain.
        if "myshopify_domain" not in payload:
            return f"{topic} body is not a shop object (no myshopify_domain)"
        gid = payload.get("admin_graphql_api_id")
        if isinstance(gid, str) and not gid.startswith("gid://shopify/Shop/"):
            return f"{topic} body is {gid.rsplit('/', 1)[0]!r}, not a Shop"
        if _ALL_MARKERS & payload.keys() or "shop_id" in payload:
            return f"{topic} body is a compliance request, not a shop object"
        return None
    if "shop_domain" not in payload:
        return f"{topic} body has no shop_domain"
    wanted = _COMPLIANCE_MARKERS[topic]
    missing = sorted(wanted - payload.keys())
    if missing:
        return f"{topic} body has no {', '.join(missing)}"
    foreign = sorted((_ALL_MARKERS - wanted) & payload.keys())
    if foreign:
        return f"{topic} body carries {', '.join(foreign)}: it is another compliance topic"
    if "customer" in wanted:
        customer = payload.get("customer")
        if not isinstance(customer, dict) or "id" not in customer:
            return f"{topic} body's customer has no id"
    for key in ("orders_to_redact", "orders_requested"):
        if key in wanted and not isinstance(payload.get(key), list | None):
            return f"{topic} body's {key} is not a list"
    if topic == "customers/data_request" and not isinstance(payload.get("data_request"), dict):
        return f"{topic} body's data_request is not an object"
    return None


def names_other_domain(shop_domain: str, payload: dict[str, Any]) -> str | None:
    """Why the body names a shop other than `shop_domain` by domain, or None."""
    for field, domain in named_domains(payload).items():
        if domain != shop_domain:
            return f"body's {field} {domain!r} is not the X-Shopify-Shop-Domain {shop_domain!r}"
    return None


async def check_shop_id(
    session: AsyncSession,
    topic: str,
    shop_domain: str,
    payload: dict[str, Any],
    held: int | None,
) -> None:
    """Raise ShopMismatch when a destructive body's shop id is not the store's: another id
    than the one held, or the id another store holds."""
    shop_id = body_shop_id(topic, payload)
    if shop_id is None or shop_id == held:
        return
    field = _id_field(topic)
    if held is not None:
        raise ShopMismatch(
            f"body's {field} {shop_id} is not {shop_domain}'s Shopify shop id {held}"
        )
    holder = await holder_of(session, shop_id)
    if holder is not None and holder != shop_domain:
        raise ShopMismatch(f"body's {field} {shop_id} is the Shopify shop id of {holder}")


def unconfirmed_shop(
    topic: str, shop_domain: str, payload: dict[str, Any], held: int | None
) -> str | None:
    """Why a well-shaped destructive body is not applied: it names the header's shop neither
    by domain nor by the shop id held for it (placeholders). None when it does."""
    if shop_domain in named_domains(payload).values():
        return None
    shop_id = body_shop_id(topic, payload)
    if held is not None and shop_id == held:
        return None
    known = f"its Shopify shop id {held}" if held is not None else "a Shopify shop id (none held)"
    return (
        f"{topic} body names neither {shop_domain} nor {known}; "
        "replay it once the store's shop id is known (backfill)"
    )


async def holder_of(session: AsyncSession, shop_id: int) -> str | None:
    """The domain of the store we hold `shop_id` for."""
    return await session.scalar(select(Tenant.shop_domain).where(Tenant.shopify_shop_id == shop_id))


async def learn_from_body(
    session: AsyncSession,
    tenant_id: int,
    topic: str,
    shop_domain: str,
    payload: dict[str, Any],
    held: int | None,
) -> int | None:
    """Record the shop id a signed destructive body gives together with the header's domain,
    when none is held yet; returns the id held afterwards."""
    if held is not None or shop_domain not in named_domains(payload).values():
        return held
    shop_id = body_shop_id(topic, payload)
    if shop_id is None:
        return None
    return shop_id if await _record(session, tenant_id, shop_id) else None


async def record_shop_id(session: AsyncSession, tenant_id: int, shop_id: int) -> None:
    """Hold `shop_id` for the store (the backfill's `shop { id }`); raises ShopMismatch when
    the store holds another id or another store holds this one: never overwritten silently."""
    tenant = await session.get_one(Tenant, tenant_id)
    if tenant.shopify_shop_id == shop_id:
        return
    if tenant.shopify_shop_id is not None:
        raise ShopMismatch(
            f"Shopify answers shop id {shop_id} for {tenant.shop_domain}, but {tenant.shop_domain} "
            f"is recorded as shop {tenant.shopify_shop_id}: the access token or Admin API "
            "address belongs to another shop, or the store row is wrong"
        )
    holder = await holder_of(session, shop_id)
    if holder is not None:
        raise ShopMismatch(
            f"Shopify answers shop id {shop_id} for {tenant.shop_domain}, but that id is "
            f"recorded for {holder}: the access token or Admin API address belongs to {holder}"
        )
    if not await _record(session, tenant_id, shop_id):
        raise ShopMismatch(f"shop id {shop_id} was recorded for another store meanwhile")


async def _record(session: AsyncSession, tenant_id: int, shop_id: int) -> bool:
    """Set the id where none is held; False if another store took it first (unique)."""
    try:
        # A savepoint: a concurrent store taking the same id must not abort the caller's work.
        async with session.begin_nested():
            result = await session.execute(
                update(Tenant)
                .where(Tenant.id == tenant_id, Tenant.shopify_shop_id.is_(None))
                .values(shopify_shop_id=shop_id, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    except IntegrityError:
        return False
    return affected_rows(result) == 1
