"""Native API: products and environments, and what version runs where (the /environments page's data)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.errors import BadRequest, NotFound
from deploytrack.model import stable_id
from deploytrack.settings import canonical_environment
from deploytrack.storage import deployment_queries as dq
from deploytrack.timeutil import to_iso
from deploytrack.views.api import api, page_limit
from deploytrack.views.html import query_text
from deploytrack.web.http import JSONResponse
from deploytrack.web.sessions import require

MAX_ENVIRONMENTS = 500


def _where(product: str, environment: str, cell: dq.Cell) -> dict[str, Any]:
    """One environment of a product: the version running there, its deployment, and a newer attempt if any."""
    current = cell.current
    version = current["version"] if current is not None else None
    return {"environment": environment, "environment_id": stable_id("environment", environment),
            "version": version, "version_id": stable_id("version", product, version) if version else None,
            "current": dq.deployment_json(current) if current is not None else None,
            "pending_or_failed": dq.deployment_json(cell.pending_or_failed) if cell.pending_or_failed else None}


def _product(grid: dq.Matrix, name: str) -> dict[str, Any]:
    cells = [(e, grid.cell(name, e)) for e in grid.environments_of(name)]
    return {"name": name, "id": stable_id("product", name),
            "environments": [_where(name, e, cell) for e, cell in cells if cell is not None],
            "more_environments": bool((grid.more_environments or {}).get(name))}


@api
async def list_products(request: Request) -> Response:
    """Products that have deployments, by name, each with what version runs in each of its environments."""
    await require(request, "read")
    app = request.app.state.deploytrack
    after = query_text(request, "cursor")  # a product's name
    limit = page_limit(request, dq.PRODUCTS_PER_PAGE, dq.PRODUCTS_PER_PAGE)
    await app.deriver.ensure_current()
    grid = await dq.matrix(app.db, after=after, limit=limit)
    return JSONResponse({"products": [_product(grid, p) for p in grid.products], "next_cursor": grid.next_after})


@api
async def get_product(request: Request) -> Response:
    """One product and what version runs in each of its environments (the first ENVIRONMENTS_PER_PRODUCT
    by name, or those `environment` names: a repeatable parameter)."""
    await require(request, "read")
    app = request.app.state.deploytrack
    name = request.path_params["name"]
    named = _environments(request)
    if not await dq.product_exists(app.db, name):
        raise NotFound("no product with that name", "name")
    await app.deriver.ensure_current()
    return JSONResponse(_product(await dq.matrix(app.db, name, environments=named), name))


def _environments(request: Request) -> list[str] | None:
    """The `environment` parameters (aliases folded, as ingestion folds them), or None when there are none."""
    values = request.query_params.getlist("environment")
    if not values:
        return None
    limit = request.app.state.deploytrack.settings.max_field_chars
    if len(values) > dq.ENVIRONMENTS_PER_PRODUCT or any(not v.strip() or len(v) > limit for v in values):
        raise BadRequest(f"query parameter 'environment' is 1 to {dq.ENVIRONMENTS_PER_PRODUCT} environment names",
                         "environment")
    aliases = request.app.state.deploytrack.settings.environment_aliases
    return sorted({canonical_environment(v.strip(), aliases) for v in values})


@api
async def list_environments(request: Request) -> Response:
    """Environments by name, with when each was first seen."""
    await require(request, "read")
    app = request.app.state.deploytrack
    after = query_text(request, "cursor")  # an environment's name
    limit = page_limit(request, 100, MAX_ENVIRONMENTS)
    rows = await dq.environments(app.db, after, limit + 1)
    return JSONResponse({
        "environments": [{"name": name, "id": stable_id("environment", name), "first_seen_at": to_iso(at)}
                         for name, at in rows[:limit]],
        "next_cursor": rows[limit - 1][0] if len(rows) > limit else None})


def routes() -> list[Route]:
    return [
        Route("/api/v1/products", list_products, methods=["GET"]),
        Route("/api/v1/products/{name:path}", get_product, methods=["GET"]),
        Route("/api/v1/environments", list_environments, methods=["GET"]),
    ]
