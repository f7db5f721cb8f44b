"""Who is calling: dashboard users (argon2id passwords, server-side sessions named by a signed
cookie, CSRF, login throttling held in the database) and API tokens for scripts."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import Request

from models import (
    ApiToken,
    ApiTokenTenant,
    LoginThrottle,
    Tenant,
    User,
    UserSession,
    UserTenant,
    utcnow,
)
from models.tenancy import cross_store_transaction, use_all_tenants
from models.upsert import insert_on_conflict
from receiver.errors import ApiError
from receiver.tenants import require_tenant

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
    # A read-only API token: reads like its scope allows, never writes.
    read_only: bool = False

    def can_see(self, tenant_id: int) -> bool:
        return self.tenant_ids is None or tenant_id in self.tenant_ids


# -- passwords ---------------------------------------------------------------------------

# argon2-cffi's defaults are argon2id with RFC 9106's low-memory profile (64 MiB, tens of
# milliseconds of CPU per hash).
password_hasher = PasswordHasher()
# Hashes run in worker threads (argon2-cffi releases the GIL), so the event loop keeps
# answering webhooks while passwords are checked; and at most this many at once per process,
# so a storm of sign-ins queues for these slots instead of taking every core.
HASH_CONCURRENCY = 2
_hash_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _slots() -> asyncio.Semaphore:
    # One semaphore per event loop: an asyncio primitive is bound to the loop it first waits on.
    loop = asyncio.get_running_loop()
    slots = _hash_slots.get(loop)
    if slots is None:
        slots = _hash_slots[loop] = asyncio.Semaphore(HASH_CONCURRENCY)
    return slots


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


# A sign-in that cannot get a hash slot this soon is refused (503) rather than queued without
# end: a storm's waiters would otherwise pile up faster than two slots can serve them.
HASH_WAIT_SECONDS = 5.0


class SignInBusy(Exception):
    """Every hash slot stayed taken for HASH_WAIT_SECONDS: try again shortly."""


@asynccontextmanager
async def _hash_slot() -> AsyncIterator[None]:
    slots = _slots()
    try:
        async with asyncio.timeout(HASH_WAIT_SECONDS):
            await slots.acquire()
    except TimeoutError:
        raise SignInBusy("Too many sign-ins at once. Try again in a minute.") from None
    try:
        yield
    finally:
        slots.release()


async def check_password(password_hash: str | None, password: str) -> bool:
    """verify_password off the event loop, within the per-process cap on concurrent hashes
    (SignInBusy when no slot frees up in time). Callers hold no database connection while
    they wait here."""
    async with _hash_slot():
        return await asyncio.to_thread(verify_password, password_hash, password)


async def new_password_hash(password: str) -> str:
    async with _hash_slot():
        return await asyncio.to_thread(hash_password, password)


def normalize_email(email: str) -> str:
    """Lower-cased and storable: PostgreSQL text holds no NUL and no unpaired surrogate, and a
    sign-in form must not turn such a character into a database error."""
    cleaned = email.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned.strip().lower()[:320]


MIN_PASSWORD_LENGTH = 10
MAX_EMAIL_LENGTH = 320


class InvalidEmail(ValueError):
    def __init__(self, email: str) -> None:
        super().__init__(f"{email!r} is not an email address")


class PasswordTooShort(ValueError):
    def __init__(self) -> None:
        super().__init__(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def valid_email(email: str) -> str:
    """The normalized address, or InvalidEmail."""
    normalized = normalize_email(email)
    if "@" not in normalized or len(normalized) > MAX_EMAIL_LENGTH:
        raise InvalidEmail(normalized)
    return normalized


def check_password_rule(password: str) -> None:
    """The rule every password that is set must pass (PasswordTooShort)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordTooShort


@dataclass(frozen=True)
class AddedUser:
    email: str
    created: bool
    is_admin: bool
    store_count: int


async def add_user(
    sessions: async_sessionmaker[AsyncSession],
    email: str,
    password: str,
    *,
    admin: bool,
    shops: tuple[str, ...] = (),
) -> AddedUser:
    """Add a user, or reset their password, role and stores (normalized shop domains); a
    reset signs them out everywhere. InvalidEmail, PasswordTooShort, or UnknownStore."""
    email = valid_email(email)
    check_password_rule(password)
    password_hash = await new_password_hash(password)
    # The user's store list (user_tenants) names several stores.
    async with cross_store_transaction(sessions) as session:
        tenant_ids = [(await require_tenant(session, shop)).id for shop in shops]
        user = await session.scalar(select(User).where(User.email == email))
        created = user is None
        if user is None:
            user = User(email=email, password_hash=password_hash, is_admin=admin)
            session.add(user)
        else:
            user.password_hash, user.is_admin, user.disabled_at = password_hash, admin, None
            # A reset password signs the user out everywhere: a stolen session ends with it.
            await end_user_sessions(session, user.id)
        await session.flush()
        await session.execute(delete(UserTenant).where(UserTenant.user_id == user.id))
        session.add_all(UserTenant(user_id=user.id, tenant_id=tid) for tid in tenant_ids)
    return AddedUser(email, created, admin, len(tenant_ids))


# -- login throttling --------------------------------------------------------------------


async def _count_attempt(
    session: AsyncSession, key: str, limit: int, now: datetime
) -> datetime | None:
    """Count this attempt against `key` before any password is checked, in one atomic
    statement, so that a burst of parallel guesses gets at most `limit` of them checked.
    Returns when the lock ends if this attempt is refused, else None."""
    table = LoginThrottle.__table__
    locked = table.c.locked_until > now
    expired = table.c.window_started_at < now - FAILURE_WINDOW
    statement = (
        insert_on_conflict(session, table)
        .values(key=key, failures=1, window_started_at=now, locked_until=None)
        .on_conflict_do_update(
            index_elements=[table.c.key],
            set_={
                # While locked nothing counts; the lock itself restarts the window.
                "failures": case(
                    (locked, table.c.failures), (expired, 1), else_=table.c.failures + 1
                ),
                "window_started_at": case(
                    (locked, table.c.window_started_at),
                    (expired, now),
                    else_=table.c.window_started_at,
                ),
            },
        )
        .returning(table.c.failures, table.c.locked_until)
    )
    failures, locked_until = (await session.execute(statement)).one()
    locked_until = cast(datetime | None, locked_until)
    if locked_until is not None and locked_until > now:
        return locked_until
    if failures <= limit:
        return None
    until = now + LOCKOUT
    await session.execute(
        update(LoginThrottle)
        .where(LoginThrottle.key == key)
        .values(locked_until=until, failures=0, window_started_at=now)
        .execution_options(synchronize_session=False)
    )
    return until


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in: the user and the new session's token (only its hash is stored)."""

    user_id: int
    session_token: str


async def sign_in(
    sessions: async_sessionmaker[AsyncSession], email: str, password: str, address: str
) -> SignedIn:
    """Check a login and open a server-side session; raises LoginLocked or LoginFailed.

    Three steps, none holding a database connection while argon2 runs or waits for a slot:
    count the attempt (committed before the password is looked at), check the password in a
    worker thread, then record the success (counters, rehash, session row)."""
    email = normalize_email(email)
    email_key, address_key = f"email:{email}"[:400], f"address:{normalize_email(address)}"[:400]
    now = utcnow()
    async with sessions() as session, session.begin():
        locks = [
            await _count_attempt(session, email_key, EMAIL_FAILURE_LIMIT, now),
            await _count_attempt(session, address_key, ADDRESS_FAILURE_LIMIT, now),
        ]
        row = (
            await session.execute(
                select(User.id, User.password_hash, User.disabled_at).where(User.email == email)
            )
        ).one_or_none()
    locked = max((lock for lock in locks if lock is not None), default=None)
    if locked is not None:
        raise LoginLocked(locked)
    stored_hash = row.password_hash if row is not None else None
    valid = await check_password(stored_hash, password)
    if row is None or stored_hash is None or not valid or row.disabled_at is not None:
        raise LoginFailed("Wrong email or password.")
    rehashed = (
        await new_password_hash(password)
        if password_hasher.check_needs_rehash(stored_hash)
        else None
    )
    token = secrets.token_urlsafe(32)
    now = utcnow()
    async with sessions() as session, session.begin():
        values: dict[str, object] = {"last_login_at": now}
        if rehashed is not None:
            values["password_hash"] = rehashed
        await session.execute(update(User).where(User.id == row.id).values(**values))
        await session.execute(delete(LoginThrottle).where(LoginThrottle.key == email_key))
        # The address counted this attempt up front; a success gives it back, so an office
        # of colleagues signing in correctly never locks itself out.
        await session.execute(
            update(LoginThrottle)
            .where(LoginThrottle.key == address_key, LoginThrottle.failures > 0)
            .values(failures=LoginThrottle.failures - 1)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            delete(UserSession).where(UserSession.user_id == row.id, UserSession.expires_at <= now)
        )
        session.add(
            UserSession(
                user_id=row.id,
                token_sha256=token_digest(token),
                created_at=now,
                expires_at=now + timedelta(seconds=SESSION_MAX_AGE),
            )
        )
    return SignedIn(row.id, token)


# -- sessions and CSRF -------------------------------------------------------------------


def start_session(request: Request, signed_in: SignedIn) -> None:
    """A fresh cookie on every login: nothing from before survives, so a planted cookie
    cannot be carried into the signed-in session."""
    request.session.clear()
    request.session.update(
        {
            "uid": signed_in.user_id,
            "sid": signed_in.session_token,
            "csrf": secrets.token_urlsafe(32),
        }
    )


async def end_session(session: AsyncSession, request: Request) -> None:
    """Delete the session's row, so a saved copy of the cookie is worth nothing, then the
    cookie itself."""
    sid = request.session.get("sid")
    if isinstance(sid, str):
        await session.execute(
            delete(UserSession).where(UserSession.token_sha256 == token_digest(sid))
        )
    request.session.clear()


async def end_user_sessions(session: AsyncSession, user_id: int) -> None:
    """Sign a user out everywhere (password reset, disabling)."""
    await session.execute(delete(UserSession).where(UserSession.user_id == user_id))


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
    """The signed-in user: the cookie's session token must name a live row of theirs (one
    lookup by the unique token hash), and the user must not be disabled."""
    uid, sid = request.session.get("uid"), request.session.get("sid")
    if not isinstance(uid, int) or not isinstance(sid, str):
        return None
    return await session.scalar(
        select(User)
        .join(UserSession, UserSession.user_id == User.id)
        .where(
            UserSession.token_sha256 == token_digest(sid),
            UserSession.user_id == uid,
            UserSession.expires_at > utcnow(),
            User.disabled_at.is_(None),
        )
    )


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


async def create_api_token(
    session: AsyncSession,
    name: str,
    *,
    is_admin: bool = True,
    read_only: bool = False,
    tenant_ids: frozenset[int] | None = None,
) -> str:
    """A new token, printed once. `tenant_ids` scopes it to those stores (None: every store);
    a read-only token never writes, whatever `is_admin` says."""
    token = new_token()
    row = ApiToken(
        name=name, token_sha256=token_digest(token), is_admin=is_admin, read_only=read_only
    )
    session.add(row)
    await session.flush()
    if tenant_ids:
        await use_all_tenants(session)  # the scope rows name their stores
        session.add_all(ApiTokenTenant(api_token_id=row.id, tenant_id=tid) for tid in tenant_ids)
        await session.flush()
    return token


MAX_TOKEN_NAME_LENGTH = 100  # api_tokens.name


class InvalidTokenName(ValueError):
    def __init__(self) -> None:
        super().__init__(
            f"give the token a name of 1 to {MAX_TOKEN_NAME_LENGTH} printable characters, "
            "e.g. ci-backfill"
        )


def valid_token_name(name: str) -> str:
    """The name stripped, or InvalidTokenName: it is shown in lists and logs, and PostgreSQL
    text holds no NUL."""
    name = name.strip()
    if not name or len(name) > MAX_TOKEN_NAME_LENGTH or not name.isprintable():
        raise InvalidTokenName
    return name


async def create_token(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    *,
    read_only: bool = False,
    shops: tuple[str, ...] = (),
) -> str:
    """`tokens create`: a new API token scoped to `shops` (normalized domains; none: every
    store), returned once. InvalidTokenName or UnknownStore."""
    name = valid_token_name(name)
    # The scope names several stores.
    async with cross_store_transaction(sessions) as session:
        tenant_ids = frozenset([(await require_tenant(session, shop)).id for shop in shops])
        return await create_api_token(
            session, name, read_only=read_only, tenant_ids=tenant_ids or None
        )


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
    await use_all_tenants(session)  # the scope itself spans stores, as user_tenants does
    scope = frozenset(
        await session.scalars(
            select(ApiTokenTenant.tenant_id).where(ApiTokenTenant.api_token_id == row.id)
        )
    )
    return Principal(
        name=row.name, is_admin=row.is_admin, tenant_ids=scope or None, read_only=row.read_only
    )


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
    if principal.read_only:
        raise Forbidden("this API token is read-only")
    if not principal.is_admin:
        raise Forbidden("this action needs an admin")
    return principal
