"""`/api/*`: JSON in, JSON out, errors as `{"error": ...}`."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from backfill import sync
from backfill.runner import validate_request
from models import SyncJob, Tenant
from models.statuses import SyncMode
from models.tenancy import cross_store_transaction
from receiver.auth import Principal, authenticate, require_admin
from receiver.errors import ApiError
from receiver.services import Services
from receiver.tenants import InvalidShopDomain, find_tenant, normalize_shop_domain

MAX_API_BODY = 64 * 1024
MAX_ID = 2**63 - 1  # larger path ids cannot exist, and the drivers refuse to bind them


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


def job_document(job: SyncJob, request: Request | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "job_id": job.id,
        "tenant_id": job.tenant_id,
        "mode": job.mode,
        "status": job.status,
        "resources": job.resources,
        "progress": job.progress,
        "since": job.since.isoformat() if job.since else None,
        "error": job.error,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    if request is not None:
        document["status_url"] = status_url(request, job.id)
    return document


def status_url(request: Request, job_id: int) -> str:
    """From PUBLIC_URL when set, else relative: never from the request's Host header, which
    the client chooses (a forged one would send the caller's script somewhere else)."""
    services: Services = request.state.services
    return f"{services.settings.public_url or ''}/api/sync/{job_id}"


async def _read_body(request: Request) -> bytes | None:
    """The raw body, or None once it passes MAX_API_BODY; read before any database connection
    is taken, so a slow client holds only its own socket (and BodyDeadline ends it)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_API_BODY:
            return None
    return bytes(body)


def _json_object(body: bytes | None) -> dict[str, Any]:
    if body is None:
        raise ApiError("request body too large")
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        raise ApiError("body must be a JSON object") from exc
    if not isinstance(value, dict):
        raise ApiError("body must be a JSON object")
    return value


def _resources(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ApiError('resources must be a list such as ["orders"] or a comma-separated string')


async def start_sync(request: Request) -> Response:
    services: Services = request.state.services
    raw = await _read_body(request)
    async with services.sessions() as session, session.begin():
        # Who asks comes first: a stranger learns nothing, not even what a valid body is.
        principal = await require_admin(session, request)
        body = _json_object(raw)
        mode = body.get("mode", SyncMode.FULL)
        if not isinstance(mode, str):
            raise ApiError("mode must be auto, full, incremental or bulk")
        try:
            resources = validate_request(mode, _resources(body.get("resources")))
        except ValueError as exc:
            raise ApiError(str(exc)) from exc
        tenant = await _tenant_from(session, body, principal)
    try:
        started = await sync.start_sync(
            services.sessions,
            tenant.id,
            mode,
            resources,
            queue=services.job_queue,
            backfill=services.backfill,
        )
    except sync.StoreUnknown as exc:  # removed since it was looked up
        raise NotFound(str(exc)) from exc
    except sync.StoreInactive as exc:
        raise Conflict(str(exc)) from exc
    except sync.SyncAlreadyRunning as exc:
        return JSONResponse(
            {"error": str(exc), "job": job_document(exc.job, request)}, status_code=409
        )
    document = job_document(started.job, request)
    return JSONResponse(
        {"job_id": started.job.id, "status_url": document["status_url"], "job": document},
        status_code=202,
        headers={"Location": document["status_url"]},
    )


async def _tenant_from(session: AsyncSession, body: dict[str, Any], principal: Principal) -> Tenant:
    tenant_id, shop = body.get("tenantId"), body.get("shop")
    if tenant_id is not None:
        if isinstance(tenant_id, bool) or not isinstance(tenant_id, int):
            raise ApiError("tenantId must be an integer")
        if not 0 < tenant_id <= MAX_ID:
            raise NotFound(f"no store with tenantId {tenant_id}")
        tenant = await session.get(Tenant, tenant_id)
        if tenant is None or not principal.can_see(tenant.id):
            raise NotFound(f"no store with tenantId {tenant_id}")
        return tenant
    if isinstance(shop, str):
        return await tenant_for_shop(session, shop, principal)
    raise ApiError('give the store as {"tenantId": 1} or {"shop": "name.myshopify.com"}')


async def tenant_for_shop(session: AsyncSession, shop: str, principal: Principal) -> Tenant:
    """The store a request names by domain: 400 when malformed, 404 when unknown or not the
    caller's to see (the same answer, so a caller cannot map which stores are installed)."""
    try:
        domain = normalize_shop_domain(shop)
    except InvalidShopDomain as exc:
        raise ApiError(str(exc)) from exc
    tenant = await find_tenant(session, domain)
    if tenant is None or not principal.can_see(tenant.id):
        raise NotFound(f"no store {domain}")
    return tenant


async def sync_status(request: Request) -> Response:
    services: Services = request.state.services
    raw_id = request.path_params["job_id"]
    # By id, across stores: access is checked on the row just below.
    async with cross_store_transaction(services.sessions) as session:
        principal = await authenticate(session, request)
        if not 0 < raw_id <= MAX_ID:
            raise NotFound(f"no sync job {raw_id}")
        job = await session.scalar(select(SyncJob).where(SyncJob.id == raw_id))
        if job is None or not principal.can_see(job.tenant_id):
            raise NotFound(f"no sync job {raw_id}")
    return JSONResponse(job_document(job, request))
