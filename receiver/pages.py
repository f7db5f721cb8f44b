"""The dashboard pages: the list of stores, one store's page, and its two admin actions.

A store the signed-in user may not see answers exactly like one that does not exist (404),
so a viewer cannot even learn which stores are installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from backfill import sync
from backfill.queries import RESOURCES
from backfill.runner import MODES, validate_request
from handlers.events import Store, replay_events
from models import Tenant, utcnow
from models.statuses import EventStatus, SyncMode, TenantStatus
from receiver.auth import Principal, csrf_valid, visible_tenants
from receiver.overview import store_overviews
from receiver.services import Services
from receiver.stats import (
    RANGES,
    counted_resources,
    format_money,
    range_key,
    store_stats,
    top_items_cache,
)
from receiver.tenants import InvalidShopDomain, find_tenant, normalize_shop_domain
from receiver.web import page_principal, read_form, render, to_login

# Notices named by a query parameter after an action: only these fixed texts are ever shown.
SYNC_NOTICES = {
    "started": "Backfill queued.",
    "running": "A backfill is already queued or running for this store.",
    "inactive": "This store is not active; reinstall the app before running a backfill.",
}
# Ids are BIGINT: a larger number in the URL names no event (and must not reach the driver).
MAX_ID = 2**63 - 1
REPLAY_NOTICES: dict[str, str] = {
    EventStatus.PROCESSED: "Event replayed: processed.",
    EventStatus.IGNORED: "Event replayed: ignored.",
    EventStatus.FAILED: "Event replayed but it failed again; see the error below.",
}


def not_found(request: Request, principal: Principal) -> Response:
    return render(
        request, "error.html", {"message": "No such store.", "principal": principal}, status=404
    )


def forbidden(request: Request, principal: Principal | None, message: str) -> Response:
    return render(request, "error.html", {"message": message, "principal": principal}, status=403)


async def _visible_store(session: AsyncSession, principal: Principal, shop: str) -> Tenant | None:
    """The store named in the URL if it exists and the principal may see it, else None."""
    try:
        domain = normalize_shop_domain(shop)
    except InvalidShopDomain:
        return None
    tenant = await find_tenant(session, domain)
    if tenant is None or not principal.can_see(tenant.id):
        return None
    return tenant


def _back_to_store(tenant: Tenant, **params: str) -> Response:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    # shop_domain matched SHOP_DOMAIN and the values are fixed words: nothing to escape.
    return RedirectResponse(
        f"/stores/{tenant.shop_domain}" + (f"?{query}" if query else ""), status_code=303
    )


async def home(request: Request) -> Response:
    services: Services = request.state.services
    async with services.sessions() as session:
        principal = await page_principal(session, request)
        if principal is None:
            return to_login()
        tenants = await visible_tenants(session, principal)
        now = utcnow()
        stores = await store_overviews(session, tenants, now)
    return render(request, "home.html", {"principal": principal, "stores": stores, "now": now})


async def store_page(request: Request) -> Response:
    services: Services = request.state.services
    async with services.sessions() as session:
        principal = await page_principal(session, request)
        if principal is None:
            return to_login()
        tenant = await _visible_store(session, principal, request.path_params["shop"])
        if tenant is None:
            return not_found(request, principal)
        chosen = range_key(request.query_params.get("range"))
        stats = await store_stats(session, tenant, utcnow(), chosen, top_items_cache(request))
    notices = [
        SYNC_NOTICES.get(request.query_params.get("sync", "")),
        REPLAY_NOTICES.get(request.query_params.get("replay", "")),
    ]
    context = {
        "principal": principal,
        "tenant": tenant,
        "stats": stats,
        "ranges": [(key, label) for key, (label, _) in RANGES.items()],
        "money": format_money,
        # A backfill needs the store's Admin API token: without one the button would only
        # queue a job that fails.
        "can_backfill": tenant.access_token_encrypted is not None
        and tenant.status == TenantStatus.ACTIVE,
        "notices": [notice for notice in notices if notice],
        "modes": MODES,
        "resources": list(RESOURCES),
        "counted": _counted(),
    }
    return render(request, "store.html", context)


def _counted() -> list[tuple[str, str]]:
    """(name, label) of each resource the dashboard counts, from the registry."""
    return [
        (resource.name, resource.dashboard.label)
        for resource in counted_resources()
        if resource.dashboard is not None
    ]


@dataclass(frozen=True)
class AdminAction:
    principal: Principal
    form: dict[str, str]
    tenant: Tenant


async def _admin_action(
    request: Request, session: AsyncSession, form: dict[str, str]
) -> AdminAction | Response:
    """A signed-in admin posting a valid form (read before the session was opened: no
    connection waits on a slow client) about a store they may see, or the response that
    refuses the request."""
    principal = await page_principal(session, request)
    if principal is None:
        return to_login()
    if not csrf_valid(request, form.get("csrf_token")):
        return forbidden(request, principal, "Invalid form token.")
    if not principal.is_admin:
        return forbidden(request, principal, "This action needs an admin.")
    tenant = await _visible_store(session, principal, request.path_params["shop"])
    if tenant is None:
        return not_found(request, principal)
    return AdminAction(principal, form, tenant)


async def replay_event(request: Request) -> Response:
    services: Services = request.state.services
    event_id = request.path_params["event_id"]
    form = await read_form(request)
    async with services.sessions() as session, session.begin():
        action = await _admin_action(request, session, form)
    if isinstance(action, Response):
        return action
    principal, tenant = action.principal, action.tenant
    report = None
    if event_id <= MAX_ID:
        report = await replay_events(
            services.sessions, event_id=event_id, store=Store(tenant.id, tenant.shop_domain)
        )
    if report is None or not report.events:
        return render(
            request,
            "error.html",
            {"message": "No such event for this store.", "principal": principal},
            status=404,
        )
    outcome = report.events[0].status
    return _back_to_store(
        tenant, replay=outcome if outcome in REPLAY_NOTICES else EventStatus.FAILED
    )


async def run_backfill(request: Request) -> Response:
    services: Services = request.state.services
    form = await read_form(request)
    async with services.sessions() as session, session.begin():
        action = await _admin_action(request, session, form)
    if isinstance(action, Response):
        return action
    principal, form, tenant = action.principal, action.form, action.tenant
    mode = form.get("mode") or SyncMode.FULL
    chosen = [part.strip() for part in form.get("resources", "").split(",") if part.strip()]
    try:
        resources = validate_request(mode, chosen or None)
    except ValueError as exc:
        return render(
            request, "error.html", {"message": str(exc), "principal": principal}, status=400
        )
    try:
        await sync.start_sync(
            services.sessions,
            tenant.id,
            mode,
            resources,
            queue=services.job_queue,
            backfill=services.backfill,
        )
    except sync.StoreUnknown:  # removed since it was looked up
        return not_found(request, principal)
    except sync.StoreInactive:
        return _back_to_store(tenant, sync="inactive")
    except sync.SyncAlreadyRunning:
        return _back_to_store(tenant, sync="running")
    return _back_to_store(tenant, sync="started")
