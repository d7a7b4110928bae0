"""The HTML UI: sign-in, the event list, one event."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deploytrack import queries
from deploytrack.auth import authenticate
from deploytrack.errors import DeploytrackError, NotFound, Unauthorized
from deploytrack.sessions import (CSRF_COOKIE, check_csrf, clear_session, csrf_token, form_text, require,
                                  set_csrf_cookie, set_session)


def render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render a template with the CSRF token every form needs (setting its cookie when new)."""
    app = request.app.state.deploytrack
    new_cookies: dict[str, str] = {}
    context = {"request": request, "csrf": csrf_token(request, new_cookies), "public": app.settings.public_read,
               "version": app.version, **context}
    response = app.templates.TemplateResponse(request, template, context, status_code=status)
    if CSRF_COOKIE in new_cookies:
        set_csrf_cookie(response, request, new_cookies[CSRF_COOKIE])
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def page(handler: Any) -> Any:
    """Send visitors without read access to the sign-in form; show other errors as a page."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Unauthorized:
            return RedirectResponse("/signin?" + urlencode({"next": request.url.path}), status_code=303)
        except DeploytrackError as error:
            return render(request, "error.html", {"error": error}, status=error.status)

    wrapped.__name__ = handler.__name__
    return wrapped


@page
async def events(request: Request) -> Response:
    token = await require(request, "read")
    app = request.app.state.deploytrack
    flt = queries.EventFilter.from_query(request.query_params, app.settings.environment_aliases)
    cursor = request.query_params.get("cursor")
    rows, next_cursor = await queries.list_events(app.db, flt, 50, cursor)
    next_url = "/?" + urlencode({**flt.as_query(), "cursor": next_cursor}) if next_cursor else None
    return render(request, "events.html", {
        "token": token, "events": rows, "filter": flt, "next_url": next_url, "paged": bool(cursor),
        "products": await queries.names(app.db, "products"),
        "environments": await queries.names(app.db, "environments"),
    })


@page
async def event_detail(request: Request) -> Response:
    token = await require(request, "read")
    row = await queries.get_event(request.app.state.deploytrack.db, request.path_params["event_id"])
    if row is None:
        raise NotFound("There is no event with that id.")
    return render(request, "event.html", {"token": token, "event": queries.event_json(row), "row": row})


def _safe_next(value: str | None) -> str:
    """Only same-site paths: never an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def signin_form(request: Request) -> Response:
    return render(request, "signin.html", {"next": _safe_next(request.query_params.get("next")), "error": None})


async def signin(request: Request) -> Response:
    app = request.app.state.deploytrack
    form = await request.form(max_files=0, max_fields=10)
    target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
    try:
        check_csrf(request, form.get("csrf"))
        token = await authenticate(app.db, form_text(form, "token"), "read", "That token is not valid.")
    except DeploytrackError as error:
        return render(request, "signin.html", {"next": target, "error": error.message}, status=error.status)
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, app.session_key, token.id)
    return response


async def signout(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    try:
        check_csrf(request, form.get("csrf"))
    except DeploytrackError as error:
        return render(request, "error.html", {"error": error}, status=error.status)
    response = RedirectResponse("/signin", status_code=303)
    clear_session(response)
    return response


def routes() -> list[Route]:
    return [
        Route("/", events, methods=["GET"]),
        Route("/events/{event_id}", event_detail, methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
