"""The HTML UI: sign-in and sign-out here, and the route table of every page module."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from deploytrack.errors import DeploytrackError
from deploytrack.timeutil import now_us
from deploytrack.views import (
    deployment_pages,
    dora_detail_pages,
    dora_pages,
    environment_pages,
    event_pages,
    home_pages,
    incident_pages,
    rules_pages,
)
from deploytrack.views.html import page, read_form, render
from deploytrack.web.auth import authenticate
from deploytrack.web.sessions import (
    SESSION_COOKIE,
    check_csrf,
    clear_session,
    end_session,
    form_text,
    session_id,
    set_session,
    start_session,
)

__all__ = ["page", "render", "routes"]


def _safe_next(value: str | None) -> str:
    """Only same-site paths: never an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


async def signin_form(request: Request) -> Response:
    return render(request, "signin.html", {"next": _safe_next(request.query_params.get("next")), "error": None})


async def signin(request: Request) -> Response:
    app = request.app.state.deploytrack
    target = "/"
    try:
        form = await read_form(request)
        target = _safe_next(form.get("next") if isinstance(form.get("next"), str) else None)  # type: ignore[arg-type]
        check_csrf(request, form.get("csrf"))
        token = await authenticate(app.db, form_text(form, "token"), "read", "That token is not valid.")
    except DeploytrackError as error:
        return render(request, "signin.html", {"next": target, "error": error.message}, status=error.status)
    sid = await app.db.write(start_session, token.id, now_us())
    response = RedirectResponse(target, status_code=303)
    set_session(response, request, app.session_key, sid)
    return response


async def signout(request: Request) -> Response:
    app = request.app.state.deploytrack
    try:
        form = await read_form(request)
        check_csrf(request, form.get("csrf"))
    except DeploytrackError as error:
        return render(request, "error.html", {"error": error}, status=error.status)
    sid = session_id(app.session_key, request.cookies.get(SESSION_COOKIE))
    if sid is not None:
        await app.db.write(end_session, sid)
    response = RedirectResponse("/signin", status_code=303)
    clear_session(response)
    return response


def routes() -> list[Route]:
    return [
        Route("/", home_pages.home, methods=["GET"]),
        Route("/events", event_pages.events, methods=["GET"]),
        Route("/events/{event_id}", event_pages.event_detail, methods=["GET"]),
        Route("/deployments", deployment_pages.deployments, methods=["GET"]),
        Route("/deployments/{deployment_id}", deployment_pages.deployment_detail, methods=["GET"]),
        Route("/environments", environment_pages.environments, methods=["GET"]),
        Route("/products/{name:path}", environment_pages.product, methods=["GET"]),
        Route("/dora", dora_pages.dora, methods=["GET"]),
        Route("/dora/{metric}", dora_detail_pages.counted, methods=["GET"]),
        Route("/incidents", incident_pages.incidents, methods=["GET"]),
        Route("/incidents/{incident_id}", incident_pages.incident_detail, methods=["GET"]),
        Route("/incidents/{incident_id}", incident_pages.change_incident, methods=["POST"]),
        Route("/rules", rules_pages.rules, methods=["GET"]),
        Route("/rules/violations", rules_pages.violations, methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]
