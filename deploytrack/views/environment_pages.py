"""What runs where (product × environment) and a product's timeline of builds and deployments."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import BadRequest, NotFound
from deploytrack.model import whole_number
from deploytrack.rules.status import freezes
from deploytrack.storage import deployment_queries as dq
from deploytrack.timeutil import DAY, now_us
from deploytrack.views import charts, dashboard, timeline
from deploytrack.views.dora_pages import formatter
from deploytrack.views.html import page, page_url, query_text, render
from deploytrack.web.sessions import require

TIMELINE_DAYS = (7, 30, 90)
TIMELINE_PER_LANE = 200  # deployments drawn in one environment's lane: the newest of the span
TIMELINE_LANES = 8  # environments with a lane of their own (production first)
MATRIX_COLUMNS = 8  # more environments on one page than this: cards, not a table


@page
async def environments(request: Request) -> Response:
    """GET /environments: for each product (paged) and each environment it was deployed to, the version running."""
    token = await require(request, "read")
    after = query_text(request, "after")
    await request.app.state.deploytrack.deriver.ensure_current()
    grid = await dq.matrix(request.app.state.deploytrack.db, after=after, limit=dq.PRODUCTS_PER_PAGE)
    return render(request, "environments.html", {
        "token": token, "m": grid, "columns": MATRIX_COLUMNS, "paged": after is not None,
        "per_product": dq.ENVIRONMENTS_PER_PRODUCT,
        "next_url": page_url("/environments", {"after": grid.next_after}) if grid.next_after else None,
        "frozen": await freezes(request.app.state.deploytrack.db, grid.products, grid.environments)})


def _days(request: Request) -> int:
    days = whole_number(query_text(request, "days") or "30")
    if days is None or days not in TIMELINE_DAYS:
        raise BadRequest(f"query parameter 'days' must be one of {', '.join(map(str, TIMELINE_DAYS))}", "days")
    return days


@page
async def product(request: Request) -> Response:
    """GET /products/{name}: where each version runs, and a timeline of builds and deployments."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    name = request.path_params["name"]
    days = _days(request)
    if not await dq.product_known(db, name):
        raise NotFound("There is no product with that name.")
    end = now_us()
    start = end - days * DAY
    await request.app.state.deploytrack.deriver.ensure_current()
    grid = await dq.matrix(db, name)
    environments = grid.environments_of(name)[:TIMELINE_LANES]  # production first: a lane each for the first few
    hidden = await dq.environment_count(db, name) - len(environments)
    # Each lane reads its own newest deployments: a busy environment never crowds out a quiet one.
    per_lane = [await dq.deployments_before(db, name, [env], end, start, TIMELINE_PER_LANE) for env in environments]
    capped = [env for env, rows in zip(environments, per_lane, strict=True) if len(rows) == TIMELINE_PER_LANE]
    deployments = sorted((d for rows in per_lane for d in rows), key=lambda d: (d["first_at"], d["id"]), reverse=True)
    builds = timeline.final_builds(await dq.product_builds(db, name, start))
    incidents = await dq.product_incidents(db, name, start)
    lanes = timeline.lanes(name, builds, deployments, incidents, environments)
    if days >= timeline.AGGREGATE_FROM_DAYS:
        lanes = timeline.per_day(name, lanes)
    scores = await db.read(dashboard.product_scores, request.app.state.deploytrack.settings, [name], end)
    title = (f"Builds, deployments and incidents of {name} over the last {days} days"
             + (", one mark per day" if days >= timeline.AGGREGATE_FROM_DAYS else ""))
    return render(request, "product.html", {
        "token": token, "name": name, "m": grid, "days": days, "day_choices": TIMELINE_DAYS,
        "chart": charts.timeline(lanes, start, end, title),
        "phone_chart": charts.timeline(lanes, start, end, title, 360),
        "deployments": deployments, "builds": builds, "environments": environments, "incidents": incidents,
        "hidden_environments": max(hidden, 0), "capped": capped, "per_lane": TIMELINE_PER_LANE,
        "frozen": await freezes(db, [name], grid.environments),
        "scores": scores[name], "metrics": dashboard.METRICS, "window": dashboard.GLANCE_WINDOW,
        "formats": {m.key: formatter(m.unit) for m in dashboard.METRICS}})
