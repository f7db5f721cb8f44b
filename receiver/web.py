"""Session plumbing and the sign-in pages of the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.auth import (
    SESSION_MAX_AGE,
    LoginFailed,
    LoginLocked,
    Principal,
    SignInBusy,
    csrf_token,
    csrf_valid,
    end_session,
    principal_for_user,
    session_user,
    sign_in,
    start_session,
)
from receiver.services import Services

TEMPLATES_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store"}
SESSIONLESS_PATHS = frozenset({"/webhooks/shopify", "/healthz", "/readyz", "/metrics"})


class SessionCookies:
    """Starlette's SessionMiddleware (itsdangerous-signed, HttpOnly, SameSite=Lax, expiring),
    adding the Secure flag when the request arrived over https (directly or via a trusted
    proxy's X-Forwarded-Proto, which uvicorn applies to the scheme)."""

    def __init__(self, app: ASGIApp, secret_key: str) -> None:
        options: dict[str, Any] = {
            "secret_key": secret_key,
            "session_cookie": "receiver_session",
            "max_age": SESSION_MAX_AGE,
            "same_site": "lax",
        }
        self.app = app
        self.plain = SessionMiddleware(app, https_only=False, **options)
        self.secure = SessionMiddleware(app, https_only=True, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("path") in SESSIONLESS_PATHS:
            # Shopify and probes never carry our cookie; skipping the session machinery is a
            # measurable share of a webhook's CPU.
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") in {"https", "wss"}
        await (self.secure if secure else self.plain)(scope, receive, send)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    context = {"csrf_token": csrf_token(request), **context}
    return templates.TemplateResponse(request, name, context, status_code=status, headers=NO_STORE)


async def page_principal(session: AsyncSession, request: Request) -> Principal | None:
    user = await session_user(session, request)
    return await principal_for_user(session, user) if user else None


def to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form; anything else is treated as empty (and fails CSRF)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    form = await request.form(max_files=0, max_fields=20, max_part_size=MAX_FORM_BYTES)
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def login_page(request: Request) -> Response:
    services: Services = request.state.services
    async with services.sessions() as session:
        if await session_user(session, request) is not None:
            return RedirectResponse("/", status_code=303)
    return render(request, "login.html", {"error": None, "email": ""})


async def login_submit(request: Request) -> Response:
    services: Services = request.state.services
    form = await read_form(request)
    email = form.get("email", "")[:320]
    if not csrf_valid(request, form.get("csrf_token")):
        return render(
            request,
            "login.html",
            {"error": "Your session expired. Please try again.", "email": email},
            status=403,
        )
    address = request.client.host if request.client else "unknown"
    try:
        signed_in = await sign_in(services.sessions, email, form.get("password", ""), address)
    except LoginLocked as exc:
        error, status = str(exc), 429
    except LoginFailed as exc:
        error, status = str(exc), 401
    except SignInBusy as exc:
        page = render(request, "login.html", {"error": str(exc), "email": email}, status=503)
        page.headers["Retry-After"] = "60"
        return page
    else:
        start_session(request, signed_in)
        return RedirectResponse("/", status_code=303)
    return render(request, "login.html", {"error": error, "email": email}, status=status)


async def logout(request: Request) -> Response:
    form = await read_form(request)
    if not csrf_valid(request, form.get("csrf_token")):
        return render(request, "error.html", {"message": "Invalid form token."}, status=403)
    services: Services = request.state.services
    async with services.sessions() as session, session.begin():
        await end_session(session, request)
    return to_login()
