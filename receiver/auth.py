"""Who is calling `/api/*`: API tokens for scripts (dashboard sessions come later)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from models import ApiToken, utcnow
from receiver.errors import ApiError

TOKEN_PREFIX = "srk_"


class Unauthorized(ApiError):
    status_code = 401


class Forbidden(ApiError):
    status_code = 403


@dataclass(frozen=True)
class Principal:
    name: str
    is_admin: bool


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


async def authenticate(session: AsyncSession, request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("authentication required: send Authorization: Bearer <api token>")
    row = await session.scalar(
        select(ApiToken).where(
            ApiToken.token_sha256 == token_digest(token.strip()), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise Unauthorized("invalid or revoked API token")
    await session.execute(
        update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=utcnow())
    )
    return Principal(name=row.name, is_admin=row.is_admin)


async def require_admin(session: AsyncSession, request: Request) -> Principal:
    principal = await authenticate(session, request)
    if not principal.is_admin:
        raise Forbidden("this action needs an admin")
    return principal
