"""What every HTML page shares: rendering with security headers, the `@page` error wrapper, paging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deploytrack.errors import BadRequest, DeploytrackError, Unauthorized
from deploytrack.timeutil import DAY, parse_timestamp, to_iso
from deploytrack.web.http import read_body, refuse_nul
from deploytrack.web.sessions import CSRF_COOKIE, csrf_token, set_csrf_cookie

Handler = Callable[[Request], Awaitable[Response]]
PAGE_SIZE = 50
MENU_LIMIT = 100  # a filter menu lists at most this many names; past it, a text box suggests them
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with the CSRF token every form needs (setting its cookie when new)."""
    app = request.app.state.deploytrack
    new_cookies: dict[str, str] = {}
    context = {"request": request, "csrf": csrf_token(request, new_cookies), "public": app.settings.public_read,
               "version": app.version, "token": None, **context}
    response = app.templates.TemplateResponse(request, template, context, status_code=status)
    if CSRF_COOKIE in new_cookies:
        set_csrf_cookie(response, request, new_cookies[CSRF_COOKIE])
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def page(handler: Handler) -> Handler:
    """Send visitors without read access to the sign-in form; show other errors as a page."""

    async def wrapped(request: Request) -> Response:
        try:
            refuse_nul(request)
            return await handler(request)
        except Unauthorized:
            return RedirectResponse("/signin?" + urlencode({"next": request.url.path}), status_code=303)
        except DeploytrackError as error:
            response = render(request, "error.html", {"error": error}, status=error.status)
            response.headers.update(error.headers)  # (Retry-After with a 503 or a 429, Allow with a 405)
            return response

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


MAX_FORM_BYTES = 16 * 1024  # a page's form: a token, the CSRF token and a few short fields


async def read_form(request: Request) -> FormData:
    """A form posted by a page; a body past MAX_FORM_BYTES is a 413 (Starlette's parser would take ten
    fields of 1 MB each)."""
    request._body = await read_body(request, MAX_FORM_BYTES)  # what Request.form() parses, once read
    return await request.form(max_files=0, max_fields=10)


def query_text(request: Request, name: str, limit: int | None = None) -> str | None:
    """A trimmed query parameter, None when empty; a 400 naming it when longer than `limit` (by default
    the longest name ingestion takes: a filter or cursor may be a product's name)."""
    value = (request.query_params.get(name) or "").strip()
    if len(value) > (limit or request.app.state.deploytrack.settings.max_field_chars):
        raise BadRequest(f"query parameter '{name}' is too long", name)
    return value or None


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `choices` (or empty)."""
    value = query_text(request, name)
    if value is not None and value not in choices:
        raise BadRequest(f"query parameter '{name}' must be one of {', '.join(choices)}", name)
    return value


def page_url(path: str, params: dict[str, str | None], cursor: str | None = None) -> str:
    """`path` with the non-empty `params` (and a cursor) as its query string."""
    query = {k: v for k, v in params.items() if v}
    if cursor:
        query["cursor"] = cursor
    return path + ("?" + urlencode(query) if query else "")


def query_day(request: Request, name: str) -> int | None:
    """An ISO UTC date (2026-01-31) or timestamp as epoch µs; a 400 naming the parameter otherwise."""
    value = query_text(request, name, 64)
    return parse_timestamp(value, name) if value else None


def utc_text(us: int | None) -> str:
    """The one absolute time format of the pages: 2026-01-31 14:05:09 UTC."""
    text = to_iso(us)
    return f"{text[:19].replace('T', ' ')} UTC" if text else ""


def day_or_time(us: int | None) -> str:
    """A filter's value as typed back: the date alone at midnight UTC, else the ISO time."""
    if us is None:
        return ""
    text = to_iso(us) or ""
    return text[:10] if us % DAY == 0 else text
