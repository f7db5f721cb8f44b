"""Security headers on every response, and a bare 500 for anything unexpected.

A pure ASGI middleware (no response buffering, streaming untouched). It adds, unless the
response already set them:

- `Content-Security-Policy`: scripts, styles and images from this origin only (plus `data:`
  images for the blank favicon); no inline script or style, no plugins, no `<base>`, forms post
  only here, and no framing. The pages and `static/dashboard.js` are written for it.
- `X-Frame-Options: DENY` for browsers that predate `frame-ancestors`.
- `Referrer-Policy: same-origin`: store names in URLs never travel to other sites.
- `X-Content-Type-Options: nosniff`.
- `Cache-Control: no-store` on everything but `/static/`: pages, `/api/*` JSON, redirects
  (the one after a login carries the new session cookie) and errors are per user and must not
  sit in a shared or browser cache.

An exception that no handler turned into a response becomes a plain-text 500 that says only
"Internal Server Error" (with the headers above) and is re-raised, so the server still logs
it. Starlette is never built with `debug=True` here; if it were, its debug page is left alone.
A client that hangs up before its body arrived gets nothing and logs nothing.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
NO_STORE = "no-store"
CACHEABLE_PREFIX = "/static/"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = scope.get("path", "").startswith(CACHEABLE_PREFIX)
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not cacheable:
                    headers.setdefault("Cache-Control", NO_STORE)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            if started:
                raise
            # The client hung up mid-body: nobody to answer, nothing worth a traceback.
            return
        except Exception:
            app = scope.get("app")
            if started or getattr(app, "debug", False):
                raise
            # Nothing about the error reaches the client; the server logs the traceback.
            response = PlainTextResponse("Internal Server Error", status_code=500)
            await response(scope, receive, send_with_headers)
            raise
