"""The deployment list (lifecycle, duration, labels; failed ones stand out) and one deployment."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import NotFound
from deploytrack.model import STATUSES, whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage import event_queries as queries
from deploytrack.views import deployment_facts as facts
from deploytrack.views.html import (
    MENU_LIMIT,
    PAGE_SIZE,
    page,
    page_url,
    query_choice,
    query_text,
    render,
)
from deploytrack.web.sessions import require


@page
async def deployments(request: Request) -> Response:
    """GET /deployments: deployment records newest first, filtered by product, environment, status, label."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    env = query_text(request, "environment")
    flt = dq.DeploymentFilter(
        product=query_text(request, "product"),
        environment=canonical_environment(env, app.settings.environment_aliases) if env else None,
        status=query_choice(request, "status", STATUSES), label=query_choice(request, "label", dq.LABELS))
    cursor = request.query_params.get("cursor")
    await app.deriver.ensure_current()
    rows, next_cursor = await dq.list_deployments(app.db, flt, PAGE_SIZE, cursor)
    return render(request, "deployments.html", {
        "token": token, "deployments": rows, "filter": flt, "paged": bool(cursor), "statuses": STATUSES,
        "labels": dq.LABELS, "filtered": any(flt.as_query().values()),
        "next_url": page_url("/deployments", flt.as_query(), next_cursor) if next_cursor else None,
        "first_url": page_url("/deployments", flt.as_query()),
        "products": await queries.names(app.db, "products", MENU_LIMIT),
        "environments": await queries.names(app.db, "environments", MENU_LIMIT), "menu_limit": MENU_LIMIT,
    })


@page
async def deployment_detail(request: Request) -> Response:
    """GET /deployments/{id}: why it is what it is: rollbacks, failure reason, incidents, commits, events."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    await request.app.state.deploytrack.deriver.ensure_current()
    deployment_id = whole_number(request.path_params["deployment_id"])
    deployment = await dq.get_deployment(db, deployment_id) if deployment_id is not None else None
    if deployment is None:
        raise NotFound("There is no deployment with that id.")
    events = await dq.deployment_events(db, deployment["id"])
    return render(request, "deployment.html", {
        "token": token, "d": deployment, "events": events,
        "incidents": await dq.linked_incidents(db, deployment["id"]),
        "rolled_back_by": await dq.get_deployment(db, deployment["rolled_back_by"])
        if deployment.get("rolled_back_by") else None,
        "rollback_of": await dq.get_deployment(db, deployment["rollback_of"])
        if deployment.get("rollback_of") else None,
        "reason": facts.failure_reason(deployment, events),
        "commits": await facts.shipped_commits(db, deployment, events),
    })
