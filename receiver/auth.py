"""Who is calling: dashboard users (argon2id passwords, signed-cookie sessions, CSRF, login
throttling held in the database) and API tokens for scripts."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from models import ApiToken, LoginThrottle, Tenant, User, UserTenant, utcnow
from models.tenancy import use_all_tenants
from models.upsert import insert_on_conflict
from receiver.errors import ApiError

TOKEN_PREFIX = "srk_"
SESSION_MAX_AGE = 12 * 60 * 60
CSRF_HEADER = "x-csrf-token"
# Five wrong passwords for one email within the window lock that email for the lockout; an
# address gets more room because offices share one.
EMAIL_FAILURE_LIMIT = 5
ADDRESS_FAILURE_LIMIT = 20
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


class LoginFailed(Exception):
    """Wrong email or password; the message never says which."""


class LoginLocked(Exception):
    def __init__(self, until: datetime) -> None:
        minutes = max(1, int((until - utcnow()).total_seconds() // 60) + 1)
        super().__init__(
            f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        )
        self.until = until


@dataclass(frozen=True)
class Principal:
    """The caller of a request. `tenant_ids` is None for callers who may see every store."""

    name: str
    is_admin: bool
    user_id: int | None = None
    tenant_ids: frozenset[int] | None = None
    via_session: bool = False

    def can_see(self, tenant_id: int) -> bool:
        return self.tenant_ids is None or tenant_id in self.tenant_ids


# -- passwords ---------------------------------------------------------------------------

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile.
password_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return password_hasher.hash(password)


@cache
def _dummy_hash() -> str:
    return password_hasher.hash(secrets.token_urlsafe(16))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not the user exists: an unknown email is checked against a
    dummy hash, so response time does not reveal which emails have accounts."""
    try:
        return password_hasher.verify(password_hash or _dummy_hash(), password) and bool(
            password_hash
        )
    except (VerificationError, InvalidHashError):
        return False


def normalize_email(email: str) -> str:
    """Lower-cased and storable: PostgreSQL text holds no NUL and no unpaired surrogate, and a
    sign-in form must not turn such a character into a database error."""
    cleaned = email.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned.strip().lower()[:320]


# -- login throttling --------------------------------------------------------------------


async def _locked_until(session: AsyncSession, keys: list[str]) -> datetime | None:
    now = utcnow()
    rows = await session.scalars(
        select(LoginThrottle.locked_until).where(
            LoginThrottle.key.in_(keys), LoginThrottle.locked_until > now
        )
    )
    return max(rows, default=None)


async def _record_failure(session: AsyncSession, key: str, limit: int) -> None:
    now = utcnow()
    table = LoginThrottle.__table__
    statement = insert_on_conflict(session, table).values(
        key=key, failures=1, window_started_at=now, locked_until=None
    )
    expired = table.c.window_started_at < now - FAILURE_WINDOW
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "failures": case((expired, 1), else_=table.c.failures + 1),
            "window_started_at": case((expired, now), else_=table.c.window_started_at),
        },
    )
    await session.execute(statement)
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == key, LoginThrottle.failures >= limit)
        .values(locked_until=now + LOCKOUT, failures=0, window_started_at=now)
        .execution_options(synchronize_session=False)
    )


async def sign_in(session: AsyncSession, email: str, password: str, address: str) -> User:
    """Check a login; raises LoginLocked or LoginFailed. Rehashes when parameters changed."""
    email = normalize_email(email)
    keys = [f"email:{email}"[:400], f"address:{normalize_email(address)}"[:400]]
    locked = await _locked_until(session, keys)
    if locked is not None:
        raise LoginLocked(locked)
    user = await session.scalar(select(User).where(User.email == email))
    valid = verify_password(user.password_hash if user else None, password)
    if user is None or not valid or user.disabled_at is not None:
        await _record_failure(session, keys[0], EMAIL_FAILURE_LIMIT)
        await _record_failure(session, keys[1], ADDRESS_FAILURE_LIMIT)
        raise LoginFailed("Wrong email or password.")
    if password_hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = utcnow()
    await session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys[0]))
    return user


# -- sessions and CSRF -------------------------------------------------------------------


def start_session(request: Request, user: User) -> None:
    """A fresh session on every login: nothing from before survives, so a planted cookie
    cannot be carried into the signed-in session."""
    request.session.clear()
    request.session.update(
        {
            "uid": user.id,
            "sid": secrets.token_urlsafe(16),
            "csrf": secrets.token_urlsafe(32),
        }
    )


def end_session(request: Request) -> None:
    request.session.clear()


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_valid(request: Request, submitted: str | None) -> bool:
    expected = request.session.get("csrf")
    return (
        isinstance(expected, str)
        and isinstance(submitted, str)
        and secrets.compare_digest(expected.encode(), submitted.encode())
    )


async def session_user(session: AsyncSession, request: Request) -> User | None:
    uid = request.session.get("uid")
    if not isinstance(uid, int):
        return None
    user = await session.get(User, uid)
    if user is None or user.disabled_at is not None:
        return None
    return user


async def principal_for_user(session: AsyncSession, user: User) -> Principal:
    tenant_ids: frozenset[int] | None = None
    if not user.is_admin:
        await use_all_tenants(session)  # the access list itself spans stores
        rows = await session.scalars(
            select(UserTenant.tenant_id).where(UserTenant.user_id == user.id)
        )
        tenant_ids = frozenset(rows)
    return Principal(
        name=user.email,
        is_admin=user.is_admin,
        user_id=user.id,
        tenant_ids=tenant_ids,
        via_session=True,
    )


async def visible_tenants(session: AsyncSession, principal: Principal) -> list[Tenant]:
    query = select(Tenant).order_by(Tenant.shop_domain)
    if principal.tenant_ids is not None:
        query = query.where(Tenant.id.in_(principal.tenant_ids))
    return list(await session.scalars(query))


# -- API tokens --------------------------------------------------------------------------


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


async def create_api_token(session: AsyncSession, name: str, *, is_admin: bool = True) -> str:
    token = new_token()
    session.add(ApiToken(name=name, token_sha256=token_digest(token), is_admin=is_admin))
    await session.flush()
    return token


async def _token_principal(session: AsyncSession, token: str) -> Principal:
    row = await session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_digest(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise Unauthorized("invalid or revoked API token")
    await session.execute(
        update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=utcnow())
    )
    return Principal(name=row.name, is_admin=row.is_admin)


# -- /api/* ------------------------------------------------------------------------------


async def authenticate(
    session: AsyncSession, request: Request, *, write: bool = False
) -> Principal:
    """A bearer token, or a session (plus the X-CSRF-Token header on writes)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("use Authorization: Bearer <api token>")
        return await _token_principal(session, token.strip())
    user = await session_user(session, request)
    if user is None:
        raise Unauthorized("authentication required: sign in or send a bearer API token")
    if write and not csrf_valid(request, request.headers.get(CSRF_HEADER)):
        raise Forbidden("missing or wrong X-CSRF-Token header")
    return await principal_for_user(session, user)


async def require_admin(session: AsyncSession, request: Request) -> Principal:
    principal = await authenticate(session, request, write=True)
    if not principal.is_admin:
        raise Forbidden("this action needs an admin")
    return principal
