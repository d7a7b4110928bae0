"""Native API for DORA: incidents, commits, deployments, metrics, and admin corrections."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.errors import BadRequest
from deploytrack.metrics import compute as metrics
from deploytrack.metrics import fold as deployments
from deploytrack.metrics import incidents
from deploytrack.model import STATUSES, whole_number
from deploytrack.settings import canonical_environment
from deploytrack.storage import commits, corrections
from deploytrack.storage.event_queries import decode_cursor
from deploytrack.timeutil import now_us, parse_timestamp, to_iso
from deploytrack.views.api import api, page_limit
from deploytrack.web.http import JSONResponse, idempotency_key, parse_json, read_body
from deploytrack.web.sessions import require

MAX_PAGE = 500
MAX_SERIES_DAYS = 400


def _text(request: Request, name: str) -> str | None:
    value = (request.query_params.get(name) or "").strip()
    if len(value) > 512:
        raise BadRequest(f"query parameter '{name}' is too long", name)
    return value or None


def _limit(request: Request) -> int:
    limit = page_limit(request)
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"query parameter 'limit' must be between 1 and {MAX_PAGE}", "limit")
    return limit


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
    data = incidents.parse(await _json_body(request), app.limits, app.settings.environment_aliases, partial=False)
    row = await app.db.write(incidents.create_once, data, app.settings, now_us(), token.id if token else None, key)
    return JSONResponse(incidents.incident_json(row), status_code=201)


@api
async def list_incidents(request: Request) -> Response:
    """Incidents newest first, by product, environment, status (open/resolved)."""
    await require(request, "read")
    app = request.app.state.deploytrack
    where, params = [], []
    for name in ("product", "environment", "status"):
        value = _text(request, name)
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
    limit = _limit(request)
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
    """Deployment records newest first, with duration and rollback/hotfix label."""
    await require(request, "read")
    app = request.app.state.deploytrack
    where: list[str] = []
    params: dict[str, Any] = {"limit": _limit(request) + 1}
    for name in ("product", "environment", "version", "status", "label"):
        value = _text(request, name)
        if value is None:
            continue
        if name == "status" and value not in STATUSES:
            raise BadRequest(f"query parameter 'status' must be one of {', '.join(STATUSES)}", "status")
        if name == "label":
            if value not in ("rollback", "hotfix"):
                raise BadRequest("query parameter 'label' must be 'rollback' or 'hotfix'", "label")
            where.append("(d.label = :label OR (:label = 'rollback' AND " + deployments.rollback_condition() + "))")
        else:
            where.append(f"d.{name} = :{name}")
        if name == "environment":
            value = canonical_environment(value, app.settings.environment_aliases)
        params[name] = value
    for name, op in (("since", ">="), ("until", "<")):
        value = _text(request, name)
        if value is not None:
            where.append(f"d.first_at {op} :{name}_t")
            params[f"{name}_t"] = parse_timestamp(value, name)
    after = decode_cursor(_text(request, "cursor"))
    if after is not None:  # the leading range lets the index seek to the cursor (see queries.newest_first)
        where.append("d.first_at <= :c_at AND (d.first_at < :c_at OR d.id < :c_id)")
        params.update(c_at=after[0], c_id=after[1])
    rows = await app.db.fetchall(deployments.list_sql(where), params)
    limit = params["limit"] - 1
    more = len(rows) > limit
    return JSONResponse({
        "deployments": [deployments.deployment_json(r) for r in rows[:limit]],
        "next_cursor": f"{rows[limit - 1]['first_at']}.{rows[limit - 1]['id']}" if more else None})


# -- metrics ----------------------------------------------------------------------------------


def window_param(raw: str | None) -> int:
    """7, 30 or 90 ('30' and '30d' both accepted); default 30."""
    if raw is None or not raw.strip():
        return 30
    text = raw.strip().lower().removesuffix("d")
    window = whole_number(text)
    if window not in metrics.WINDOWS:
        raise BadRequest("query parameter 'window' must be 7, 30 or 90 (days)", "window")
    return window


def _series(conn: Any, scope: metrics.Scope, window: int, days: int, today: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT day, data FROM metric_snapshots WHERE scope = ? AND product = ? AND environment = ? "
        "AND window_days = ? AND day >= ? ORDER BY day",
        (scope.kind, scope.product, scope.environment, window, today - days * metrics.DAY)).fetchall()
    return [{"day": to_iso(r["day"]), **orjson.loads(r["data"])} for r in rows]


def metrics_report(conn: Any, settings: Any, scope: metrics.Scope, window: int, days: int, now: int) -> dict[str, Any]:
    """What GET /api/v1/metrics and `metrics show --json` return."""
    today = metrics.day_start_us(now)
    return {
        "scope": scope.as_dict(), "window_days": window, "bands": metrics.BANDS_SOURCE,
        "production_environments": sorted(settings.production_set), "as_of": to_iso(now),
        "latest": metrics.live(conn, settings, scope, window, now),
        "series": _series(conn, scope, window, days, today),
    }


@api
async def get_metrics(request: Request) -> Response:
    """Live numbers for the window ending today, and the daily snapshot series for charts."""
    await require(request, "read")
    app = request.app.state.deploytrack
    window = window_param(request.query_params.get("window"))
    env = _text(request, "environment")
    scope = metrics.Scope.of(_text(request, "product"),
                             canonical_environment(env, app.settings.environment_aliases) if env else None)
    days = whole_number(request.query_params.get("days", "90"))
    if days is None or not 1 <= days <= MAX_SERIES_DAYS:
        raise BadRequest(f"query parameter 'days' must be 1 to {MAX_SERIES_DAYS}", "days")
    report = await app.db.read(metrics_report, app.settings, scope, window, days, now_us())
    return JSONResponse(report)


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
        Route("/api/v1/products/{name}/events", delete_product_events, methods=["DELETE"]),
    ]
