"""The incident list and one incident: what, when, how long, which deployment it is linked to and why.

Admins resolve, reopen and re-link an incident from its page (a CSRF-checked form); the change goes
through the same write function as PATCH /api/v1/incidents/{id}.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from deploytrack.errors import BadRequest, NotFound
from deploytrack.metrics import incidents as incident_rules
from deploytrack.metrics import rules
from deploytrack.model import whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage import event_queries as queries
from deploytrack.storage import incident_queries as iq
from deploytrack.timeutil import HOUR, now_us
from deploytrack.views import dashboard
from deploytrack.views.html import (
    MENU_LIMIT,
    PAGE_SIZE,
    page,
    page_url,
    query_choice,
    query_text,
    read_form,
    render,
)
from deploytrack.web.http import bearer
from deploytrack.web.sessions import check_csrf, require

HOURS_BEFORE = 24
ACTIONS = ("resolve", "reopen", "link")


@page
async def incidents(request: Request) -> Response:
    """GET /incidents: incidents newest first, by state, product and environment, with their links."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    state = query_choice(request, "state", ("open", "resolved"))
    product = query_text(request, "product")
    env = query_text(request, "environment")
    environment = canonical_environment(env, app.settings.environment_aliases) if env else None
    cursor = request.query_params.get("cursor")
    await app.deriver.ensure_current()
    rows, next_cursor = await dashboard.list_incidents(app.db, state, product, PAGE_SIZE, cursor, environment)
    params = {"state": state, "product": product, "environment": environment}
    return render(request, "incidents.html", {
        "token": token, "incidents": rows, "explain": rules.LINK_EXPLANATIONS, "state": state, "product": product,
        "environment": environment, "paged": bool(cursor), "filtered": bool(state or product or environment),
        "next_url": page_url("/incidents", params, next_cursor) if next_cursor else None,
        "first_url": page_url("/incidents", params), "menu_limit": MENU_LIMIT,
        "products": await queries.names(app.db, "products", MENU_LIMIT),
        "environments": await queries.names(app.db, "environments", MENU_LIMIT),
    })


def _incident_id(request: Request) -> int:
    incident_id = whole_number(request.path_params["incident_id"])
    if incident_id is None:
        raise NotFound("There is no incident with that id.")
    return incident_id


async def _incident(db: Any, incident_id: int) -> dict[str, Any]:
    incident = await iq.get_incident(db, incident_id)
    if incident is None:
        raise NotFound("There is no incident with that id.")
    return incident


@page
async def incident_detail(request: Request) -> Response:
    """GET /incidents/{id}: the incident, its linked deployment and the rule, and the deployments before it."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    await app.deriver.ensure_current()
    incident = await _incident(app.db, _incident_id(request))
    opened, resolved = incident["opened_at"], incident["resolved_at"]
    linked = await dq.get_deployment(app.db, incident["deployment_id"]) if incident["deployment_id"] else None
    environments = [incident["environment"]] if incident["environment"] else sorted(app.settings.production_set)
    before = await dq.deployments_before(app.db, incident["product"], environments, opened,
                                         opened - HOURS_BEFORE * HOUR)
    return render(request, "incident.html", {
        "token": token, "i": incident, "linked": linked, "before": before, "environments": environments,
        "hours": HOURS_BEFORE, "duration": (resolved or now_us()) - opened,
        "rule": incident["link_rule"], "explain": rules.LINK_EXPLANATIONS.get(incident["link_rule"] or ""),
        "admin": token is not None and token.allows("admin"),
    })


@page
async def change_incident(request: Request) -> Response:
    """POST /incidents/{id} (admins, CSRF-checked form): resolve, reopen, or link to a deployment (or the rules)."""
    await require(request, "admin")
    app = request.app.state.deploytrack
    incident_id = _incident_id(request)
    form = await read_form(request)
    if bearer(request) is None:  # a session cookie rides along on cross-site requests; a Bearer header never does
        check_csrf(request, form.get("csrf"))
    action = form.get("action")
    if action not in ACTIONS:
        raise BadRequest(f"form field 'action' must be one of {', '.join(ACTIONS)}", "action")
    data: dict[str, Any]
    if action == "link":
        raw = form.get("deployment_id")
        raw = raw.strip() if isinstance(raw, str) else ""
        deployment_id = whole_number(raw) if raw else None
        if raw and not deployment_id:
            raise BadRequest("form field 'deployment_id' must be a deployment id, or empty for the link rules",
                             "deployment_id")
        data = {"deployment_id": deployment_id}
    else:
        data = {"status": "resolved" if action == "resolve" else "open"}
    await app.db.write(incident_rules.update, incident_id, data, app.settings, now_us())
    return RedirectResponse(f"/incidents/{incident_id}", status_code=303)
