"""POST /api/sync and GET /api/sync/{id}: auth, validation, 202, 409, status documents."""

from __future__ import annotations

import asyncio

import pytest

from models import ApiToken
from receiver.auth import create_api_token, token_digest
from tests.factories import SHOP, create_tenant


async def admin_token(backend) -> str:
    async with backend.sessions() as session, session.begin():
        return await create_api_token(session, "test-admin")


async def viewer_token(backend) -> str:
    token = "srk_viewer-token-for-tests"
    async with backend.sessions() as session, session.begin():
        session.add(ApiToken(name="viewer", token_sha256=token_digest(token), is_admin=False))
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}]
)
async def test_sync_without_a_valid_token_is_401(backend, served, http, headers):
    await create_tenant(backend.sessions)
    response = await http.post(f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]


async def test_sync_needs_an_admin(backend, served, http):
    await create_tenant(backend.sessions)
    token = await viewer_token(backend)
    response = await http.post(
        f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=bearer(token)
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"tenantId": 999}, 404, "no store"),
        ({"shop": "unknown.myshopify.com"}, 404, "no store"),
        ({"shop": "not a domain"}, 400, "myshopify"),
        ({}, 400, "tenantId"),
        ({"tenantId": "1"}, 400, "integer"),
        ({"shop": SHOP, "mode": "sideways"}, 400, "mode"),
        ({"shop": SHOP, "resources": ["orders", "refunds"]}, 400, "refunds"),
        ({"shop": SHOP, "resources": 7}, 400, "resources"),
    ],
)
async def test_sync_rejects_bad_requests_clearly(backend, served, http, body, status, message):
    await create_tenant(backend.sessions)
    token = await admin_token(backend)
    response = await http.post(f"{served.base_url}/api/sync", json=body, headers=bearer(token))
    assert response.status_code == status
    assert message in response.json()["error"]


async def test_sync_body_that_is_not_json_is_400(backend, served, http):
    token = await admin_token(backend)
    response = await http.post(
        f"{served.base_url}/api/sync", content=b"\xff{", headers=bearer(token)
    )
    assert response.status_code == 400


async def test_sync_is_accepted_and_its_status_is_readable(backend, served, http):
    tenant_id = await create_tenant(backend.sessions)
    token = await admin_token(backend)
    response = await http.post(
        f"{served.base_url}/api/sync",
        json={"tenantId": tenant_id, "resources": "orders", "mode": "full"},
        headers=bearer(token),
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status_url"].endswith(f"/api/sync/{body['job_id']}")
    status = await http.get(body["status_url"], headers=bearer(token))
    assert status.status_code == 200
    assert status.json()["job_id"] == body["job_id"]
    assert status.json()["resources"] == ["orders"]
    assert (await http.get(body["status_url"])).status_code == 401
    huge = f"{served.base_url}/api/sync/99999999999999999999"
    assert (await http.get(huge)).status_code == 401  # who asks comes first
    for missing_id in ("99999", "99999999999999999999", "0"):
        missing = await http.get(f"{served.base_url}/api/sync/{missing_id}", headers=bearer(token))
        assert missing.status_code == 404


async def test_second_sync_for_a_store_is_409_with_the_running_job(pg, served_apps, http):
    """On PostgreSQL the web process only queues; with no worker running the job stays
    queued, so the second request finds it."""
    from tests.conftest import ServedApp, settings_for

    if "postgresql-api" not in served_apps:
        served_apps["postgresql-api"] = ServedApp(settings_for(pg.url)).__enter__()
    served = served_apps["postgresql-api"]
    await create_tenant(pg.sessions)
    token = await admin_token(pg)
    first, second = await asyncio.gather(
        *(
            http.post(f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=bearer(token))
            for _ in range(2)
        )
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [202, 409]
    accepted, conflict = (first, second) if first.status_code == 202 else (second, first)
    assert conflict.json()["job"]["job_id"] == accepted.json()["job_id"]
    assert conflict.json()["job"]["status"] == "queued"
