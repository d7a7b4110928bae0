"""What a DORA number counts: the deployments or incidents behind one metric, for a scope and window.

GET /dora/{metric}?product=&environment=&window=30d lists, newest first and paged:
- deployment frequency and lead time: the completed deployments finished in the window (with the
  lead time of each commit they shipped);
- change failure rate: the same deployments, each marked when it led to a failure (an incident
  linked to it, or a rollback of it), and failed deployments too when the operator counts them;
- time to restore: the incidents resolved in the window.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import NotFound
from deploytrack.metrics import compute as metrics
from deploytrack.settings import canonical_environment
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage import incident_queries as iq
from deploytrack.timeutil import day_start_us, now_us
from deploytrack.views import dashboard
from deploytrack.views import deployment_facts as facts
from deploytrack.views.html import PAGE_SIZE, page, page_url, query_text, render
from deploytrack.web.sessions import require

COUNTS = {
    "deployment_frequency": "Completed deployments that finished in the window; the band counts the days with at "
                            "least one.",
    "lead_time": "Completed deployments that finished in the window, and the lead time of each commit they shipped: "
                 "from the commit to the deployment. The metric is the median over each change's first deployment.",
    "change_failure_rate": "Completed deployments that finished in the window; those marked led to a failure "
                           "(an incident linked to them, or a rollback of them).",
    "time_to_restore": "Incidents resolved in the window, and how long each was open. The metric is the median.",
}


async def _deployment_rows(request: Request, scope: metrics.Scope, environments: list[str], since: int,
                           cursor: str | None, metric: str) -> tuple[list[dict[str, Any]], str | None]:
    app = request.app.state.deploytrack
    statuses = ("completed", "failed") if metric == "change_failure_rate" and app.settings.count_failed_deployments \
        else ("completed",)
    rows, next_cursor = await dq.counted_deployments(app.db, scope.product or None, environments, statuses, since,
                                                     PAGE_SIZE, cursor)
    for row in rows:
        row["incidents"] = await dq.linked_incidents(app.db, row["id"], 5)
        row["failure"] = bool(row["incidents"] or row.get("rolled_back_by") or row["status"] == "failed")
        if metric == "lead_time":
            events = await dq.deployment_events(app.db, row["id"], 50)
            row["commits"] = await facts.shipped_commits(app.db, row, events)
    return rows, next_cursor


@page
async def counted(request: Request) -> Response:
    """GET /dora/{metric}: the records one DORA number rests on, for a product/environment and window."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    info = {m.key: m for m in dashboard.METRICS}.get(request.path_params["metric"])
    if info is None:
        raise NotFound("There is no such metric; they are " + ", ".join(m.key for m in dashboard.METRICS) + ".")
    product = query_text(request, "product")
    env = query_text(request, "environment")
    environment = canonical_environment(env, app.settings.environment_aliases) if env else None
    window = dashboard.parse_window(request.query_params.get("window"))
    scope = metrics.Scope.of(product, environment)
    environments = [environment] if environment else sorted(app.settings.production_set)
    production = bool(set(environments) & app.settings.production_set)
    since = day_start_us(now_us()) - (window - 1) * metrics.DAY
    cursor = query_text(request, "cursor")
    await app.deriver.ensure_current()
    if info.key == "time_to_restore":
        rows, next_cursor = await iq.resolved_since(app.db, scope.product or None, environments, production, since,
                                                    PAGE_SIZE, cursor)
    else:
        rows, next_cursor = await _deployment_rows(request, scope, environments, since, cursor, info.key)
    params = {"product": product, "environment": environment, "window": f"{window}d"}
    return render(request, "dora_counted.html", {
        "token": token, "metric": info, "rows": rows, "counts": COUNTS[info.key], "product": product,
        "environment": environment, "environments": environments, "window": window, "since": since,
        "paged": bool(cursor), "first_url": page_url(f"/dora/{info.key}", params),
        "next_url": page_url(f"/dora/{info.key}", params, next_cursor) if next_cursor else None,
        "dashboard_url": page_url("/dora", params),
    })
