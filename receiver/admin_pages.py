"""Administration from the dashboard: add stores, users and API tokens.

Each form calls the same service function as its CLI command (`tenants add`, `users add`,
`tokens create`); this module only parses the form and presents the outcome. Only admins see
the page; a viewer's POST gets 403 and a forged one (no CSRF token) 403 too. Every refusal of
what was typed is the form again with a message beside it (400), never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.auth import (
    MIN_PASSWORD_LENGTH,
    InvalidEmail,
    InvalidTokenName,
    PasswordTooShort,
    Principal,
    SignInBusy,
    add_user,
    create_token,
    csrf_valid,
    normalize_email,
    visible_tenants,
)
from receiver.overview import list_tokens, list_users
from receiver.pages import forbidden
from receiver.services import Services
from receiver.tenants import (
    InvalidShopDomain,
    StoreCredentials,
    UnknownStore,
    add_store,
    normalize_shop_domain,
)
from receiver.web import MAX_FORM_BYTES, page_principal, render, to_login

# A store checkbox per store: room for many stores, still a bounded parse.
MAX_FORM_FIELDS = 2000
ADMIN_ONLY = "Managing stores, users and tokens needs an admin."
STALE_FORM = "This form expired (invalid form token). Reload the page and try again."


class OwnAccount(Exception):
    pass


@dataclass(frozen=True)
class AdminForm:
    fields: dict[str, str]
    stores: list[str]  # the ticked store checkboxes, in order


@dataclass
class AdminView:
    """What the page shows besides its lists: at most one form's error (and what was typed
    in it, secrets left out), a notice, and a token shown this once."""

    errors: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    notice: str | None = None
    created_token: str | None = None


async def read_admin_form(request: Request) -> AdminForm:
    """A urlencoded form with repeated `stores` fields; anything else is empty (and so fails
    CSRF)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return AdminForm({}, [])
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_BYTES)
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    stores = [value for value in form.getlist("stores") if isinstance(value, str)]
    return AdminForm(fields, stores)


async def _admin(request: Request) -> Principal | Response:
    services: Services = request.state.services
    async with services.sessions() as session:
        principal = await page_principal(session, request)
    if principal is None:
        return to_login()
    if not principal.is_admin:
        return forbidden(request, principal, ADMIN_ONLY)
    return principal


async def _admin_post(request: Request) -> tuple[Principal, AdminForm] | Response:
    """The form (read before any connection is taken: none waits on a slow client) of a
    signed-in admin with a valid CSRF token, or the response that refuses it."""
    form = await read_admin_form(request)
    services: Services = request.state.services
    async with services.sessions() as session:
        principal = await page_principal(session, request)
    if principal is None:
        return to_login()
    if not csrf_valid(request, form.fields.get("csrf_token")):
        return forbidden(request, principal, STALE_FORM)
    if not principal.is_admin:
        return forbidden(request, principal, ADMIN_ONLY)
    return principal, form


async def _page(
    request: Request, principal: Principal, view: AdminView, status: int = 200
) -> Response:
    services: Services = request.state.services
    async with services.sessions() as session, session.begin():
        stores = await visible_tenants(session, principal)
        users = await list_users(session)
        tokens = await list_tokens(session)
    context = {
        "principal": principal,
        "stores": stores,
        "users": users,
        "tokens": tokens,
        "view": view,
        "min_password": MIN_PASSWORD_LENGTH,
    }
    return render(request, "admin.html", context, status=status)


def _chosen_stores(form: AdminForm) -> tuple[str, ...]:
    """The ticked stores as normalized domains (InvalidShopDomain for a forged value)."""
    return tuple(dict.fromkeys(normalize_shop_domain(shop) for shop in form.stores))


async def admin_page(request: Request) -> Response:
    principal = await _admin(request)
    if isinstance(principal, Response):
        return principal
    return await _page(request, principal, AdminView())


async def add_store_submit(request: Request) -> Response:
    checked = await _admin_post(request)
    if isinstance(checked, Response):
        return checked
    principal, form = checked
    services: Services = request.state.services
    shop = form.fields.get("shop", "").strip()
    token = form.fields.get("access_token", "").strip()
    secret = form.fields.get("webhook_secret", "").strip()
    admin_url = form.fields.get("admin_url", "").strip()
    credentials = StoreCredentials(
        webhook_secrets=(secret,) if secret else (), access_token=token or None
    )
    try:
        added = await add_store(
            services.sessions,
            services.secret_box,
            shop,
            credentials,
            admin_base_url=admin_url or None,
        )
    except InvalidShopDomain:
        error = "Give the store's domain as NAME.myshopify.com (e.g. acme.myshopify.com)."
    except ValueError as exc:
        # InvalidAdminBaseUrl, or urlsplit's own refusal of a malformed URL.
        if not admin_url:
            raise
        error = f"Admin API base: {exc}."
    else:
        verb = "Added" if added.created else "Updated"
        note = "" if token else " It has no access token yet: backfills need one."
        return await _page(
            request, principal, AdminView(notice=f"{verb} store {added.shop_domain}.{note}")
        )
    view = AdminView(
        errors={"store": error}, values={"shop": shop[:255], "admin_url": admin_url[:2000]}
    )
    return await _page(request, principal, view, status=400)


async def add_user_submit(request: Request) -> Response:
    checked = await _admin_post(request)
    if isinstance(checked, Response):
        return checked
    principal, form = checked
    services: Services = request.state.services
    email = form.fields.get("email", "").strip()
    is_admin = form.fields.get("role") == "admin"
    values = {
        "email": email[:320],
        "role": "admin" if is_admin else "viewer",
        "stores": form.stores,
    }
    try:
        if normalize_email(email) == principal.name:
            # Resetting yourself here would end the very session submitting the form.
            raise OwnAccount
        shops = _chosen_stores(form)
        added = await add_user(
            services.sessions, email, form.fields.get("password", ""), admin=is_admin, shops=shops
        )
    except OwnAccount:
        error = (
            "That is your own account; change it with `shopify-receiver users add` "
            "(it signs you out everywhere)."
        )
    except InvalidEmail:
        error = "Give an email address, like name@example.com."
    except PasswordTooShort:
        error = f"The password must be at least {MIN_PASSWORD_LENGTH} characters long."
    except (InvalidShopDomain, UnknownStore):
        error = "One of the chosen stores does not exist any more; reload the page."
    except SignInBusy:
        error = "The server is busy checking passwords; try again in a minute."
    else:
        role = "admin" if added.is_admin else f"viewer of {added.store_count} store(s)"
        if added.created:
            notice = f"Added {added.email} ({role})."
        else:
            notice = (
                f"Updated {added.email} ({role}): new password, role and stores; "
                "they were signed out everywhere."
            )
        return await _page(request, principal, AdminView(notice=notice))
    view = AdminView(errors={"user": error}, values=values)
    return await _page(request, principal, view, status=400)


async def create_token_submit(request: Request) -> Response:
    checked = await _admin_post(request)
    if isinstance(checked, Response):
        return checked
    principal, form = checked
    services: Services = request.state.services
    name = form.fields.get("name", "")
    read_only = form.fields.get("read_only") == "on"
    values = {"name": name[:100], "read_only": read_only, "stores": form.stores}
    try:
        shops = _chosen_stores(form)
        token = await create_token(services.sessions, name, read_only=read_only, shops=shops)
    except InvalidTokenName as exc:
        error = f"Invalid name: {exc}."
    except (InvalidShopDomain, UnknownStore):
        error = "One of the chosen stores does not exist any more; reload the page."
    else:
        # Shown in this response only: only the token's hash is stored, and the page is
        # served no-store.
        view = AdminView(notice=f"Created token {name.strip()}.", created_token=token)
        return await _page(request, principal, view)
    view = AdminView(errors={"token": error}, values=values)
    return await _page(request, principal, view, status=400)


ADMIN_ROUTES = [
    Route("/admin", admin_page, methods=["GET"]),
    Route("/admin/stores", add_store_submit, methods=["POST"]),
    Route("/admin/users", add_user_submit, methods=["POST"]),
    Route("/admin/tokens", create_token_submit, methods=["POST"]),
]
