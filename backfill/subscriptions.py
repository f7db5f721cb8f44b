"""Webhook subscriptions: make Shopify's list for a store match the topics we handle.

Shopify delivers a topic only while a subscription for it exists, and it deletes a
subscription on its own after 8 consecutive failed deliveries (SHOPIFY.md). A missing
subscription loses events silently, so `sync_subscriptions` compares Shopify's list with the
intended one, creates what is missing, deletes what should not be there, and records what
Shopify has afterwards in `webhook_subscriptions`. The watchdog calls it periodically and
backfills the resources whose topics were found missing::

    report = await sync_subscriptions(env, tenant, settings.webhook_url)
    if report.created:                       # those topics were not delivering until now
        for resource in report.missing_resources():  # e.g. ["orders"]
            ...  # incremental sync of `resource` since the last good check

The mandatory compliance topics (`customers/data_request`, `customers/redact`, `shop/redact`)
are not API subscriptions: they are configured in the app's settings (shopify.app.toml), and
the API's WebhookSubscriptionTopic enum does not even have them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, update

from backfill.client import AdminClient, BackfillError
from backfill.queries import RESOURCES
from backfill.runner import BackfillEnvironment, admin_client_for, hold_shop_id
from handlers import handled_topics
from handlers.resources import (
    accepted_scopes,
    required_scopes,
    topic_metafield_namespaces,
    topic_resource_name,
)
from handlers.shop_identity import COMPLIANCE_TOPICS
from models import Tenant, WebhookSubscription, utcnow
from models.statuses import TenantStatus
from models.tenancy import of_store, use_tenant

log = logging.getLogger("shopify_receiver.backfill.subscriptions")

# Topics outside our handlers that a store may still be subscribed to (an older version of
# this service, another tool using the app's credentials): their REST spelling, for reports.
OTHER_KNOWN_TOPICS = ("shop/update", "bulk_operations/finish")
# The subscriptions list costs 2 + 1 per node + 1; 100 a page keeps each request cheap.
PAGE_SIZE = 100
MUTATION_COST = 10
# Shopify's userError messages we act on (see tests/fakeshop/subscription_api.py).
ADDRESS_TAKEN = "has already been taken"
DOES_NOT_EXIST = "does not exist"

SUBSCRIPTION_FIELDS = "id topic uri format filter includeFields metafieldNamespaces createdAt"

LIST_SUBSCRIPTIONS = f"""
query WebhookSubscriptions($first: Int!, $after: String) {{
  webhookSubscriptions(first: $first, after: $after) {{
    pageInfo {{ hasNextPage endCursor }}
    nodes {{ {SUBSCRIPTION_FIELDS} }}
  }}
}}
"""

CREATE_SUBSCRIPTION = f"""
mutation WebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!, $subscription: WebhookSubscriptionInput!
) {{
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $subscription) {{
    webhookSubscription {{ {SUBSCRIPTION_FIELDS} }}
    userErrors {{ field message }}
  }}
}}
"""

DELETE_SUBSCRIPTION = """
mutation WebhookSubscriptionDelete($id: ID!) {
  webhookSubscriptionDelete(id: $id) {
    deletedWebhookSubscriptionId
    userErrors { field message }
  }
}
"""

ACCESS_SCOPES = """
query AccessScopes {
  currentAppInstallation { accessScopes { handle } }
}
"""
ACCESS_SCOPES_COST = 3

DOCUMENTS = (LIST_SUBSCRIPTIONS, CREATE_SUBSCRIPTION, DELETE_SUBSCRIPTION, ACCESS_SCOPES)


# --- topics ----------------------------------------------------------------------------------


def enum_topic(topic: str) -> str:
    """REST spelling -> the API's WebhookSubscriptionTopic: `orders/create` -> `ORDERS_CREATE`."""
    return topic.replace("/", "_").upper()


def intended_topics() -> list[str]:
    """The topics every store should be subscribed to through the API: those our handlers
    handle, less the compliance topics (configured in the app's settings instead)."""
    return sorted(set(handled_topics()) - COMPLIANCE_TOPICS)


INTENDED_TOPICS: tuple[str, ...] = tuple(intended_topics())


def app_scopes() -> list[str]:
    """The access scopes the app must be granted: those of every topic it subscribes to
    (the backfill reads the same resources, so it needs no others)."""
    return required_scopes(INTENDED_TOPICS)


# Enum -> REST is built from the topics we know rather than by splitting the enum:
# BULK_OPERATIONS_FINISH is `bulk_operations/finish` but ORDERS_PARTIALLY_FULFILLED is
# `orders/partially_fulfilled`, and nothing in the enum says where the slash goes.
_REST_BY_ENUM = {enum_topic(t): t for t in (*handled_topics(), *OTHER_KNOWN_TOPICS)}


def rest_topic(enum: str) -> str:
    """`ORDERS_CREATE` -> `orders/create`; a topic we do not know keeps its enum spelling."""
    return _REST_BY_ENUM.get(enum, enum)


def topic_resource(topic: str) -> str | None:
    """The resource a topic's webhooks carry (`orders/paid` -> `orders`; `refunds/create`:
    an order's refund -> `orders`), if we sync it."""
    name = topic_resource_name(topic)
    if name is not None:
        return name if name in RESOURCES else None
    # Topics with a handler of their own (orders/edited) still carry their family's records.
    family = topic.partition("/")[0]
    return family if family in RESOURCES else None


# --- Shopify's side --------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteSubscription:
    """One of the app's webhook subscriptions on a store, as Shopify lists it."""

    gid: str
    topic: str  # REST spelling where known (`orders/create`), else the enum (`THEMES_PUBLISH`)
    uri: str
    format: str = "JSON"
    filter: str | None = None
    include_fields: tuple[str, ...] = ()
    created_at: datetime | None = None
    metafield_namespaces: tuple[str, ...] = ()

    @property
    def delivers_everything(self) -> bool:
        """JSON bodies of every event, whole: what the webhook endpoint needs. An XML body is
        refused (400), a filter drops events, `includeFields` truncates the records."""
        return self.format == "JSON" and not self.filter and not self.include_fields

    @property
    def namespaces_wanted(self) -> bool:
        """Its bodies carry the metafields of exactly the namespaces we keep (none when we
        keep none): one that carries others or too few is replaced."""
        return set(self.metafield_namespaces) == set(topic_metafield_namespaces(self.topic))

    @classmethod
    def from_node(cls, node: dict[str, Any]) -> RemoteSubscription:
        created = node.get("createdAt")
        return cls(
            gid=str(node["id"]),
            topic=rest_topic(str(node["topic"])),
            uri=str(node.get("uri") or ""),
            format=str(node.get("format") or "JSON"),
            filter=node.get("filter") or None,
            include_fields=tuple(node.get("includeFields") or ()),
            metafield_namespaces=tuple(node.get("metafieldNamespaces") or ()),
            created_at=(
                datetime.fromisoformat(created.replace("Z", "+00:00"))
                if isinstance(created, str)
                else None
            ),
        )


async def fetch_subscriptions(
    client: AdminClient, *, page_size: int = PAGE_SIZE
) -> list[RemoteSubscription]:
    """Every webhook subscription the app has on the client's store, in Shopify's order."""
    found: list[RemoteSubscription] = []
    after: str | None = None
    while True:
        data = await client.execute(
            LIST_SUBSCRIPTIONS, {"first": page_size, "after": after}, cost=page_size + 3
        )
        connection = data.get("webhookSubscriptions") or {}
        found.extend(RemoteSubscription.from_node(node) for node in connection.get("nodes") or [])
        page_info = connection.get("pageInfo") or {}
        if not page_info.get("hasNextPage") or not page_info.get("endCursor"):
            return found
        after = page_info["endCursor"]


# --- the comparison --------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionPlan:
    """Shopify's subscriptions measured against the intended (topic, uri) pairs."""

    uri: str
    ok: tuple[RemoteSubscription, ...]  # one working subscription per intended topic
    missing: tuple[str, ...]  # intended topics without a working subscription
    stray: tuple[RemoteSubscription, ...]  # another address, an unintended topic, or not whole JSON
    duplicates: tuple[RemoteSubscription, ...]  # further working copies of an `ok` one

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.stray or self.duplicates)

    @property
    def unwanted(self) -> tuple[RemoteSubscription, ...]:
        """What a sync deletes."""
        return self.stray + self.duplicates


def plan(
    existing: Iterable[RemoteSubscription], uri: str, topics: Iterable[str] = INTENDED_TOPICS
) -> SubscriptionPlan:
    """Compare `existing` with one subscription to `uri` per topic of `topics`."""
    intended = list(dict.fromkeys(topics))
    wanted = set(intended)
    kept: dict[str, RemoteSubscription] = {}
    stray: list[RemoteSubscription] = []
    duplicates: list[RemoteSubscription] = []
    for subscription in existing:
        if (
            subscription.topic not in wanted
            or subscription.uri != uri
            or not subscription.delivers_everything
            or not subscription.namespaces_wanted
        ):
            stray.append(subscription)
        elif subscription.topic in kept:
            # Both deliver every event: the receiver dedupes, but each costs a delivery.
            duplicates.append(subscription)
        else:
            kept[subscription.topic] = subscription
    return SubscriptionPlan(
        uri=uri,
        ok=tuple(kept[topic] for topic in intended if topic in kept),
        missing=tuple(topic for topic in intended if topic not in kept),
        stray=tuple(stray),
        duplicates=tuple(duplicates),
    )


def stray_reason(
    subscription: RemoteSubscription, uri: str, topics: Iterable[str] = INTENDED_TOPICS
) -> str:
    """Why `subscription` is not one of the intended ones, in words for an operator."""
    if subscription.topic not in set(topics):
        return "topic not handled"
    if subscription.uri != uri:
        return "another address"
    if subscription.format != "JSON":
        return f"{subscription.format} format"
    if subscription.filter:
        return f"filtered ({subscription.filter})"
    if subscription.include_fields:
        return "partial payloads (includeFields)"
    if not subscription.namespaces_wanted:
        wanted = ", ".join(topic_metafield_namespaces(subscription.topic)) or "none"
        given = ", ".join(subscription.metafield_namespaces) or "none"
        return f"metafield namespaces {given}, not {wanted}"
    return "duplicate"


# --- the report ------------------------------------------------------------------------------


@dataclass
class SubscriptionReport:
    """What a check found and, for a sync, what it changed.

    `missing`, `stray` and `duplicates` describe Shopify's list as found, before any change;
    `created` and `deleted` what this run changed; `subscriptions` Shopify's list as it stood
    at the end (what `webhook_subscriptions` now holds).
    """

    shop: str
    uri: str
    dry_run: bool
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    stray: list[RemoteSubscription] = field(default_factory=list)
    duplicates: list[RemoteSubscription] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    deleted: list[RemoteSubscription] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    subscriptions: list[RemoteSubscription] = field(default_factory=list)
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def in_sync(self) -> bool:
        """Shopify's list matched the intended one when checked (before any change)."""
        return not (self.missing or self.stray or self.duplicates)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.deleted)

    def missing_resources(self) -> list[str]:
        """The synced resources (customers, products, orders) with at least one topic that
        had no working subscription when checked: their webhooks may have been lost since the
        last good check, so that window needs a backfill. `app/uninstalled` maps to none."""
        found = {topic_resource(topic) for topic in self.missing}
        return [name for name in RESOURCES if name in found]


# --- doing it --------------------------------------------------------------------------------


async def _load_tenant(env: BackfillEnvironment, tenant: Tenant | int) -> Tenant:
    tenant_id = tenant if isinstance(tenant, int) else tenant.id
    async with env.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        loaded = await session.get(Tenant, tenant_id)
    if loaded is None:
        raise BackfillError(f"store {tenant_id} does not exist")
    if loaded.status != TenantStatus.ACTIVE:
        # Shopify removes an uninstalled app's subscriptions itself, and the token is gone.
        raise BackfillError(f"{loaded.shop_domain} is {loaded.status}; reinstall the app first")
    return loaded


async def record_subscriptions(
    env: BackfillEnvironment,
    tenant_id: int,
    subscriptions: Sequence[RemoteSubscription],
    checked_at: datetime,
    *,
    watchdog: bool,
) -> None:
    """Replace the store's `webhook_subscriptions` rows with `subscriptions` (Shopify's list as
    last seen); `watchdog` also stamps `tenants.watchdog_checked_at` (a check that repaired)."""
    rows: dict[tuple[str, str], RemoteSubscription] = {}
    # One row per (topic, uri), the table's key: a working subscription wins over one that
    # shares its address but not its format or filter.
    for subscription in sorted(subscriptions, key=lambda s: not s.delivers_everything):
        rows.setdefault((subscription.topic, subscription.uri), subscription)
    async with env.sessions() as session, session.begin():
        await use_tenant(session, tenant_id)
        await session.execute(
            delete(WebhookSubscription)
            .where(of_store(WebhookSubscription.tenant_id, tenant_id))
            # A plain DELETE: the session holds none of these rows to update.
            .execution_options(synchronize_session=False)
        )
        session.add_all(
            WebhookSubscription(
                tenant_id=tenant_id,
                topic=subscription.topic,
                uri=subscription.uri,
                shopify_gid=subscription.gid,
                created_at=subscription.created_at or checked_at,
                checked_at=checked_at,
            )
            for subscription in rows.values()
        )
        if watchdog:
            await session.execute(
                update(Tenant).where(Tenant.id == tenant_id).values(watchdog_checked_at=checked_at)
            )


def _messages(errors: list[dict[str, Any]]) -> str:
    return "; ".join(str(error.get("message")) for error in errors)


async def granted_scopes(client: AdminClient) -> set[str] | None:
    """The access scopes the store granted the app (a write scope includes its read scope),
    or None when Shopify cannot say."""
    try:
        data = await client.execute(ACCESS_SCOPES, {}, cost=ACCESS_SCOPES_COST)
    except BackfillError:
        return None
    installation = data.get("currentAppInstallation") or {}
    handles = {
        str(scope.get("handle"))
        for scope in installation.get("accessScopes") or []
        if isinstance(scope, dict)
    }
    return handles | {"read_" + h.removeprefix("write_") for h in handles if h.startswith("write_")}


def scope_hint(topic: str, granted: set[str] | None) -> str:
    """What to grant when Shopify refused a subscription to `topic` for want of a scope: ""
    when the topic needs none, or the store granted one that Shopify accepts for it."""
    accepted = accepted_scopes(topic)
    if not accepted or (granted is not None and granted & set(accepted)):
        return ""
    if granted is None:
        return f" (if the app lacks it, grant the {accepted[0]} access scope)"
    return (
        f" (the app was not granted the {accepted[0]} access scope this topic requires: add it"
        " to the app's scopes and have the store approve it)"
    )


async def _create(client: AdminClient, topic: str, uri: str) -> list[dict[str, Any]]:
    subscription: dict[str, Any] = {"uri": uri, "format": "JSON"}
    namespaces = topic_metafield_namespaces(topic)
    if namespaces:
        # Shopify puts a record's metafields in its webhook bodies only for these.
        subscription["metafieldNamespaces"] = list(namespaces)
    data = await client.execute(
        CREATE_SUBSCRIPTION,
        {"topic": enum_topic(topic), "subscription": subscription},
        cost=MUTATION_COST,
    )
    return list((data.get("webhookSubscriptionCreate") or {}).get("userErrors") or [])


async def _delete(client: AdminClient, gid: str) -> list[dict[str, Any]]:
    data = await client.execute(DELETE_SUBSCRIPTION, {"id": gid}, cost=MUTATION_COST)
    errors = (data.get("webhookSubscriptionDelete") or {}).get("userErrors") or []
    # Already gone (Shopify dropped it meanwhile, or another sync won the race): the goal.
    return [error for error in errors if DOES_NOT_EXIST not in str(error.get("message"))]


async def _apply(
    client: AdminClient, found: SubscriptionPlan, report: SubscriptionReport, shop: str
) -> None:
    # Create before deleting: when the address moves, the old subscriptions keep delivering
    # until the new ones exist, so no event falls between the two.
    deleted: set[str] = set()
    granted: set[str] | None = None
    asked = False
    for topic in found.missing:
        errors = await _create(client, topic, found.uri)
        if errors and any(ADDRESS_TAKEN in str(e.get("message")) for e in errors):
            # Our address is held by a subscription of another format or filter: Shopify
            # may count that as the same address, so free it and try once more.
            blockers = [s for s in found.stray if (s.topic, s.uri) == (topic, found.uri)]
            for blocker in blockers:
                if not await _delete(client, blocker.gid):
                    deleted.add(blocker.gid)
                    report.deleted.append(blocker)
            if blockers:
                errors = await _create(client, topic, found.uri)
        if errors:
            if not asked:
                # Asked once, and only when something was refused: a missing scope is the
                # usual reason, and Shopify's message does not always name the scope.
                granted, asked = await granted_scopes(client), True
            report.errors.append(
                f"could not subscribe to {topic}: {_messages(errors)}{scope_hint(topic, granted)}"
            )
            log.warning("webhooks.create_failed shop=%s topic=%s errors=%s", shop, topic, errors)
            continue
        report.created.append(topic)
        log.info("webhooks.created shop=%s topic=%s uri=%s", shop, topic, found.uri)
    for subscription in found.unwanted:
        if subscription.gid in deleted:
            continue
        errors = await _delete(client, subscription.gid)
        if errors:
            report.errors.append(
                f"could not delete {subscription.topic} -> {subscription.uri}: {_messages(errors)}"
            )
            continue
        report.deleted.append(subscription)
        log.info(
            "webhooks.deleted shop=%s topic=%s uri=%s", shop, subscription.topic, subscription.uri
        )


async def _check(
    env: BackfillEnvironment, tenant: Tenant | int, uri: str, *, repair: bool
) -> SubscriptionReport:
    if not uri:
        raise ValueError("the webhook address is empty (is PUBLIC_URL set?)")
    loaded = await _load_tenant(env, tenant)
    client = admin_client_for(env, loaded)
    if repair and loaded.shopify_shop_id is None:
        # One cost-1 query, once per store: destructive webhooks are checked on the id.
        await hold_shop_id(env, client, loaded)
    existing = await fetch_subscriptions(client)
    found = plan(existing, uri)
    report = SubscriptionReport(
        shop=loaded.shop_domain,
        uri=uri,
        dry_run=not repair,
        ok=[subscription.topic for subscription in found.ok],
        missing=list(found.missing),
        stray=list(found.stray),
        duplicates=list(found.duplicates),
        subscriptions=existing,
    )
    if repair and not found.in_sync:
        try:
            await _apply(client, found, report, loaded.shop_domain)
        except BackfillError as exc:
            # Record what did happen; a list we cannot read any more raises below.
            report.errors.append(str(exc))
        # Shopify's word on the result, not our bookkeeping of it.
        report.subscriptions = await fetch_subscriptions(client)
    report.checked_at = utcnow()
    await record_subscriptions(
        env, loaded.id, report.subscriptions, report.checked_at, watchdog=repair
    )
    return report


async def sync_subscriptions(
    env: BackfillEnvironment, tenant: Tenant | int, uri: str, *, dry_run: bool = False
) -> SubscriptionReport:
    """Make the store's subscriptions exactly one whole-JSON subscription to `uri` per
    intended topic: create the missing ones, then delete every other (old address, topic we
    no longer handle, XML, filtered, duplicate). Records Shopify's list afterwards in
    `webhook_subscriptions` and stamps `tenants.watchdog_checked_at`.

    `dry_run` changes nothing on Shopify (nor the stamp) and reports what a sync would do:
    `missing` would be created, `stray` and `duplicates` deleted.

    Raises BackfillError (CredentialsInvalid for token problems) when Shopify cannot be
    asked or the store is not active; refused changes are in `report.errors`.
    """
    return await _check(env, tenant, uri, repair=not dry_run)


async def subscription_status(
    env: BackfillEnvironment, tenant: Tenant | int, uri: str
) -> SubscriptionReport:
    """Compare without changing anything on Shopify; refreshes `webhook_subscriptions`."""
    return await _check(env, tenant, uri, repair=False)
