"""Every auth rule over real HTTP: passwords, lockout, sessions, CSRF, roles, tenants."""

from __future__ import annotations

import asyncio
import json
import re
import time
from base64 import b64encode
from datetime import timedelta

import httpx
import itsdangerous
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from models import LoginThrottle, Tenant, User, UserSession, UserTenant, utcnow
from receiver import auth
from receiver.auth import EMAIL_FAILURE_LIMIT, hash_password, sign_in
from tests.conftest import ServedApp
from tests.factories import OTHER_SHOP, SHOP, create_finished_job, create_tenant, delivery

PASSWORD = "correct horse battery staple"


async def create_user(
    backend,
    email: str,
    *,
    admin: bool = False,
    shops: tuple[int, ...] = (),
    password_hash: str | None = None,
) -> int:
    async with backend.sessions() as session, session.begin():
        user = User(
            email=email, password_hash=password_hash or hash_password(PASSWORD), is_admin=admin
        )
        session.add(user)
        await session.flush()
        session.add_all(UserTenant(user_id=user.id, tenant_id=tenant_id) for tenant_id in shops)
        return user.id


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf token in the form"
    return match.group(1)


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    page = await client.get("/login")
    token = csrf_from(page.text)
    return await client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )


@pytest.fixture
async def client(served: ServedApp):
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10) as client:
        yield client


async def signed_in_csrf(client: httpx.AsyncClient) -> str:
    """The session's CSRF token, as pages hand it to their scripts."""
    page = await client.get("/login")  # signed in: redirects; read the token from the cookie
    assert page.status_code == 303
    cookie = client.cookies["receiver_session"]
    payload = json.loads(itsdangerous.base64_decode(cookie.split(".")[0]))
    return payload["csrf"]


async def test_good_login_answers_303_with_a_hardened_cookie(backend, client):
    await create_user(backend, "ann@example.com")
    response = await login(client, "Ann@Example.com")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "max-age=" in cookie
    assert "secure" not in cookie  # plain http here


async def test_cookie_is_secure_behind_an_https_proxy(backend, client):
    page = await client.get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in page.headers["set-cookie"].lower()
    plain = await client.get("/login")
    assert "secure" not in plain.headers["set-cookie"].lower()


@pytest.mark.parametrize("email", ["ann@example.com", "nobody@example.com"])
async def test_wrong_password_and_unknown_user_get_the_same_answer(backend, client, email):
    await create_user(backend, "ann@example.com")
    response = await login(client, email, "not the password")
    assert response.status_code == 401
    assert "Wrong email or password." in response.text
    status = await client.get("/api/sync/1")
    assert status.status_code == 401


async def test_unknown_email_costs_one_password_verification_like_a_wrong_password(
    backend, monkeypatch
):
    await create_user(backend, "ann@example.com")
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            calls.append(hash if isinstance(hash, str) else hash.decode())
            return super().verify(hash, password)

    monkeypatch.setattr(auth, "password_hasher", CountingHasher())
    for email in ("ann@example.com", "nobody@example.com"):
        with pytest.raises(auth.LoginFailed):
            await sign_in(backend.sessions, email, "wrong password", "10.0.0.1")
    assert len(calls) == 2
    assert all(hash_.startswith("$argon2id$") for hash_ in calls)


async def test_repeated_failures_lock_the_email_then_the_lock_expires(backend, client):
    await create_user(backend, "ann@example.com")
    for _ in range(EMAIL_FAILURE_LIMIT):
        assert (await login(client, "ann@example.com", "wrong")).status_code == 401
    locked = await login(client, "ann@example.com")  # even the right password
    assert locked.status_code == 429
    assert "Too many failed sign-ins" in locked.text
    assert "minute" in locked.text
    # The lock is in the database, so every process sees it; make it lapse.
    async with backend.sessions() as session, session.begin():
        await session.execute(
            update(LoginThrottle).values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert (await login(client, "ann@example.com")).status_code == 303


async def test_successful_login_rehashes_an_old_parameter_hash(backend, client):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    user_id = await create_user(backend, "ann@example.com", password_hash=weak)
    assert (await login(client, "ann@example.com")).status_code == 303
    async with backend.sessions() as session:
        stored = (await session.get_one(User, user_id)).password_hash
    assert stored != weak
    assert not auth.password_hasher.check_needs_rehash(stored)


async def test_login_form_without_csrf_is_refused(backend, client):
    await create_user(backend, "ann@example.com")
    await client.get("/login")
    response = await client.post("/login", data={"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 403
    assert (await client.get("/api/sync/1")).status_code == 401


async def test_login_starts_a_fresh_session(backend, client):
    await create_user(backend, "ann@example.com")
    await client.get("/login")
    before = client.cookies["receiver_session"]
    await login(client, "ann@example.com")
    after = client.cookies["receiver_session"]
    assert before != after
    # The pre-login cookie grants nothing.
    async with httpx.AsyncClient(base_url=str(client.base_url)) as stranger:
        stranger.cookies.set("receiver_session", before)
        assert (await stranger.get("/api/sync/1")).status_code == 401


async def test_tampered_cookie_is_no_session(backend, client):
    admin_id = await create_user(backend, "root@example.com", admin=True)
    await create_user(backend, "ann@example.com")
    await login(client, "ann@example.com")
    cookie = client.cookies["receiver_session"]
    data, _, signature = cookie.partition(".")
    forged = json.loads(itsdangerous.base64_decode(data))
    forged["uid"] = admin_id
    forged_data = b64encode(json.dumps(forged).encode()).decode()
    client.cookies.set("receiver_session", f"{forged_data}.{signature}")
    assert (await client.get("/api/sync/1")).status_code == 401


async def test_expired_session_is_no_session(backend, served, client):
    """Expired twice over: an old cookie signature, or a session row past its expiry."""

    class Yesterday(itsdangerous.TimestampSigner):
        def get_timestamp(self) -> int:
            return super().get_timestamp() - 13 * 3600

    tenant_id = await create_tenant(backend.sessions)
    await create_user(backend, "ann@example.com")
    await login(client, "ann@example.com")
    job_id = await create_finished_job(backend.sessions, tenant_id)
    payload = client.cookies["receiver_session"].split(".")[0].encode()
    stale = Yesterday("test-session-key").sign(payload).decode()
    fresh = itsdangerous.TimestampSigner("test-session-key").sign(payload).decode()
    async with httpx.AsyncClient(base_url=served.base_url) as probe:
        probe.cookies.set("receiver_session", fresh)
        assert (await probe.get(f"/api/sync/{job_id}")).status_code == 404  # valid, no access
        probe.cookies.set("receiver_session", stale)
        assert (await probe.get(f"/api/sync/{job_id}")).status_code == 401
        async with backend.sessions() as session, session.begin():
            await session.execute(
                update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1))
            )
        probe.cookies.set("receiver_session", fresh)
        assert (await probe.get(f"/api/sync/{job_id}")).status_code == 401


async def test_a_signed_cookie_without_a_session_row_is_no_session(backend, served):
    """Whoever holds the signing key (or a cookie from before server-side sessions) cannot
    mint a session: the cookie must name a row that login created."""
    user_id = await create_user(backend, "root@example.com", admin=True)
    payload = b64encode(json.dumps({"uid": user_id, "csrf": "x", "sid": "y"}).encode())
    minted = itsdangerous.TimestampSigner("test-session-key").sign(payload).decode()
    async with httpx.AsyncClient(base_url=served.base_url) as probe:
        probe.cookies.set("receiver_session", minted)
        assert (await probe.get("/api/sync/999")).status_code == 401
        assert (await probe.get("/")).status_code == 303


async def test_logout_ends_the_session_server_side(backend, client):
    await create_user(backend, "root@example.com", admin=True)
    await login(client, "root@example.com")
    saved = client.cookies["receiver_session"]
    token = await signed_in_csrf(client)
    assert (await client.get("/api/sync/999")).status_code == 404  # signed in
    response = await client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert (await client.get("/api/sync/999")).status_code == 401
    # The cookie saved before logging out (a stolen copy) is worth nothing now.
    async with httpx.AsyncClient(base_url=str(client.base_url)) as thief:
        thief.cookies.set("receiver_session", saved)
        assert (await thief.get("/api/sync/999")).status_code == 401
        page = await thief.get("/")
        assert page.status_code == 303
        assert page.headers["location"] == "/login"
    async with backend.sessions() as session:
        assert (await session.scalars(select(UserSession))).all() == []


async def test_a_password_reset_ends_the_user_s_sessions(backend, client, tmp_path):
    await create_tenant(backend.sessions)
    await create_user(backend, "root@example.com", admin=True)
    await login(client, "root@example.com")
    assert (await client.get("/api/sync/999")).status_code == 404
    code, output = await run_cli(
        backend, tmp_path, ["users", "add", "--email", "root@example.com", "--admin"], PASSWORD
    )
    assert code == 0, output
    assert (await client.get("/api/sync/999")).status_code == 401


async def test_logout_needs_the_csrf_token(backend, client):
    await create_user(backend, "root@example.com", admin=True)
    await login(client, "root@example.com")
    assert (await client.post("/logout", data={})).status_code == 403
    assert (await client.get("/api/sync/999")).status_code == 404  # still signed in


async def test_session_writes_to_the_api_need_the_csrf_header(backend, client):
    await create_tenant(backend.sessions)
    await create_user(backend, "root@example.com", admin=True)
    await login(client, "root@example.com")
    token = await signed_in_csrf(client)
    missing = await client.post("/api/sync", json={"shop": SHOP})
    assert missing.status_code == 403
    assert "CSRF" in missing.json()["error"]
    wrong = await client.post("/api/sync", json={"shop": SHOP}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    ok = await client.post("/api/sync", json={"shop": SHOP}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 202


async def test_viewers_cannot_start_syncs_or_read_other_stores_jobs(backend, client):
    mine = await create_tenant(backend.sessions, SHOP)
    theirs = await create_tenant(backend.sessions, OTHER_SHOP)
    await create_user(backend, "ann@example.com", shops=(mine,))
    await login(client, "ann@example.com")
    token = await signed_in_csrf(client)
    start = await client.post("/api/sync", json={"shop": SHOP}, headers={"X-CSRF-Token": token})
    assert start.status_code == 403
    my_job, their_job = (
        await create_finished_job(backend.sessions, mine),
        await create_finished_job(backend.sessions, theirs),
    )
    assert (await client.get(f"/api/sync/{my_job}")).status_code == 200
    other = await client.get(f"/api/sync/{their_job}")
    missing = await client.get(f"/api/sync/{their_job + 1000}")
    # Another store's job answers exactly like one that does not exist.
    assert other.status_code == missing.status_code == 404
    assert other.json() == {"error": f"no sync job {their_job}"}
    assert missing.json() == {"error": f"no sync job {their_job + 1000}"}


async def test_disabled_users_cannot_sign_in_or_keep_their_session(backend, client):
    user_id = await create_user(backend, "root@example.com", admin=True)
    await login(client, "root@example.com")
    assert (await client.get("/api/sync/999")).status_code == 404
    async with backend.sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user_id).values(disabled_at=utcnow()))
    assert (await client.get("/api/sync/999")).status_code == 401
    assert (await login(client, "root@example.com")).status_code == 401


async def run_cli(backend, cwd, command: list[str], stdin: str) -> tuple[int, str]:
    import asyncio
    import os
    import sys

    from tests.conftest import TEST_ENCRYPTION_KEY

    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": backend.url,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "SECRET_KEY": "x",
    }
    pipe = asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "receiver.cli", *command,
        cwd=cwd, env=env, stdin=pipe, stdout=pipe, stderr=pipe,
    )  # fmt: skip
    stdout, stderr = await process.communicate((stdin + "\n").encode())
    assert process.returncode is not None
    return process.returncode, stdout.decode() + stderr.decode()


async def test_users_add_reads_the_password_from_stdin(backend, tmp_path):
    await create_tenant(backend.sessions)
    command = ["users", "add", "--email", "Viewer@Example.com", "--tenant", SHOP]
    code, output = await run_cli(backend, tmp_path, command, PASSWORD)
    assert code == 0, output
    assert PASSWORD not in output
    async with backend.sessions() as session:
        user = await session.scalar(select(User).where(User.email == "viewer@example.com"))
        assert user is not None
        assert user.password_hash.startswith("$argon2id$")
        assert auth.verify_password(user.password_hash, PASSWORD)
        tenants = (
            await session.scalars(select(UserTenant.tenant_id).where(UserTenant.user_id == user.id))
        ).all()
        shop_ids = (
            await session.scalars(select(Tenant.id).where(Tenant.shop_domain == SHOP))
        ).all()
    assert tenants == shop_ids


class CountingHasher(PasswordHasher):
    """The real hasher, counting the verifications the served app runs (in its threads)."""

    def __init__(self) -> None:
        super().__init__()
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(password if isinstance(password, str) else password.decode())
        return super().verify(hash, password)


async def test_a_parallel_burst_gets_at_most_the_limit_of_guesses_checked(
    backend, client, monkeypatch
):
    await create_user(backend, "ann@example.com")
    hasher = CountingHasher()
    monkeypatch.setattr(auth, "password_hasher", hasher)
    page = await client.get("/login")
    token = csrf_from(page.text)
    guesses = [f"guess number {n}" for n in range(30)]

    async def attempt(password: str) -> int:
        form = {"email": "ann@example.com", "password": password, "csrf_token": token}
        return (await client.post("/login", data=form)).status_code

    statuses = await asyncio.gather(*(attempt(guess) for guess in guesses))
    assert len(hasher.verified) <= EMAIL_FAILURE_LIMIT, hasher.verified
    assert set(statuses) == {401, 429}
    assert statuses.count(401) == len(hasher.verified)
    # Locked now, even for the right password, which is not even checked.
    assert (await login(client, "ann@example.com")).status_code == 429
    assert PASSWORD not in hasher.verified


async def test_webhooks_answer_quickly_while_many_addresses_try_to_sign_in(backend, served, http):
    """Password hashing runs off the event loop: a storm of sign-ins (each from its own
    address, so no lockout cuts it short) does not hold up Shopify's deliveries."""
    await create_tenant(backend.sessions)
    async with httpx.AsyncClient(base_url=served.base_url, timeout=60) as storm:
        page = await storm.get("/login")
        token = csrf_from(page.text)

        async def attempt(n: int) -> int:
            form = {"email": f"user{n}@example.com", "password": "wrong", "csrf_token": token}
            headers = {"X-Forwarded-For": f"10.1.{n // 250}.{n % 250}"}
            return (await storm.post("/login", data=form, headers=headers)).status_code

        flood = [asyncio.ensure_future(attempt(n)) for n in range(24)]
        answered_during_flood = 0
        slowest = 0.0
        while not all(task.done() for task in flood):
            body, headers = delivery("orders/create")
            started = time.perf_counter()
            response = await http.post(served.webhook_url, content=body, headers=headers)
            slowest = max(slowest, time.perf_counter() - started)
            assert response.status_code == 200, response.text
            answered_during_flood += not all(task.done() for task in flood)
        statuses = await asyncio.gather(*flood)
    # Wrong passwords are 401; on a loaded machine a sign-in that found no hash slot within
    # HASH_WAIT_SECONDS is refused with 503 (Retry-After) instead of queueing without end.
    assert 401 in statuses
    assert set(statuses) <= {401, 503}
    assert answered_during_flood >= 3
    assert slowest < 5.0, f"a webhook took {slowest:.2f} s during the sign-in storm"
