"""Native API for DORA: incidents, commits, deployments, metrics, and admin corrections."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.errors import BadRequest
from deploytrack.metrics import compute as metrics
from deploytrack.metrics import incidents, report
from deploytrack.model import STATUSES, fingerprint, whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage import commits, corrections
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage.event_queries import decode_cursor
from deploytrack.timeutil import now_us, parse_timestamp
from deploytrack.views.api import api, page_limit
from deploytrack.views.html import query_text
from deploytrack.web.http import JSONResponse, idempotency_key, parse_json, read_body
from deploytrack.web.sessions import require


async def _json_body(request: Request) -> Any:
    app = request.app.state.deploytrack
    return parse_json(await read_body(request, app.settings.max_body_bytes))


def _actor(token: Any) -> tuple[int | None, str | None]:
    return (token.id, token.name) if token is not None else (None, None)


def _kick(request: Request) -> None:
    for job in request.app.state.deploytrack.background:
        if hasattr(job, "kick"):
            job.kick()


# -- incidents --------------------------------------------------------------------------------


@api
async def create_incident(request: Request) -> Response:
    """Open an incident (optionally already resolved); 201 with it and its link."""
    token = await require(request, "ingest")
    app = request.app.state.deploytrack
    key = idempotency_key(request)
    raw = await read_body(request, app.settings.max_body_bytes)
    data = incidents.parse(parse_json(raw), app.limits, app.settings.environment_aliases, partial=False)
    row = await app.db.write(incidents.create_once, data, app.settings, now_us(), token.id if token else None, key,
                             fingerprint(raw) if key else None)
    return JSONResponse(incidents.incident_json(row), status_code=201)


@api
async def list_incidents(request: Request) -> Response:
    """Incidents newest first, by product, environment, status (open/resolved)."""
    await require(request, "read")
    app = request.app.state.deploytrack
    where, params = [], []
    for name in ("product", "environment", "status"):
        value = query_text(request, name)
        if value is not None:
            if name == "status" and value not in ("open", "resolved"):
                raise BadRequest("query parameter 'status' must be 'open' or 'resolved'", "status")
            if name == "environment":
                value = canonical_environment(value, app.settings.environment_aliases)
            where.append(f"{name} = ?")
            params.append(value)
    before = request.query_params.get("before")
    if before is not None:
        before_id = whole_number(before)
        if before_id is None:
            raise BadRequest("query parameter 'before' must be an incident id", "before")
        where.append("id < ?")
        params.append(before_id)
    limit = page_limit(request)
    await app.deriver.ensure_current()
    sql = "SELECT * FROM incidents" + (" WHERE " + " AND ".join(where) if where else "")
    rows = await app.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", [*params, limit + 1])
    more = len(rows) > limit
    return JSONResponse({"incidents": [incidents.incident_json(r) for r in rows[:limit]],
                         "next_before": rows[limit - 1]["id"] if more else None})


def _incident_id(request: Request) -> int:
    incident_id = whole_number(request.path_params["incident_id"])
    if incident_id is None:
        raise BadRequest("incident id must be a whole number", "id")
    return incident_id


@api
async def get_incident(request: Request) -> Response:
    await require(request, "read")
    app = request.app.state.deploytrack
    await app.deriver.ensure_current()
    row = await app.db.read(incidents.get, _incident_id(request))
    return JSONResponse(incidents.incident_json(row))


@api
async def update_incident(request: Request) -> Response:
    """Change an incident; `{"status": "resolved"}` resolves it now, or give `resolved_at`."""
    await require(request, "ingest")
    app = request.app.state.deploytrack
    incident_id = _incident_id(request)
    data = incidents.parse(await _json_body(request), app.limits, app.settings.environment_aliases, partial=True)
    row = await app.db.write(incidents.update, incident_id, data, app.settings, now_us())
    return JSONResponse(incidents.incident_json(row))


# -- commits ----------------------------------------------------------------------------------


@api
async def post_commits(request: Request) -> Response:
    """Record a batch of commits; 201 with how many were stored."""
    await require(request, "ingest")
    app = request.app.state.deploytrack
    rows = commits.parse_batch(await _json_body(request), app.limits, app.settings.max_batch_events)
    count = await app.db.write(commits.store, rows, now_us())
    return JSONResponse({"stored": count}, status_code=201)


# -- deployments ------------------------------------------------------------------------------


@api
async def list_deployments(request: Request) -> Response:
    """Deployment records newest first, with duration, label and rollback links."""
    await require(request, "read")
    app = request.app.state.deploytrack
    query: dict[str, Any] = {name: query_text(request, name) for name in ("product", "environment", "version", "status",
                                                                       "label")}
    if query["status"] is not None and query["status"] not in STATUSES:
        raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}", "status")
    if query["label"] is not None and query["label"] not in dq.LABELS:
        raise BadRequest("query parameter 'label' must be 'rollback' or 'hotfix'", "label")
    if query["environment"] is not None:
        query["environment"] = canonical_environment(query["environment"], app.settings.environment_aliases)
    for name in ("since", "until"):
        value = query_text(request, name)
        query[name] = parse_timestamp(value, name) if value is not None else None
    decode_cursor(query_text(request, "cursor"))  # a 400 naming `cursor` for one this server did not issue
    await app.deriver.ensure_current()
    rows, next_cursor = await dq.list_deployments(app.db, dq.DeploymentFilter(**query), page_limit(request),
                                                  query_text(request, "cursor"))
    return JSONResponse({"deployments": [dq.deployment_json(r) for r in rows], "next_cursor": next_cursor})


# -- metrics ----------------------------------------------------------------------------------


@api
async def get_metrics(request: Request) -> Response:
    """Live numbers for the window ending today, and the daily snapshot series for charts."""
    await require(request, "read")
    app = request.app.state.deploytrack
    window = report.window_param(request.query_params.get("window"))
    env = query_text(request, "environment")
    scope = metrics.Scope.of(query_text(request, "product"),
                             canonical_environment(env, app.settings.environment_aliases) if env else None)
    days = whole_number(request.query_params.get("days", "90"))
    if days is None or not 1 <= days <= metrics.SNAPSHOT_DAYS:
        raise BadRequest(f"query parameter 'days' must be 1 to {metrics.SNAPSHOT_DAYS}", "days")
    await app.deriver.ensure_current()
    body = await app.db.read(report.report, app.settings, scope, window, days, now_us())
    return JSONResponse(body)


# -- corrections ------------------------------------------------------------------------------


@api
async def delete_event(request: Request) -> Response:
    """Admin: delete one event (audit-logged); its days are recomputed."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    result = await app.db.write(corrections.delete_event, request.path_params["event_id"], *_actor(token), now_us())
    _kick(request)
    return JSONResponse(result)


@api
async def delete_product_events(request: Request) -> Response:
    """Admin: delete all events of a product (audit-logged); its days are recomputed."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    result = await app.db.write(corrections.delete_product_events, request.path_params["name"], *_actor(token),
                                now_us())
    _kick(request)
    return JSONResponse(result)


def routes() -> list[Route]:
    return [
        Route("/api/v1/incidents", create_incident, methods=["POST"]),
        Route("/api/v1/incidents", list_incidents, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}", get_incident, methods=["GET"]),
        Route("/api/v1/incidents/{incident_id}", update_incident, methods=["PATCH"]),
        Route("/api/v1/commits", post_commits, methods=["POST"]),
        Route("/api/v1/deployments", list_deployments, methods=["GET"]),
        Route("/api/v1/metrics", get_metrics, methods=["GET"]),
        Route("/api/v1/events/{event_id}", delete_event, methods=["DELETE"]),
        Route("/api/v1/products/{name:path}/events", delete_product_events, methods=["DELETE"]),
    ]
