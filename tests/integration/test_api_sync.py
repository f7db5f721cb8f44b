"""POST /api/sync and GET /api/sync/{id}: auth, validation, 202, 409, status documents."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from models import ApiToken, ApiTokenTenant, Tenant
from receiver.auth import create_api_token, token_digest
from tests.factories import OTHER_SHOP, SHOP, create_finished_job, create_tenant


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
    assert body["status_url"] == f"/api/sync/{body['job_id']}"  # no PUBLIC_URL: relative
    status = await http.get(served.base_url + body["status_url"], headers=bearer(token))
    assert status.status_code == 200
    assert status.json()["job_id"] == body["job_id"]
    assert status.json()["resources"] == ["orders"]
    assert (await http.get(served.base_url + body["status_url"])).status_code == 401
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


async def test_status_url_never_comes_from_the_host_header(backend, served, http):
    await create_tenant(backend.sessions)
    token = await admin_token(backend)
    forged = {**bearer(token), "Host": "evil.example"}
    response = await http.post(f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=forged)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.json()["status_url"] == f"/api/sync/{job_id}"
    assert response.headers["location"] == f"/api/sync/{job_id}"
    again = await http.post(f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=forged)
    if again.status_code == 409:  # the first job still queued or running
        assert again.json()["job"]["status_url"] == f"/api/sync/{job_id}"


async def test_status_url_comes_from_public_url_when_set(pg, served_apps, http):
    from tests.conftest import ServedApp, settings_for

    key = "postgresql-public-url"
    if key not in served_apps:
        settings = settings_for(pg.url, public_url="https://receiver.example.com")
        served_apps[key] = ServedApp(settings).__enter__()
    served = served_apps[key]
    await create_tenant(pg.sessions)
    token = await admin_token(pg)
    forged = {**bearer(token), "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    response = await http.post(f"{served.base_url}/api/sync", json={"shop": SHOP}, headers=forged)
    assert response.status_code == 202
    expected = f"https://receiver.example.com/api/sync/{response.json()['job_id']}"
    assert response.json()["status_url"] == expected
    assert response.headers["location"] == expected


async def scoped_tokens(backend, cli_env_url: str, cwd) -> dict[str, str]:
    """Tokens made by `tokens create`, as an operator would."""
    from tests.integration.test_cli import Cli, cli_env

    cli = Cli(cwd, cli_env(cli_env_url))
    made = {}
    for name, options in {
        "reader": ["--read-only", "--tenant", SHOP],
        "writer": ["--tenant", SHOP],
        "everything": ["--read-only"],
    }.items():
        result = await cli.ok("tokens", "create", "--name", name, *options)
        made[name] = result.stdout.strip()
        assert made[name].startswith("srk_")
    await cli.fails("tokens", "create", "--name", "x", "--tenant", "nobody-here.myshopify.com")
    async with backend.sessions() as session:
        stored = {row.name: row for row in await session.scalars(select(ApiToken))}
    assert set(stored) == set(made)
    assert all(row.token_sha256 == token_digest(made[name]) for name, row in stored.items())
    return made


async def test_tokens_can_be_read_only_and_scoped_to_stores(backend, served, http, tmp_path):
    ours = await create_tenant(backend.sessions, SHOP)
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    tokens = await scoped_tokens(backend, backend.url, tmp_path)
    our_job, their_job = (
        await create_finished_job(backend.sessions, ours),
        await create_finished_job(backend.sessions, theirs),
    )
    base = served.base_url

    async def get(path: str, token: str, **params: str) -> httpx.Response:
        return await http.get(f"{base}{path}", headers=bearer(token), params=params)

    # Reads within the scope.
    for name in ("reader", "writer", "everything"):
        assert (await get(f"/api/sync/{our_job}", tokens[name])).status_code == 200
        assert (await get("/api/stats", tokens[name], shop=SHOP)).status_code == 200
    # Outside the scope: exactly like a store or job that does not exist.
    for name in ("reader", "writer"):
        other = await get(f"/api/sync/{their_job}", tokens[name])
        missing = await get(f"/api/sync/{their_job + 100}", tokens[name])
        assert other.status_code == missing.status_code == 404
        assert other.json() == {"error": f"no sync job {their_job}"}
        stats = await get("/api/stats", tokens[name], shop=OTHER_SHOP)
        no_stats = await get("/api/stats", tokens[name], shop="nobody-here.myshopify.com")
        assert stats.status_code == no_stats.status_code == 404
        assert stats.json() == {"error": f"no store {OTHER_SHOP}"}
    assert (await get(f"/api/sync/{their_job}", tokens["everything"])).status_code == 200
    # Writes: read-only tokens never; the scoped writer only on its store.
    for name in ("reader", "everything"):
        refused = await http.post(
            f"{base}/api/sync", json={"shop": SHOP}, headers=bearer(tokens[name])
        )
        assert refused.status_code == 403
        assert "read-only" in refused.json()["error"]
    outside = await http.post(
        f"{base}/api/sync", json={"tenantId": theirs}, headers=bearer(tokens["writer"])
    )
    absent = await http.post(
        f"{base}/api/sync", json={"tenantId": theirs + 100}, headers=bearer(tokens["writer"])
    )
    assert outside.status_code == absent.status_code == 404
    assert outside.json() == {"error": f"no store with tenantId {theirs}"}
    by_name = await http.post(
        f"{base}/api/sync", json={"shop": OTHER_SHOP}, headers=bearer(tokens["writer"])
    )
    assert by_name.status_code == 404
    accepted = await http.post(
        f"{base}/api/sync", json={"shop": SHOP}, headers=bearer(tokens["writer"])
    )
    assert accepted.status_code in (202, 409), accepted.text


async def test_a_store_a_token_is_scoped_to_cannot_be_deleted(backend, tmp_path):
    """A token without scope rows sees every store: deleting its only store must not quietly
    widen it."""
    await create_tenant(backend.sessions, SHOP)
    await scoped_tokens(backend, backend.url, tmp_path)
    with pytest.raises(IntegrityError):
        async with backend.sessions() as session, session.begin():
            await session.execute(delete(Tenant).where(Tenant.shop_domain == SHOP))
    async with backend.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ApiTokenTenant)) == 2
