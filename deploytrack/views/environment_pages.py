"""What runs where (product × environment) and a product's timeline of builds and deployments."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import BadRequest, NotFound
from deploytrack.model import whole_number
from deploytrack.rules.status import freezes
from deploytrack.storage import deployment_queries as dq
from deploytrack.timeutil import now_us, to_iso
from deploytrack.views import charts
from deploytrack.views.html import page, query_text, render
from deploytrack.web.sessions import require

DAY_US = 86_400_000_000
TIMELINE_DAYS = (7, 30, 90)


@page
async def environments(request: Request) -> Response:
    """GET /environments: for each product and environment, the version running now."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    grid = await dq.matrix(db)
    return render(request, "environments.html", {"token": token, "m": grid,
                                                 "frozen": await freezes(db, grid.products, grid.environments)})


def _days(request: Request) -> int:
    days = whole_number(query_text(request, "days") or "30")
    if days is None or days not in TIMELINE_DAYS:
        raise BadRequest(f"query parameter 'days' must be one of {', '.join(map(str, TIMELINE_DAYS))}", "days")
    return days


def _lanes(builds: list[dict[str, Any]], deployments: list[dict[str, Any]],
           environments: list[str]) -> list[tuple[str, list[charts.TimelineItem]]]:
    lanes: list[tuple[str, list[charts.TimelineItem]]] = [("builds", [
        (b["occurred_at"], b["status"], f"build {b['version'] or ''} {b['status']} {to_iso(b['occurred_at'])}",
         f"/events/{b['id']}") for b in builds])]
    for env in environments:
        lanes.append((env, [
            (d["finished_at"] or d["first_at"], d["status"],
             f"{env}: {d['version'] or ''} {d['status']} {to_iso(d['finished_at'] or d['first_at'])}",
             f"/deployments/{d['id']}") for d in deployments if d["environment"] == env]))
    return lanes


@page
async def product(request: Request) -> Response:
    """GET /products/{name}: where each version runs, and a timeline of builds and deployments."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    name = request.path_params["name"]
    days = _days(request)
    if len(name) > 512 or not await dq.product_exists(db, name):
        raise NotFound("There is no product with that name.")
    end = now_us()
    start = end - days * DAY_US
    await request.app.state.deploytrack.deriver.ensure_current()
    grid = await dq.matrix(db, name)
    deployments = await dq.product_deployments(db, name, start)
    builds = await dq.product_builds(db, name, start)
    environments = list(grid.environments)
    environments += sorted({d["environment"] for d in deployments} - set(environments))
    chart = charts.timeline(_lanes(builds, deployments, environments), start, end,
                            f"Builds and deployments over the last {days} days")
    return render(request, "product.html", {
        "token": token, "name": name, "m": grid, "days": days, "day_choices": TIMELINE_DAYS, "chart": chart,
        "frozen": await freezes(db, [name], grid.environments),
        "deployments": deployments, "builds": builds, "environments": environments})
