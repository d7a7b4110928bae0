"""The deployment list (lifecycle, duration, labels; failed ones stand out) and one deployment."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import NotFound
from deploytrack.metrics import fold
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
from deploytrack.views.metrics_api import run_read
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
    rows, next_cursor = await dq.list_deployments(app.db, flt, PAGE_SIZE, cursor)
    return render(request, "deployments.html", {
        "token": token, "deployments": rows, "filter": flt, "paged": bool(cursor), "statuses": STATUSES,
        "labels": dq.LABELS, "filtered": any(flt.as_query().values()),
        "next_url": page_url("/deployments", flt.as_query(), next_cursor) if next_cursor else None,
        "first_url": page_url("/deployments", flt.as_query()),
        "products": await queries.names(app.db, "products", MENU_LIMIT),
        "environments": await queries.names(app.db, "environments", MENU_LIMIT), "menu_limit": MENU_LIMIT,
    })


def _labelled(path: Any, deployment_id: int) -> dict[str, Any] | None:
    """The deployment as the API lists it: with its computed rollback label and the rollback that undid it."""
    rows = run_read(path, lambda conn: conn.execute(fold.list_sql(["d.id = :id"]), {"id": deployment_id, "limit": 1})
                    .fetchall())
    return fold.deployment_json(rows[0]) if rows else None


@page
async def deployment_detail(request: Request) -> Response:
    """GET /deployments/{id}: why it is what it is: rollbacks, failure reason, incidents, commits, events."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    deployment_id = whole_number(request.path_params["deployment_id"])
    deployment = await dq.get_deployment(db, deployment_id) if deployment_id is not None else None
    if deployment is None:
        raise NotFound("There is no deployment with that id.")
    labelled = await asyncio.to_thread(_labelled, db.path, deployment["id"])
    events = await dq.deployment_events(db, deployment["id"])
    rolled_back_by = labelled["rolled_back_by"] if labelled else None
    is_rollback = bool(labelled and labelled["label"] == "rollback")
    return render(request, "deployment.html", {
        "token": token, "d": deployment, "events": events, "label": labelled["label"] if labelled else None,
        "incidents": await dq.linked_incidents(db, deployment["id"]),
        "rolled_back_by": await dq.get_deployment(db, rolled_back_by) if rolled_back_by else None,
        "rollback_of": await dq.previous_completed(db, deployment) if is_rollback else None,
        "reason": facts.failure_reason(deployment, events),
        "commits": await facts.shipped_commits(db, deployment, events),
    })
