"""Where a store's Admin API calls go: its own base (a simulated store) or the global one.

A store's base is a template with the same placeholders as `SHOPIFY_ADMIN_BASE_URL`
(`{shop}`, `{version}`), so what the simulator prints for that variable can be given to
`tenants add --admin-url` as is. Both directions are guarded: a store with its own base never
reaches Shopify, and a store without one reaches only Shopify unless the operator pointed
`SHOPIFY_ADMIN_BASE_URL` elsewhere.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from urllib.parse import urlsplit

from backfill.client import BackfillError

# Shopify's own: also `receiver.settings.DEFAULT_ADMIN_BASE_URL` (a test keeps them equal).
SHOPIFY_ADMIN_BASE_URL = "https://{shop}/admin/api/{version}"
_PLACEHOLDERS = frozenset({"shop", "version"})
# What a template is checked with: the host a `{shop}` host would become.
_SAMPLE_SHOP = "example.myshopify.com"
_SAMPLE_VERSION = "2026-01"
_EXAMPLE = "http://127.0.0.1:8080/{shop}/admin/api/{version}"


class InvalidAdminBaseUrl(ValueError):
    """An operator's `--admin-url` that cannot be a simulated store's Admin API base."""


class AdminBaseRefused(BackfillError):
    """A call that would cross between Shopify and a simulator: never sent."""


def is_shopify_host(host: str | None) -> bool:
    host = (host or "").lower().rstrip(".")
    return host in ("myshopify.com", "shopify.com") or host.endswith(
        (".myshopify.com", ".shopify.com")
    )


def _fields(template: str) -> set[str]:
    """The placeholders of a `str.format` template; InvalidAdminBaseUrl for any other."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidAdminBaseUrl(f"{template!r}: {exc}") from None
    fields: set[str] = set()
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in _PLACEHOLDERS or spec or conversion:
            raise InvalidAdminBaseUrl(
                f"{template!r}: only {{shop}} and {{version}} may appear in braces"
            )
        fields.add(name)
    return fields


def check_store_admin_base_url(value: str) -> str:
    """The store base to keep for `value` (trailing slash dropped), or InvalidAdminBaseUrl
    with what to give instead."""
    template = value.strip().rstrip("/")
    try:
        return _checked(value, template)
    except (ValueError, KeyError, IndexError) as exc:
        if isinstance(exc, InvalidAdminBaseUrl):
            raise
        # A malformed URL or template ("http://[::1/", "{", "{x}"): urlsplit and str.format
        # raise their own errors, which must read as a bad --admin-url, not a crash.
        raise InvalidAdminBaseUrl(f"{value!r} is not a URL template like {_EXAMPLE}") from None


def _checked(value: str, template: str) -> str:
    if "version" not in _fields(template):
        raise InvalidAdminBaseUrl(
            f"{value!r} has no {{version}}: give the whole Admin API base as a template, "
            f"e.g. {_EXAMPLE} (what the simulator prints as SHOPIFY_ADMIN_BASE_URL)"
        )
    parts = urlsplit(template.format(shop=_SAMPLE_SHOP, version=_SAMPLE_VERSION))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidAdminBaseUrl(f"{value!r} is not an http:// or https:// URL, e.g. {_EXAMPLE}")
    if parts.username is not None or parts.password is not None:
        # Not echoed: the point is to keep them out of rows, logs and terminals.
        raise InvalidAdminBaseUrl(
            "the Admin API base holds credentials (user:password@); leave them out: the "
            "store's token is sent as a header, give it with --access-token"
        )
    if parts.query or parts.fragment:
        raise InvalidAdminBaseUrl(f"{value!r}: a base has no ?query or #fragment")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when it is read)
    except ValueError as exc:
        raise InvalidAdminBaseUrl(f"{value!r}: {exc}") from None
    if is_shopify_host(parts.hostname):
        raise InvalidAdminBaseUrl(
            f"{value!r} is Shopify: --admin-url is for simulated stores; a real store goes to "
            "SHOPIFY_ADMIN_BASE_URL (default https://{shop}/admin/api/{version}), so leave it out"
        )
    return template


@dataclass(frozen=True)
class AdminAddress:
    """One store's Admin API addresses."""

    endpoint: str  # the GraphQL endpoint
    token_url: str  # where expiring offline tokens are refreshed


def oauth_token_url(admin_base_url: str) -> str:
    """`https://{shop}/admin/api/{version}` -> `https://{shop}/admin/oauth/access_token`."""
    base = admin_base_url.rstrip("/")
    suffix = "/api/{version}"
    if base.endswith(suffix):
        base = base[: -len(suffix)]
    return f"{base}/oauth/access_token"


def admin_address(
    shop: str, api_version: str, *, store_base: str | None, global_base: str
) -> AdminAddress:
    """Where one store's Admin API calls go: its own base when it has one, else the global one.

    AdminBaseRefused for a store base that names Shopify (only a hand-edited row can), and for
    a store without one that would leave Shopify while the global base is Shopify's default
    (a shop domain that is not NAME.myshopify.com)."""
    base = store_base or global_base
    try:
        address = AdminAddress(
            endpoint=f"{base.format(shop=shop, version=api_version).rstrip('/')}/graphql.json",
            token_url=oauth_token_url(base).format(shop=shop, version=api_version),
        )
        host = urlsplit(address.endpoint).hostname
    except (KeyError, IndexError, ValueError) as exc:
        raise AdminBaseRefused(f"{shop}: Admin API base {base!r} is not usable: {exc}") from None
    if store_base and is_shopify_host(host):
        raise AdminBaseRefused(
            f"{shop}: its own Admin API base {store_base!r} is Shopify's; nothing for a "
            "simulated store goes to Shopify. Clear it with `tenants add --shop "
            f"{shop} --admin-url ''`"
        )
    if not store_base and global_base == SHOPIFY_ADMIN_BASE_URL and not is_shopify_host(host):
        raise AdminBaseRefused(
            f"{shop}: would call {host} as Shopify; give a simulated store its own base with "
            f"`tenants add --shop {shop} --admin-url URL`, or set SHOPIFY_ADMIN_BASE_URL"
        )
    return address
