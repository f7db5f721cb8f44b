"""Metafields of the namespaces the operator keeps (METAFIELD_NAMESPACES), as children.

A store's metafields are unbounded and mostly other apps' business, so only the listed
namespaces are kept, in `metafields`, under their owner (an order, product or customer).
Each (owner type, namespace) is one `ChildSet`: its GraphQL field is `metafields(namespace:
"x")` under an alias (several namespaces cannot share one field name in a selection), its
REST key the body's `metafields` list, of which it reads only its namespace's items, and its
tombstones touch only its own owner type and namespace.

The namespaces are the process's configuration, set once at start-up from the settings
(`configure`): the registry is module-level, and threading a setting through every query
builder, writer and reader of it would spread one knob over all of them. With none
configured, no resource has metafield children, so every query and write is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from handlers.children import ChildSet
from handlers.normalize import Record
from handlers.normalize_children import normalize_metafield
from models import Metafield

# Shopify: "3-255 characters long and can contain alphanumeric, hyphen, and underscore
# characters" (MetafieldsSetInput.namespace). The check also keeps a namespace safe to
# write inside a GraphQL string literal.
_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{3,255}")

# A bulk query may hold at most 5 connections, its root one included; an order's line
# items, a product's variants and a customer's addresses take a second, each namespace one.
MAX_NAMESPACES = 3

# How many of a namespace's metafields one page query asks for per record; a record with
# more gets the rest by its id before the page is written (backfill/nested.py).
PAGE_FIRST = 10

# MetafieldOwnerType values, stored in `metafields.owner_type`.
OWNER_TYPES = ("ORDER", "PRODUCT", "CUSTOMER")

_configured: tuple[str, ...] = ()


def parse_namespaces(text: str | None) -> tuple[str, ...]:
    """METAFIELD_NAMESPACES: comma-separated, each once, in the order given. Raises
    ValueError naming what is wrong."""
    names = [part.strip() for part in (text or "").split(",") if part.strip()]
    bad = [name for name in names if not _NAMESPACE.fullmatch(name)]
    if bad:
        raise ValueError(
            f"{', '.join(repr(name) for name in bad)}: a namespace is 3-255 letters, digits,"
            " hyphens or underscores (an app's own namespace as Shopify stores it:"
            " app--<app id>--<name>)"
        )
    unique = tuple(dict.fromkeys(names))
    if len(unique) > MAX_NAMESPACES:
        raise ValueError(
            f"{len(unique)} namespaces; at most {MAX_NAMESPACES} (Shopify allows 5 connections"
            " in a bulk query and each namespace is one)"
        )
    return unique


def configure(namespaces: Iterable[str]) -> None:
    """Keep these namespaces' metafields from now on (validated as `parse_namespaces`)."""
    global _configured
    _configured = parse_namespaces(",".join(namespaces))


def configured() -> tuple[str, ...]:
    return _configured


def metafield_sets(owner_type: str | None) -> tuple[ChildSet, ...]:
    """One child set per configured namespace for records of `owner_type` (none without
    an owner type or namespaces)."""
    if owner_type is None or not _configured:
        return ()
    return _sets(owner_type, _configured)


@lru_cache(maxsize=64)
def _sets(owner_type: str, namespaces: tuple[str, ...]) -> tuple[ChildSet, ...]:
    return tuple(
        ChildSet(
            model=Metafield,
            parent_key="owner_shopify_id",
            rest_key="metafields",
            # Position, not the namespace, makes the alias: namespaces may hold hyphens,
            # which a GraphQL name may not.
            node_key=f"metafields{position}",
            field_name="metafields",
            arguments=f'namespace: "{namespace}"',
            normalize=_metafield,
            node_fields="""
          id namespace key type value createdAt updatedAt""",
            connection=True,
            first=PAGE_FIRST,
            typename="Metafield",
            node_cost=1,
            selector=(("namespace", namespace),),
            fixed=(("owner_type", owner_type), ("namespace", namespace)),
        )
        for position, namespace in enumerate(namespaces)
    )


def _metafield(item: Any, parent: Mapping[str, Any], graphql: bool) -> Record:
    return normalize_metafield(item, graphql=graphql)


# Where a payload holds metafields: a REST body's `metafields`, a GraphQL node's aliases.
_PAYLOAD_KEY = re.compile(r"metafields\d*")


def without_values(payload: Any) -> Any:
    """`payload` with the value of every metafield it carries emptied (a record's `raw`, a
    stored webhook body): customers/redact treats them as the customer's data, whatever
    their namespace, kept or not."""
    if not isinstance(payload, Mapping):
        return payload
    emptied = dict(payload)
    for key, value in payload.items():
        if not _PAYLOAD_KEY.fullmatch(str(key)):
            continue
        if isinstance(value, list):
            emptied[key] = [_emptied(item) for item in value]
        elif isinstance(value, Mapping) and isinstance(value.get("nodes"), list):
            emptied[key] = {**value, "nodes": [_emptied(item) for item in value["nodes"]]}
    return emptied


def _emptied(item: Any) -> Any:
    return {**item, "value": None} if isinstance(item, Mapping) and "value" in item else item
