"""The Admin API's webhook subscription operations over a store's ``SubscriptionRegistry``:
the ``webhookSubscriptions`` connection (and ``webhookSubscription``,
``webhookSubscriptionsCount``) and the ``webhookSubscriptionCreate``/``Update``/``Delete``
mutations, with Shopify's ``userErrors``.

Registered on the query and mutation roots by ``api.py``; resolvers follow the executor's
convention (``resolver(info, **arguments)``, ``info.context.store``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .executor import FieldError
from .search import parse_search
from .subscriptions import Subscription, SubscriptionError

GID = re.compile(r"^gid://shopify/WebhookSubscription/(?P<id>\d+)(?:\?.*)?$")
NOT_FOUND = "Webhook subscription does not exist"


def _epoch(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def _endpoint(uri: str) -> dict[str, Any]:
    # The deprecated `endpoint` union, as Shopify derives it from the address.
    if uri.startswith("pubsub://"):
        project, _, topic = uri.removeprefix("pubsub://").partition(":")
        return {
            "__typename": "WebhookPubSubEndpoint",
            "pubSubProject": project,
            "pubSubTopic": topic,
        }
    if uri.startswith("arn:"):
        return {"__typename": "WebhookEventBridgeEndpoint", "arn": uri}
    return {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri}


def subscription_node(subscription: Subscription) -> dict[str, Any]:
    """A ``WebhookSubscription`` as the API returns it for a selection of every field."""
    return {
        "__typename": "WebhookSubscription",
        "id": subscription.id,
        "legacyResourceId": str(subscription.legacy_id),
        "topic": subscription.topic,
        "uri": subscription.uri,
        "callbackUrl": subscription.uri,
        "endpoint": _endpoint(subscription.uri),
        "format": subscription.format,
        "name": subscription.name,
        "filter": subscription.filter,
        "includeFields": list(subscription.include_fields),
        "metafieldNamespaces": list(subscription.metafield_namespaces),
        "metafields": [],
        "createdAt": subscription.created_at,
        "updatedAt": subscription.updated_at,
        "apiVersion": {
            "handle": subscription.api_version,
            "displayName": subscription.api_version,
            "supported": True,
        },
    }


def _legacy_id(global_id: str) -> int | None:
    match = GID.match(global_id or "")
    return int(match["id"]) if match else None


def _cursor(legacy_id: int) -> str:
    # Same shape as the resource connections' cursors (base64 JSON of the last id).
    payload = json.dumps(
        {"last_id": legacy_id, "last_value": str(legacy_id)}, separators=(",", ":")
    )
    return base64.b64encode(payload.encode()).decode()


def _decode(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(json.loads(base64.b64decode(cursor, validate=True))["last_id"])
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise FieldError("Invalid cursor for current pagination sort.", "BAD_REQUEST") from error


def _filtered(
    info: Any,
    topics: list[str] | None,
    uri: str | None,
    callbackUrl: str | None,
    format: str | None,
    query: str | None,
) -> list[Subscription]:
    store = info.context.store
    search = parse_search(query, store.clock.now().timestamp())
    if search.warnings:
        path = info.path.as_list() if hasattr(info.path, "as_list") else list(info.path)
        info.context.search.append({"path": path, "query": query, "warnings": search.warnings})
    address = uri if uri is not None else callbackUrl
    return [
        s
        for s in store.subscriptions.list(topics or None, address)
        if (format is None or s.format == format)
        and search.matches(_epoch(s.created_at), _epoch(s.updated_at), s.legacy_id)
    ]


def _connection(
    info: Any,
    first: int | None = None,
    last: int | None = None,
    after: str | None = None,
    before: str | None = None,
    reverse: bool = False,
    sortKey: str | None = None,
    topics: list[str] | None = None,
    uri: str | None = None,
    callbackUrl: str | None = None,
    format: str | None = None,
    query: str | None = None,
    **_ignored: Any,
) -> dict[str, Any]:
    if first is None and last is None:
        raise FieldError("you must provide one of first or last", "BAD_REQUEST")
    if first is not None and last is not None:
        raise FieldError("providing both first and last is not supported", "BAD_REQUEST")
    # ID and CREATED_AT sort alike: ids are handed out in creation order.
    ordered = _filtered(info, topics, uri, callbackUrl, format, query)
    if reverse:
        ordered.reverse()
    after_id, before_id = _decode(after), _decode(before)

    def past(subscription: Subscription, cursor_id: int) -> bool:
        # Beyond the cursor in the sort direction (the cursor's own record may be gone since).
        return (
            (subscription.legacy_id < cursor_id)
            if reverse
            else (subscription.legacy_id > cursor_id)
        )

    window = [
        s
        for s in ordered
        if (after_id is None or past(s, after_id))
        and (before_id is None or (not past(s, before_id) and s.legacy_id != before_id))
    ]
    # Records outside the window on either side make the previous/next page non-empty.
    earlier = after_id is not None and any(not past(s, after_id) for s in ordered)
    later = before_id is not None and any(
        past(s, before_id) or s.legacy_id == before_id for s in ordered
    )
    if first is not None:
        page = window[:first]
        has_next, has_previous = len(window) > first or later, earlier
    else:
        assert last is not None
        page = window[max(0, len(window) - last) :]
        has_previous, has_next = len(window) > last or earlier, later
    nodes = [subscription_node(s) for s in page]
    cursors = [_cursor(s.legacy_id) for s in page]
    info.context.nodes_returned += len(nodes)
    return {
        "edges": [{"cursor": c, "node": n} for c, n in zip(cursors, nodes, strict=True)],
        "nodes": nodes,
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        },
    }


def _count(info: Any, query: str | None = None, limit: int | None = 10000, **_: Any) -> Any:
    count = len(_filtered(info, None, None, None, None, query))
    if limit is not None and count > limit:
        return {"count": limit, "precision": "AT_LEAST"}
    return {"count": count, "precision": "EXACT"}


def lookup(store: Any, global_id: str) -> dict[str, Any] | None:
    """``node(id:)``/``webhookSubscription(id:)``: the subscription, or None."""
    legacy_id = _legacy_id(global_id)
    subscription = store.subscriptions.get(legacy_id) if legacy_id is not None else None
    return subscription_node(subscription) if subscription is not None else None


def _input(values: dict[str, Any]) -> dict[str, Any]:
    """WebhookSubscriptionInput as registry keywords (`uri` wins over deprecated `callbackUrl`)."""
    options: dict[str, Any] = {}
    address = values.get("uri") if values.get("uri") is not None else values.get("callbackUrl")
    if address is not None:
        options["uri"] = address
    if values.get("format") is not None:
        options["format"] = values["format"]
    for key, option in (("name", "name"), ("filter", "filter")):
        if key in values:
            options[option] = values[key]
    if values.get("includeFields") is not None:
        options["include_fields"] = tuple(values["includeFields"])
    if values.get("metafieldNamespaces") is not None:
        options["metafield_namespaces"] = tuple(values["metafieldNamespaces"])
    return options


def _create(info: Any, topic: str, webhookSubscription: dict[str, Any]) -> dict[str, Any]:
    options = _input(webhookSubscription)
    try:
        created = info.context.store.subscriptions.create(topic, options.pop("uri", ""), **options)
    except SubscriptionError as refused:
        return {"webhookSubscription": None, "userErrors": refused.user_errors}
    return {"webhookSubscription": subscription_node(created), "userErrors": []}


def _update(info: Any, id: str, webhookSubscription: dict[str, Any]) -> dict[str, Any]:
    legacy_id = _legacy_id(id)
    try:
        updated = (
            info.context.store.subscriptions.update(legacy_id, **_input(webhookSubscription))
            if legacy_id is not None
            else None
        )
    except SubscriptionError as refused:
        return {"webhookSubscription": None, "userErrors": refused.user_errors}
    if updated is None:
        return {
            "webhookSubscription": None,
            "userErrors": [{"field": ["id"], "message": NOT_FOUND}],
        }
    return {"webhookSubscription": subscription_node(updated), "userErrors": []}


def _delete(info: Any, id: str) -> dict[str, Any]:
    legacy_id = _legacy_id(id)
    if legacy_id is None or not info.context.store.subscriptions.delete(legacy_id):
        return {
            "deletedWebhookSubscriptionId": None,
            "userErrors": [{"field": ["id"], "message": NOT_FOUND}],
        }
    return {"deletedWebhookSubscriptionId": id, "userErrors": []}


QUERIES: dict[str, Callable[..., Any]] = {
    "webhookSubscriptions": _connection,
    "webhookSubscription": lambda info, id: lookup(info.context.store, id),
    "webhookSubscriptionsCount": _count,
}
MUTATIONS: dict[str, Callable[..., Any]] = {
    "webhookSubscriptionCreate": _create,
    "webhookSubscriptionUpdate": _update,
    "webhookSubscriptionDelete": _delete,
}
