"""Rules every request passes before (and after) its handler, as one ASGI middleware.

- Cookie-authenticated writes to the native API (`/api/v1`, any method but GET/HEAD/OPTIONS) need
  proof they come from deploytrack's own pages: the CSRF token in an `X-CSRF-Token` header, or a
  same-origin `Origin` or `Sec-Fetch-Site`. A page on another site (or another port of this host)
  can make a browser send the cookie, but none of these.
- Native API requests that carry a body (POST, PUT, PATCH) to a route that takes them must say it is
  JSON: else 415, so a cross-site `text/plain` form cannot pass for a JSON request.
- A database that reports itself damaged, full, read-only, busy or unreachable is a 503, never a
  500, wherever it is met (`storage.failures` classifies by error code).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deploytrack.errors import DeploytrackError, Forbidden, UnsupportedMediaType
from deploytrack.storage import failures
from deploytrack.web.http import error_response
from deploytrack.web.sessions import CSRF_HEADER, SESSION_COOKIE, csrf_matches

log = logging.getLogger("deploytrack")
NATIVE_API = "/api/v1/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def native_write_refusal(request: Request) -> DeploytrackError | None:
    """Why a write to the native API is refused before its handler runs, if it is."""
    if request.headers.get("authorization") is None and SESSION_COOKIE in request.cookies \
            and not _same_origin(request):
        return Forbidden(f"a request authenticated by the session cookie needs the {CSRF_HEADER} header "
                         "(the dt_csrf cookie's value) or a same-origin Origin", "csrf")
    if request.method in BODY_METHODS and not is_json(request.headers.get("content-type")) and _taken(request.scope):
        return UnsupportedMediaType("Content-Type must be application/json", "Content-Type")
    return None


def _taken(scope: Scope) -> bool:
    """Whether a route takes this method at this path; if none does, routing answers its 404 or 405 first."""
    return any(route.matches(scope)[0] is Match.FULL for route in scope["app"].routes)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _same_origin(request: Request) -> bool:
    if csrf_matches(request, request.headers.get(CSRF_HEADER)):
        return True
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    if not origin or not host or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        default = {"http": 80, "https": 443}.get(parts.scheme)
        netloc = parts.hostname if parts.port in (None, default) else f"{parts.hostname}:{parts.port}"
    except ValueError:
        return False
    host = host.lower()
    for port in (":80", ":443"):
        if host.endswith(port):
            host = host[: -len(port)]
    return parts.scheme in ("http", "https") and netloc == host


class RequestGuards:
    """ASGI middleware applying the module's rules around the application."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(NATIVE_API) and scope["method"] not in SAFE_METHODS:
            refusal = native_write_refusal(Request(scope))
            if refusal is not None:
                await error_response(refusal)(scope, receive, send)
                return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            refusal = None if started else unavailable(exc, scope)
            if refusal is None:
                raise
            await refusal(scope, receive, send)


def unavailable(exc: Exception, scope: Scope) -> Response | None:
    """The 503 for a database that cannot be used (logged); None for any other error."""
    refusal = failures.as_catalogue_error(exc, "be used")
    if refusal is None:
        return None
    log.error("%s %s answered 503: %s", scope["method"], scope["path"], exc)
    return error_response(refusal)
